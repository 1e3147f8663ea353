/** `tachyon run`: stream a completion or a chat reply, then a statistics line. */
import readline from "node:readline";
import { parseArgs } from "node:util";
import type { GeneratedToken, GenerateOptions, GenerationResult } from "../engine/generate.js";
import { loadModel, type LoadedModel } from "../engine/loaded-model.js";
import type { ChatMessage } from "../tokenizer/chat-template.js";
import {
  generateOptions,
  loadOptions,
  modelDir,
  modelFlags,
  samplingFlags,
  speculationFlags,
  speculationOptions,
} from "./options.js";

export async function runCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...modelFlags,
      ...samplingFlags,
      ...speculationFlags,
      prompt: { type: "string" },
      chat: { type: "boolean", default: false },
      system: { type: "string" },
      json: { type: "boolean", default: false },
    },
    strict: true,
  });
  const gen = generateOptions(values);
  const loadStart = performance.now();
  const model = await loadModel(modelDir(values), loadOptions(values));
  gen.speculation = await speculationOptions(values, model);
  const loadMs = performance.now() - loadStart;
  if (!values.json) {
    process.stderr.write(
      `${model.info.architecture} · ${model.deviceNote} · loaded in ${loadMs.toFixed(0)} ms\n`,
    );
  }

  if (values.chat && values.prompt === undefined) return interactiveChat(model, gen, values.system);

  const prompt = values.prompt ?? "def fibonacci(n):\n";
  const messages: ChatMessage[] = [];
  if (values.system !== undefined) messages.push({ role: "system", content: values.system });
  messages.push({ role: "user", content: prompt });
  const stream = values.chat ? model.chat(messages, gen) : model.generate(prompt, gen);

  if (values.json) {
    const tokens: GeneratedToken[] = [];
    const result = await drain(stream, (t) => tokens.push(t));
    process.stdout.write(JSON.stringify(jsonReport(model, prompt, tokens, result), null, 2) + "\n");
    return 0;
  }
  if (!values.chat) process.stdout.write(prompt);
  const tokens: GeneratedToken[] = [];
  const result = await drain(stream, (t) => {
    process.stdout.write(t.text);
    tokens.push(t);
  });
  process.stdout.write("\n");
  if (gen.logprobs !== undefined) printLogprobs(tokens);
  printStats(model, result);
  return 0;
}

async function interactiveChat(model: LoadedModel, gen: GenerateOptions, system?: string): Promise<number> {
  const messages: ChatMessage[] = system === undefined ? [] : [{ role: "system", content: system }];
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  // The line iterator buffers input, so lines piped in ahead of the replies are not lost.
  const lines = rl[Symbol.asyncIterator]();
  process.stderr.write("chat: type a message, an empty line or Ctrl-D to quit\n");
  try {
    for (;;) {
      process.stdout.write("> ");
      const next = await lines.next();
      if (next.done || next.value.trim() === "") break;
      messages.push({ role: "user", content: next.value });
      const result = await drain(model.chat(messages, gen), (t) => process.stdout.write(t.text));
      process.stdout.write("\n");
      printStats(model, result);
      messages.push({ role: "assistant", content: result.text });
    }
  } finally {
    rl.close();
  }
  return 0;
}

async function drain(
  stream: AsyncGenerator<GeneratedToken, GenerationResult>,
  onToken: (t: GeneratedToken) => void,
): Promise<GenerationResult> {
  for (;;) {
    const r = await stream.next();
    if (r.done) return r.value;
    onToken(r.value);
  }
}

function printStats(model: LoadedModel, r: GenerationResult): void {
  const s = r.speculation;
  process.stderr.write(
    `[prompt ${r.promptTokens} tokens · generated ${r.completionTokens} tokens · ` +
      `first token ${r.timeToFirstTokenMs.toFixed(1)} ms · ${r.decodeTokensPerSecond.toFixed(1)} tok/s · ` +
      (s
        ? `spec ${s.method}: ${s.meanAcceptedLength.toFixed(2)} tokens/step, ` +
          `${(100 * s.acceptanceRate).toFixed(0)}% of ${s.proposedTokens} proposed accepted · `
        : "") +
      `${r.finishReason} · ${model.device}]\n`,
  );
}

function printLogprobs(tokens: GeneratedToken[]): void {
  for (const t of tokens) {
    if (t.token === null || t.logprob === undefined) continue;
    const alts = (t.topLogprobs ?? [])
      .map((a) => `${JSON.stringify(a.text)} ${a.logprob.toFixed(3)}`)
      .join(", ");
    process.stdout.write(`${String(t.token).padStart(6)} ${t.logprob.toFixed(4).padStart(9)}  ${alts}\n`);
  }
}

function jsonReport(
  model: LoadedModel,
  prompt: string,
  tokens: GeneratedToken[],
  r: GenerationResult,
): object {
  return {
    model: model.dir,
    device: model.device,
    prompt,
    text: r.text,
    finish_reason: r.finishReason,
    tokens: tokens
      .filter((t) => t.token !== null)
      .map((t) => ({
        id: t.token,
        text: model.tokenizer.decode([t.token as number]),
        logprob: t.logprob,
        top_logprobs: t.topLogprobs?.map((a) => ({ id: a.token, text: a.text, logprob: a.logprob })),
      })),
    usage: { prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens },
    timings: {
      time_to_first_token_ms: r.timeToFirstTokenMs,
      total_ms: r.totalMs,
      decode_tokens_per_second: r.decodeTokensPerSecond,
    },
    speculation: r.speculation
      ? {
          method: r.speculation.method,
          steps: r.speculation.steps,
          proposed_tokens: r.speculation.proposedTokens,
          accepted_tokens: r.speculation.acceptedTokens,
          acceptance_rate: r.speculation.acceptanceRate,
          mean_accepted_length: r.speculation.meanAcceptedLength,
        }
      : null,
  };
}
