/**
 * tachyon's CUDA kernels: the sources in kernels/*.cu (with kernels/common.cuh prepended),
 * compiled by NVRTC for this GPU with the model's dimensions as constants, loaded once.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { CudaContext } from "./context.js";
import type { Handle } from "./driver.js";
import type { Nvrtc } from "./nvrtc.js";

export const kernelDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../../kernels");
export const kernelSources = [
  "gemv",
  "norm",
  "elementwise",
  "rope",
  "attention",
  "prefill_attention",
  "sample",
] as const;

/** The architecture name NVRTC compiles for: sm_90a on Hopper (its full instruction set), else sm_XY. */
export function targetArch(cc: [number, number]): string {
  return `sm_${cc[0]}${cc[1]}${cc[0] === 9 && cc[1] === 0 ? "a" : ""}`;
}

export class Kernels {
  private readonly modules: Handle[] = [];
  private readonly functions = new Map<string, Handle>();

  constructor(
    private readonly ctx: CudaContext,
    nvrtc: Nvrtc,
    defines: Record<string, number>,
  ) {
    const common = fs.readFileSync(path.join(kernelDir, "common.cuh"), "utf8");
    const arch = targetArch(ctx.info.computeCapability);
    // Tuning experiments: TACHYON_KERNEL_DEFINES="GEMV_PREFETCH=8,GEMV_UNROLL=8" overrides defaults.
    for (const kv of (process.env.TACHYON_KERNEL_DEFINES ?? "").split(",").filter(Boolean)) {
      const [k, v] = kv.split("=");
      defines = { ...defines, [k.trim()]: Number(v) };
    }
    for (const name of kernelSources) {
      const source = common + "\n" + fs.readFileSync(path.join(kernelDir, `${name}.cu`), "utf8");
      // Only the constants a source uses: a model with another head size reuses the GEMV cubin.
      const used = Object.fromEntries(Object.entries(defines).filter(([k]) => source.includes(k)));
      this.modules.push(ctx.loadModule(nvrtc.compile(name, source, arch, used), `${name}.cu`));
    }
  }

  /** The kernel called `name`, from whichever module defines it. */
  get(name: string): Handle {
    let f = this.functions.get(name);
    if (f === undefined) {
      f = this.modules.map((m) => this.ctx.findFunction(m, name)).find((x) => x !== null);
      if (f === undefined) throw new Error(`no kernel named ${name} in ${kernelSources.join(", ")}`);
      this.functions.set(name, f);
    }
    return f;
  }
}
