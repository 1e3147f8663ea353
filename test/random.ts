import { Rng } from "../src/engine/rng.js";

/** Uniform floats in [0, 1) from a fixed seed, so a failing test reproduces. */
export function seededRandom(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.nextFloat();
}
