/**
 * Text ⇄ token ids for a Hugging Face model folder: tokenizer.json through
 * @huggingface/tokenizers, special tokens and the chat template from tokenizer_config.json
 * (or chat_template.jinja, where newer transformers saves it).
 */
import fs from "node:fs";
import path from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { TachyonError } from "../errors.js";
import { ChatTemplate, type ChatMessage } from "./chat-template.js";

type Json = Record<string, unknown>;

function readJson(file: string): Json {
  try {
    const v: unknown = JSON.parse(fs.readFileSync(file, "utf8"));
    if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Json;
  } catch (e) {
    throw new TachyonError(`${file}: cannot be read as JSON (${(e as Error).message})`, "tokenizer");
  }
}

/** tokenizer_config.json writes special tokens as strings or as {"content": ...} objects. */
function tokenText(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as Json).content === "string")
    return (v as Json).content as string;
  return null;
}

export class Tokenizer {
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  readonly bosTokenId: number | null;
  readonly eosTokenId: number | null;
  readonly chatTemplate: ChatTemplate | null;
  readonly vocabSize: number;

  private constructor(
    private readonly hf: HfTokenizer,
    config: Json,
    chatTemplateSource: string | null,
  ) {
    this.bosToken = tokenText(config.bos_token);
    this.eosToken = tokenText(config.eos_token);
    this.bosTokenId = this.bosToken === null ? null : (hf.token_to_id(this.bosToken) ?? null);
    this.eosTokenId = this.eosToken === null ? null : (hf.token_to_id(this.eosToken) ?? null);
    this.vocabSize = hf.get_vocab(true).size;
    this.chatTemplate =
      chatTemplateSource === null
        ? null
        : new ChatTemplate(chatTemplateSource, {
            bos_token: this.bosToken ?? "",
            eos_token: this.eosToken ?? "",
          });
  }

  static load(dir: string): Tokenizer {
    const tokFile = path.join(dir, "tokenizer.json");
    if (!fs.existsSync(tokFile)) {
      throw new TachyonError(
        `no tokenizer.json in ${dir}: tachyon needs the fast-tokenizer file; save it with ` +
          `AutoTokenizer.from_pretrained(...).save_pretrained("${dir}")`,
        "tokenizer",
      );
    }
    const cfgFile = path.join(dir, "tokenizer_config.json");
    const config = fs.existsSync(cfgFile) ? readJson(cfgFile) : {};
    const jinjaFile = path.join(dir, "chat_template.jinja");
    const template = fs.existsSync(jinjaFile)
      ? fs.readFileSync(jinjaFile, "utf8")
      : typeof config.chat_template === "string"
        ? config.chat_template
        : null;
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(readJson(tokFile), config);
    } catch (e) {
      throw new TachyonError(
        `${tokFile}: unsupported or corrupt tokenizer (${(e as Error).message})`,
        "tokenizer",
      );
    }
    return new Tokenizer(hf, config, template);
  }

  /** Token ids of `text`; with addSpecialTokens the tokenizer's own template (e.g. a BOS) is applied. */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.hf.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[], skipSpecialTokens = false): string {
    if (ids.length === 0) return ""; // the library rejects an empty list
    return this.hf.decode(ids as number[], { skip_special_tokens: skipSpecialTokens });
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  /** The chat rendered as the model expects it, ready to encode without extra special tokens. */
  applyChatTemplate(messages: ChatMessage[], addGenerationPrompt = true): string {
    if (!this.chatTemplate) {
      throw new TachyonError(
        "this model has no chat template (tokenizer_config.json has no chat_template); use a plain prompt",
        "tokenizer",
      );
    }
    return this.chatTemplate.render(messages, addGenerationPrompt);
  }

  /** Chat → token ids, as transformers' apply_chat_template(tokenize=True) gives them. */
  encodeChat(messages: ChatMessage[], addGenerationPrompt = true): number[] {
    return this.encode(this.applyChatTemplate(messages, addGenerationPrompt), false);
  }
}
