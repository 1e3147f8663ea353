// Speculative decoding on the embedded model: acceptance and speed of each proposer against plain
// greedy decoding, over fixed prompts from the held-out sample (the model card's MTP prompt set:
// 16 slices of 64 tokens). Every speculative run must reproduce plain decoding's tokens.
//
//   node scripts/spec-embedded.mjs [--device cpu|cuda] [--gen-tokens N] [--out FILE] [--date D]
//
// Configurations run interleaved per prompt, so a change of machine load hits them all alike.
import fs from "node:fs";
import os from "node:os";
import process from "node:process";
import { parseArgs } from "node:util";
import { loadModel } from "../dist/src/index.js";

const { values } = parseArgs({
  options: {
    device: { type: "string", default: "cpu" },
    "gen-tokens": { type: "string", default: "64" },
    prompts: { type: "string", default: "16" },
    out: { type: "string" },
    date: { type: "string", default: new Date().toISOString().slice(0, 10) },
  },
});
const genTokens = Number(values["gen-tokens"]);
const model = await loadModel("models/tachyon-code-tiny", { device: values.device });
const draft = await loadModel("models/tachyon-code-draft", { device: values.device });
const text = fs.readFileSync("test/fixtures/embedded/heldout-sample.txt", "utf8");
const ids = model.tokenizer.encode(text, false);
const prompts = Array.from({ length: Number(values.prompts) }, (_, i) => ids.slice(i * 64, i * 64 + 64));

const configs = [
  { name: "plain", speculation: undefined },
  { name: "ngram", speculation: { method: "ngram" } },
  { name: "ngram, k = 4 fixed", speculation: { method: "ngram", adaptive: false } },
  { name: "mtp", speculation: { method: "mtp" } },
  { name: "mtp, k = 2 fixed", speculation: { method: "mtp", adaptive: false } },
  { name: "draft", speculation: { method: "draft", draft } },
  { name: "draft, k = 4 fixed", speculation: { method: "draft", draft, adaptive: false } },
];
const totals = configs.map(() => ({ decodeMs: 0, tokens: 0, steps: 0, proposed: 0, accepted: 0, equal: 0 }));
const options = { temperature: 0, maxTokens: genTokens, ignoreEos: true };
await model.complete(prompts[0], { ...options, maxTokens: 8 }); // warm-up (JIT, graphs)
for (const prompt of prompts) {
  let reference;
  for (const [i, { speculation }] of configs.entries()) {
    const r = await model.complete(prompt, { ...options, speculation });
    reference ??= r.tokens;
    const t = totals[i];
    t.decodeMs += ((r.completionTokens - 1) * 1000) / r.decodeTokensPerSecond;
    t.tokens += r.completionTokens - 1;
    t.equal += Number(r.tokens.join() === reference.join());
    if (r.speculation) {
      t.steps += r.speculation.steps;
      t.proposed += r.speculation.proposedTokens;
      t.accepted += r.speculation.acceptedTokens;
    }
  }
}
const plainTokS = (1000 * totals[0].tokens) / totals[0].decodeMs;
const results = configs.map(({ name }, i) => {
  const t = totals[i];
  const tokS = (1000 * t.tokens) / t.decodeMs;
  return {
    config: name,
    decode_tok_s: tokS,
    speedup: tokS / plainTokS,
    acceptance_rate: t.proposed ? t.accepted / t.proposed : null,
    mean_accepted_length: t.steps ? 1 + t.accepted / t.steps : null,
    proposed_per_step: t.steps ? t.proposed / t.steps : null,
    greedy_equal: `${t.equal}/${prompts.length}`,
  };
});
const report = {
  model: "tachyon-code-tiny",
  draft_model: "tachyon-code-draft",
  device: model.device,
  machine: `${os.cpus()[0]?.model}, ${os.cpus().length} cores, Node ${process.versions.node}`,
  date: values.date,
  prompts: `${prompts.length} x 64-token slices of test/fixtures/embedded/heldout-sample.txt`,
  gen_tokens: genTokens,
  decoding: "greedy",
  results,
};
for (const r of results) {
  const spec =
    r.acceptance_rate === null
      ? ""
      : `, ${(100 * r.acceptance_rate).toFixed(1)}% accepted, ${r.mean_accepted_length.toFixed(2)} tokens/step`;
  process.stderr.write(
    `${r.config.padEnd(20)} ${r.decode_tok_s.toFixed(1)} tok/s (${r.speedup.toFixed(2)}x)${spec}, same tokens ${r.greedy_equal}\n`,
  );
}
const json = JSON.stringify(report, null, 2);
if (values.out) fs.writeFileSync(values.out, json + "\n");
else process.stdout.write(json + "\n");
