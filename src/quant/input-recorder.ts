/**
 * A decorator around the CPU backend that names every weight it loads (by the Tensor object
 * returned from `weight`) and, while some weights are watched, adds the inputs x of every
 * linear, linearMany and gateUp that uses them (normed, where the call hands the product a norm)
 * to their Hessians. Weights that share an input
 * in one call (q/k/v, gate/up) share one Hessian, so it is accumulated once.
 */
import type { Backend, RowNorm, Tensor } from "../backends/backend.js";
import type { CpuBackend } from "../backends/cpu/cpu-backend.js";
import { Hessian } from "./hessian.js";

export class InputRecorder {
  readonly backend: Backend;
  private readonly names = new Map<Tensor, string>();
  private watched = new Set<string>();
  private hessians = new Map<string, Hessian>();

  constructor(private readonly cpu: CpuBackend) {
    // The products' input, normed once: recorded, then handed on without the norm.
    const recorded = (x: Tensor, ws: readonly Tensor[], norm: RowNorm | undefined): Tensor => {
      const xn = norm ? cpu.rmsNorm(x, norm.weight, norm.eps) : x;
      this.record(xn, ws);
      return xn;
    };
    const overrides: Partial<Backend> = {
      weight: (name, dtype, shape, bytes) => this.name(cpu.weight(name, dtype, shape, bytes), name),
      linear: (x, w, o) => cpu.linear(recorded(x, [w], o?.norm), w, { ...o, norm: undefined }),
      linearMany: (x, ws, biases, norm) => cpu.linearMany(recorded(x, ws, norm), ws, biases),
      gateUp: (x, gate, up, o) =>
        cpu.gateUp(recorded(x, [gate, up], o?.norm), gate, up, { ...o, norm: undefined }),
    };
    this.backend = new Proxy(cpu, {
      get: (target, prop) => {
        const own = overrides[prop as keyof Backend];
        if (own !== undefined) return own;
        const v: unknown = Reflect.get(target, prop);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
  }

  /** Registers `t` as weight `name` (for weights made outside `weight`, e.g. an untied head). */
  name(t: Tensor, name: string): Tensor {
    this.names.set(t, name);
    return t;
  }

  /** Every named weight, by name. */
  tensors(): Map<string, Tensor> {
    return new Map([...this.names].map(([t, n]) => [n, t]));
  }

  /** Records the inputs of `names` while `body` runs; returns their Hessians. */
  watch(names: readonly string[], body: () => void): Map<string, Hessian> {
    this.watched = new Set(names);
    this.hessians = new Map();
    try {
      body();
      return this.hessians;
    } finally {
      this.watched = new Set();
    }
  }

  private record(x: Tensor, ws: readonly Tensor[]): void {
    const names = ws
      .map((w) => this.names.get(w))
      .filter((n): n is string => n !== undefined && this.watched.has(n));
    if (names.length === 0) return;
    const h = this.hessians.get(names[0]) ?? new Hessian(x.cols);
    h.add(this.cpu.read(x), x.rows);
    for (const n of names) this.hessians.set(n, h);
  }
}
