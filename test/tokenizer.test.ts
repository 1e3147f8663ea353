/** Tokenizer, chat template and streaming decode against transformers' own outputs. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { StreamDecoder } from "../src/tokenizer/stream-decoder.js";
import { TachyonError } from "../src/errors.js";
import { fixturesDir } from "./paths.js";

interface EncodeCase {
  text: string;
  ids: number[];
  ids_no_special: number[];
  decoded: string;
  decoded_skip_special: string;
}
interface ChatCase {
  messages: { role: string; content: string }[];
  add_generation_prompt?: boolean;
  text?: string;
  ids?: number[];
  error?: boolean;
}
interface Cases {
  tokenizers: Record<string, { encode: EncodeCase[]; chat: ChatCase[] }>;
}

const cases = JSON.parse(
  fs.readFileSync(path.join(fixturesDir, "tokenizers", "cases.json"), "utf8"),
) as Cases;

for (const [name, { encode, chat }] of Object.entries(cases.tokenizers)) {
  const tok = Tokenizer.load(path.join(fixturesDir, "tokenizers", name));

  test(`${name}: encode/decode match transformers on ${encode.length} texts`, () => {
    for (const c of encode) {
      const label = JSON.stringify(c.text);
      assert.deepEqual(tok.encode(c.text), c.ids, `ids of ${label}`);
      assert.deepEqual(tok.encode(c.text, false), c.ids_no_special, `ids (no special) of ${label}`);
      assert.equal(tok.decode(c.ids), c.decoded, `decode of ${label}`);
      assert.equal(tok.decode(c.ids, true), c.decoded_skip_special, `decode (skip special) of ${label}`);
    }
  });

  test(`${name}: chat template output identical to apply_chat_template`, () => {
    for (const c of chat) {
      if (c.error) {
        assert.throws(() => tok.applyChatTemplate(c.messages, c.add_generation_prompt ?? true), TachyonError);
        continue;
      }
      assert.equal(tok.applyChatTemplate(c.messages, c.add_generation_prompt ?? true), c.text);
      assert.deepEqual(tok.encodeChat(c.messages, c.add_generation_prompt ?? true), c.ids);
    }
  });

  test(`${name}: streaming decode equals whole decode and never splits a character`, () => {
    let compared = 0;
    for (const c of encode) {
      const ids = c.ids_no_special;
      if (ids.length === 0) continue;
      // Stream the second half with the first half as context, as generation after a prompt does.
      const cut = Math.floor(ids.length / 2);
      const stream = new StreamDecoder(tok, ids.slice(0, cut), false);
      let streamed = "";
      for (const id of ids.slice(cut)) {
        const piece = stream.push(id);
        assert.ok(
          !piece.includes("\uFFFD") || c.text.includes("\uFFFD"),
          `split character in ${JSON.stringify(c.text)}`,
        );
        streamed += piece;
      }
      streamed += stream.flush();
      const whole = tok.decode(ids);
      const head = tok.decode(ids.slice(0, cut));
      if (whole.startsWith(head) && !head.includes("\uFFFD")) {
        assert.equal(streamed, whole.slice(head.length), `stream of ${JSON.stringify(c.text)}`);
        compared++;
      }
    }
    assert.ok(compared >= encode.length / 2, `only ${compared} of ${encode.length} texts compared`);
  });

  test(`${name}: a character spread over several tokens is streamed whole`, () => {
    const text = "x = '🦀 naïve 日本語 🧑‍🤝‍🧑'";
    const ids = tok.encode(text, false);
    const stream = new StreamDecoder(tok, [], false);
    const pieces = ids.map((id) => stream.push(id));
    pieces.push(stream.flush());
    assert.ok(ids.length > [...text].length / 2, "the text really is split into byte-level tokens");
    for (const p of pieces) assert.ok(!p.includes("\uFFFD"), `piece ${JSON.stringify(p)}`);
    assert.equal(pieces.join(""), tok.decode(ids));
  });
}
