/** The on-disk format a checkpoint's quantization_config names. */
import { awqFormat } from "./formats/awq-checkpoint.js";
import { fp8BlockFormat } from "./formats/fp8-block.js";
import type { QuantFormat } from "./formats/format.js";
import { gptqFormat } from "./formats/gptq-checkpoint.js";
import { tachyonIntFormat } from "./formats/tachyon-int.js";
import type { QuantizationConfig } from "./quant-config.js";

export function checkpointFormat(q: QuantizationConfig): QuantFormat {
  switch (q.method) {
    case "fp8":
      return fp8BlockFormat(q.blockRows, q.blockCols);
    case "tachyon":
      return tachyonIntFormat(q.scheme, q.groupSize);
    case "gptq":
      return gptqFormat(q.bits, q.groupSize, q.zerosMinusOne);
    case "awq":
      return awqFormat(q.groupSize);
  }
}
