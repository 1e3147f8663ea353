/** `tachyon eval`: held-out perplexity of a text file and, for MTP models, MTP acceptance rates. */
import fs from "node:fs";
import { parseArgs } from "node:util";
import { TachyonError } from "../errors.js";
import { mtpAcceptance, perplexity } from "../engine/evaluate.js";
import { loadModel } from "../engine/loaded-model.js";
import { loadOptions, modelDir, modelFlags } from "./options.js";

export async function evalCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...modelFlags,
      file: { type: "string" },
      window: { type: "string", default: "512" },
      "mtp-prompts": { type: "string", default: "16" },
      "mtp-tokens": { type: "string", default: "64" },
      json: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (!values.file)
    throw new TachyonError("eval needs --file TEXT_FILE (held-out text to score)", "argument");
  if (!fs.existsSync(values.file)) throw new TachyonError(`--file ${values.file} does not exist`, "argument");
  const model = await loadModel(modelDir(values), loadOptions(values));
  const ids = model.tokenizer.encode(fs.readFileSync(values.file, "utf8"), false);
  const window = Math.min(Number(values.window), model.executor.contextLength);
  const ppl = perplexity(model, ids, window);
  const report: Record<string, unknown> = { model: model.dir, file: values.file, window, ...ppl };

  const D = model.config.numMtpModules;
  if (D > 0) {
    // Prompts: evenly spaced 64-token slices of the file, each followed by greedy decoding.
    const n = Number(values["mtp-prompts"]);
    const stride = Math.max(1, Math.floor((ids.length - 64) / n));
    const prompts = Array.from({ length: n }, (_, i) => ids.slice(i * stride, i * stride + 64)).filter(
      (p) => p.length === 64,
    );
    report.mtp = await mtpAcceptance(model, prompts, Number(values["mtp-tokens"]));
  }
  if (values.json) {
    process.stdout.write(JSON.stringify(report, null, 2) + "\n");
    return 0;
  }
  process.stdout.write(
    `perplexity ${ppl.perplexity.toFixed(3)} over ${ppl.predictedTokens} tokens (window ${window})\n`,
  );
  const mtp = report.mtp as Awaited<ReturnType<typeof mtpAcceptance>> | undefined;
  if (mtp) {
    process.stdout.write(`MTP acceptance under greedy decoding, ${mtp.steps} steps:\n`);
    for (let k = 0; k < mtp.depths; k++) {
      process.stdout.write(
        `  depth ${k + 1}: ${(mtp.conditional[k] * 100).toFixed(1)}% given earlier depths accepted, ` +
          `${(mtp.cumulative[k] * 100).toFixed(1)}% of steps reach it\n`,
      );
    }
    process.stdout.write(`  mean tokens per step: ${mtp.meanAcceptedLength.toFixed(3)}\n`);
  }
  return 0;
}
