/**
 * tachyon's own int8/int4/int2 checkpoint format: the engine layout written as is, so loading is
 * a read with no conversion. For a linear `X` ([N, K] = [outputs, inputs], g inputs per group):
 *
 *   X.qweight  int8: I8 [N, K]; int4: U8 [N, K/2]; int2: U8 [N, K/4]   codes packed along K,
 *              lowest k in the lowest bits (src/quant/quantized-weight.ts)
 *   X.scales   F16 [N, K/g]
 *   X.offsets  F16 [N, K/g]   int4 and int2 only:  w = q · scale + offset  (int8: w = q · scale)
 */
import { TachyonError } from "../../errors.js";
import type { Checkpoint } from "../../model/checkpoint.js";
import type { TensorToWrite } from "../../model/safetensors.js";
import type { IntScheme } from "../int-grid.js";
import { schemeBits, type QuantizedWeight } from "../quantized-weight.js";
import { expectFinite, expectTensor, type QuantFormat } from "./format.js";

/** Group size of a [rows, cols] weight under `groupSize` (null: one group per row), checked. */
export function groupSizeFor(name: string, cols: number, groupSize: number | null): number {
  const g = groupSize ?? cols;
  if (cols % g !== 0) {
    throw new TachyonError(
      `group size ${g} does not divide the ${cols} inputs of ${name}; ` +
        `use a group size that divides it (e.g. --group-size 32) or leave the module in 16 bits (--keep ${name.replace(/\.weight$/, "")})`,
      "argument",
    );
  }
  return g;
}

function qweightShape(scheme: IntScheme, rows: number, cols: number): number[] {
  return [rows, (cols * schemeBits[scheme]) / 8];
}

export function tachyonIntFormat(scheme: IntScheme, groupSize: number | null): QuantFormat {
  const label = `tachyon ${scheme}`;
  const names = (base: string) =>
    scheme === "int8"
      ? [base + ".qweight", base + ".scales"]
      : [base + ".qweight", base + ".scales", base + ".offsets"];
  const check = (ckpt: Checkpoint, base: string, rows: number, cols: number): number => {
    const g = groupSizeFor(base, cols, groupSize);
    if ((cols * schemeBits[scheme]) % 8 !== 0) {
      throw new TachyonError(
        `${base}: ${cols} ${scheme} codes per row do not fill whole bytes`,
        "checkpoint",
      );
    }
    expectTensor(
      ckpt,
      base + ".qweight",
      [scheme === "int8" ? "I8" : "U8"],
      qweightShape(scheme, rows, cols),
      label,
    );
    for (const name of names(base).slice(1)) expectTensor(ckpt, name, ["F16"], [rows, cols / g], label);
    return g;
  };
  return {
    label,
    isQuantized: (ckpt, base) => ckpt.has(base + ".qweight"),
    tensorNames: names,
    check: (ckpt, base, rows, cols) => void check(ckpt, base, rows, cols),
    read(ckpt, base, rows, cols) {
      const g = check(ckpt, base, rows, cols);
      const scales = expectFinite(ckpt, base + ".scales", ckpt.readFloat32(base + ".scales"));
      const offsets =
        scheme === "int8" ? null : expectFinite(ckpt, base + ".offsets", ckpt.readFloat32(base + ".offsets"));
      return {
        scheme,
        rows,
        cols,
        groupSize: g,
        groupRows: 1,
        codes: ckpt.read(base + ".qweight"),
        scales,
        offsets,
      };
    },
  };
}

/** The tensors that store `w` (an int8/int4/int2 weight) as linear `base`. */
export function tachyonIntTensors(base: string, w: QuantizedWeight): Record<string, TensorToWrite> {
  const scheme = w.scheme as IntScheme;
  const groupShape = [w.rows, w.cols / w.groupSize];
  const out: Record<string, TensorToWrite> = {
    [base + ".qweight"]: {
      dtype: scheme === "int8" ? "I8" : "U8",
      shape: qweightShape(scheme, w.rows, w.cols),
      data: w.codes,
    },
    [base + ".scales"]: { dtype: "F16", shape: groupShape, data: w.scales },
  };
  if (w.offsets) out[base + ".offsets"] = { dtype: "F16", shape: groupShape, data: w.offsets };
  return out;
}
