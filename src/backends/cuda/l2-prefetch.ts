import type { DevicePtr } from "./driver.js";

/**
 * The L2 prefetch a quantized GEMV issues before its wait (prefetch_l2 in kernels/common.cuh):
 * the first bytes of its weights, pulled in while the kernel before it leaves the memory idle.
 */

/** Most ranges one prefetch takes (L2_RANGES): codes and scales of gate and up. */
export const l2Ranges = 4;

/**
 * Bytes of its weights a GEMV prefetches: 2 MB measured best on the H100 (8B int4: 502 → 509
 * tok/s; 4 MB level, 8 MB 498, docs/BENCHMARKS.md session 12). TACHYON_L2_PREFETCH_MB overrides it
 * for measurements (0: never).
 */
export const l2PrefetchBytes = Number(process.env.TACHYON_L2_PREFETCH_MB ?? 2) * 2 ** 20;

/**
 * The L2Ranges struct (72 bytes) for the first `budget` bytes of `ranges` (device address,
 * bytes), issued by `blocks` blocks: the same fraction of every range, which holds the rows that
 * the GEMV's first blocks read (its codes and scales are in row order). Nothing to prefetch
 * gives 0 blocks, which the kernel reads as "skip".
 */
export function l2PrefetchArg(
  ranges: readonly (readonly [DevicePtr, number])[],
  budget: number,
  blocks: number,
): Uint8Array {
  if (ranges.length > l2Ranges) throw new RangeError(`an L2 prefetch takes at most ${l2Ranges} ranges`);
  const total = ranges.reduce((n, [, bytes]) => n + bytes, 0);
  const fraction = total > 0 && budget > 0 ? Math.min(1, budget / total) : 0;
  const view = new DataView(new ArrayBuffer(72));
  ranges.forEach(([ptr, bytes], i) => {
    view.setBigUint64(8 * i, BigInt(ptr), true);
    view.setBigUint64(8 * l2Ranges + 8 * i, BigInt(Math.floor(bytes * fraction)), true);
  });
  view.setInt32(16 * l2Ranges, fraction > 0 ? blocks : 0, true);
  return new Uint8Array(view.buffer);
}
