/**
 * Per-operation GPU time of one step: wraps a CUDA backend so every operation is bracketed by
 * stream events (and graphs are off, so each operation really launches). For finding where a
 * decode step's time goes; not for measuring speed, which bench does with graphs on.
 */
import type { Backend } from "../backend.js";
import type { CudaBackend } from "./cuda-backend.js";

export interface OpProfile {
  op: string;
  calls: number;
  ms: number;
}

export function profilingBackend(inner: CudaBackend): { backend: Backend; report: () => OpProfile[] } {
  const marks: { op: string; start: unknown; end: unknown }[] = [];
  const timed = new Set([
    "embed",
    "rmsNorm",
    "linear",
    "linearMany",
    "gateUp",
    "attention",
    "concatCols",
    "gatherOutputRows",
    "argmaxRows",
  ]);
  const backend = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === "captureGraph" || prop === "replayGraph") return undefined;
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== "function") return value;
      if (!timed.has(String(prop))) return value.bind(target);
      return (...args: unknown[]) => {
        const start = target.ctx.record();
        const out = (value as (...a: unknown[]) => unknown).apply(target, args);
        marks.push({ op: String(prop), start, end: target.ctx.record() });
        return out;
      };
    },
  }) as unknown as Backend;
  const report = (): OpProfile[] => {
    const byOp = new Map<string, OpProfile>();
    for (const m of marks) {
      const p = byOp.get(m.op) ?? { op: m.op, calls: 0, ms: 0 };
      p.calls++;
      p.ms += inner.ctx.elapsedMs(m.start, m.end);
      byOp.set(m.op, p);
    }
    marks.length = 0;
    return [...byOp.values()].sort((a, b) => b.ms - a.ms);
  };
  return { backend, report };
}
