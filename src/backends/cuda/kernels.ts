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
import type { Timeline } from "./timeline.js";

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

/**
 * Sources compiled only when a model needs them, once per set of defines: the sub-16-bit GEMV
 * (kernels/qgemv.cu) is built for the one weight scheme a model uses (QFMT).
 */
export const variantSources = ["qgemv"] as const;

export class Kernels {
  private readonly modules: Handle[] = [];
  private readonly functions = new Map<string, Handle>();
  private readonly variants = new Map<string, Handle>();
  private readonly common: string;
  private readonly arch: string;
  private readonly defines: Record<string, number>;

  constructor(
    private readonly ctx: CudaContext,
    private readonly nvrtc: Nvrtc,
    defines: Record<string, number>,
    /** Compiles every kernel with the timeline's recording and points it at its buffer. */
    private readonly timeline?: Timeline,
  ) {
    this.common = fs.readFileSync(path.join(kernelDir, "common.cuh"), "utf8");
    this.arch = targetArch(ctx.info.computeCapability);
    // Tuning experiments: TACHYON_KERNEL_DEFINES="GEMV_PREFETCH=8,GEMV_UNROLL=8" overrides defaults.
    for (const kv of (process.env.TACHYON_KERNEL_DEFINES ?? "").split(",").filter(Boolean)) {
      const [k, v] = kv.split("=");
      defines = { ...defines, [k.trim()]: Number(v) };
    }
    this.defines = { ...defines, ...timeline?.defines };
    for (const name of kernelSources) this.modules.push(this.build(name, {}));
  }

  private build(name: string, extra: Record<string, number>): Handle {
    const source = this.common + "\n" + fs.readFileSync(path.join(kernelDir, `${name}.cu`), "utf8");
    // Only the constants a source uses: a model with another head size reuses the GEMV cubin.
    const all = { ...this.defines, ...extra };
    const used = Object.fromEntries(Object.entries(all).filter(([k]) => source.includes(k)));
    const module = this.ctx.loadModule(this.nvrtc.compile(name, source, this.arch, used), `${name}.cu`);
    this.timeline?.attach(module);
    return module;
  }

  /** Kernel `name` of a variant source built with `extra` defines (compiled on first use). */
  variant(source: (typeof variantSources)[number], extra: Record<string, number>, name: string): Handle {
    const key = `${source}:${JSON.stringify(extra)}`;
    let f = this.functions.get(`${key}:${name}`);
    if (f === undefined) {
      let module = this.variants.get(key);
      if (module === undefined) {
        module = this.build(source, extra);
        this.variants.set(key, module);
      }
      f = this.ctx.findFunction(module, name) ?? undefined;
      if (f === undefined) throw new Error(`no kernel named ${name} in ${source}.cu`);
      this.functions.set(`${key}:${name}`, f);
    }
    return f;
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
