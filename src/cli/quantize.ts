/** `tachyon quantize`: a 16-bit model folder → an fp8/int8/int4/int2 one (src/quant/quantize-model.ts). */
import fs from "node:fs";
import { parseArgs } from "node:util";
import { TachyonError } from "../errors.js";
import { quantSchemes, type QuantScheme } from "../quant/quantized-weight.js";
import { quantizeModel, type QuantMethod } from "../quant/quantize-model.js";
import { modelDir } from "./options.js";
import { ProgressBar } from "./progress.js";

const groupSizes = [128, 64, 32];

export async function quantizeCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string" },
      to: { type: "string" },
      "group-size": { type: "string" },
      method: { type: "string", default: "rtn" },
      calibration: { type: "string", multiple: true },
      "calibration-tokens": { type: "string" },
      keep: { type: "string", multiple: true },
      "quantize-lm-head": { type: "boolean", default: false },
      out: { type: "string" },
    },
    strict: true,
  });
  const scheme = values.to as QuantScheme;
  if (!quantSchemes.includes(scheme)) {
    throw new TachyonError(
      `--to must be one of ${quantSchemes.join(", ")}, got ${JSON.stringify(values.to)}`,
      "argument",
    );
  }
  if (!values.out)
    throw new TachyonError("quantize needs --out DIR (a new folder for the quantized model)", "argument");
  const method = values.method as QuantMethod;
  if (method !== "rtn" && method !== "gptq") {
    throw new TachyonError(`--method must be rtn or gptq, got "${values.method}"`, "argument");
  }
  const groupSize = values["group-size"] === undefined ? undefined : Number(values["group-size"]);
  if (groupSize !== undefined && !groupSizes.includes(groupSize)) {
    throw new TachyonError(
      `--group-size must be ${groupSizes.join(", ")}, got "${values["group-size"]}"`,
      "argument",
    );
  }
  const calibrationTokens =
    values["calibration-tokens"] === undefined ? undefined : Number(values["calibration-tokens"]);
  if (
    calibrationTokens !== undefined &&
    !(Number.isSafeInteger(calibrationTokens) && calibrationTokens > 0)
  ) {
    throw new TachyonError(
      `--calibration-tokens needs a positive integer, got "${values["calibration-tokens"]}"`,
      "argument",
    );
  }
  const calibrationText = values.calibration?.map((file) => {
    if (!fs.existsSync(file)) throw new TachyonError(`--calibration ${file} does not exist`, "argument");
    return fs.readFileSync(file, "utf8");
  });

  // Ctrl-C stops at the next tensor boundary, and the partial output is removed before exiting.
  const interrupt = new AbortController();
  const onSigint = () => interrupt.abort();
  process.on("SIGINT", onSigint);
  const bars = { calibrating: new ProgressBar("calibrating"), writing: new ProgressBar("quantizing") };
  const started = performance.now();
  try {
    const summary = await quantizeModel(modelDir(values), values.out, {
      scheme,
      groupSize,
      method,
      calibrationText: calibrationText?.join("\n"),
      calibrationTokens,
      keep: values.keep,
      quantizeLmHead: values["quantize-lm-head"],
      signal: interrupt.signal,
      onProgress: (p) => {
        const bar = bars[p.phase];
        bar.update(p.done, p.total, p.tensor);
        if (p.done >= p.total) bar.done();
      },
    });
    const mb = (n: number) => (n / 1e6).toFixed(1);
    process.stderr.write(
      `wrote ${values.out}: ${summary.quantized} linear weights as ${scheme} (${method}` +
        (summary.calibrationTokens > 0 ? `, ${summary.calibrationTokens} calibration tokens` : "") +
        `), ${mb(summary.sourceBytes)} MB → ${mb(summary.outputBytes)} MB, ` +
        `16-bit: ${summary.kept.join(", ") || "none"} [${((performance.now() - started) / 1000).toFixed(1)} s]\n`,
    );
    return 0;
  } catch (e) {
    if (!interrupt.signal.aborted) throw e;
    process.stderr.write(`tachyon: interrupted; ${values.out} was not written\n`);
    return 130;
  } finally {
    process.off("SIGINT", onSigint);
  }
}
