/**
 * Seedable pseudo-random numbers for sampling: xoshiro128** (Blackman & Vigna), 32-bit integer
 * arithmetic only, so a seed gives the same sequence on every machine and Node version.
 */
import { getRandomValues } from "node:crypto";

const TWO_POW_32 = 4294967296;
const TWO_POW_53 = 9007199254740992;

/** A fresh seed from the OS's cryptographic source: a non-negative safe integer (53 bits). */
export function randomSeed(): number {
  const words = getRandomValues(new Uint32Array(2));
  return (words[0] >>> 11) * TWO_POW_32 + words[1];
}

/** MurmurHash3's finaliser: a bijection on 32-bit words that spreads every input bit. */
function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) | 0;
}

export class Rng {
  /** The seed this generator started from (drawn with randomSeed() when none was given). */
  readonly seed: number;
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** `seed` is any safe integer; negative values are read as 64-bit two's complement. */
  constructor(seed: number = randomSeed()) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`Rng seed must be a safe integer, got ${seed}`);
    this.seed = seed;
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_POW_32) >>> 0;
    // s0 is a bijection of lo and, given s0, s1 one of hi, so distinct seeds give distinct states;
    // s1 (the word the first output reads) depends on both halves, so nearby seeds diverge at once.
    // s2 = mix32(s1 ^ c) is non-zero whenever s1 is zero, so the state is never all zero.
    this.s0 = mix32(lo ^ 0x9e3779b9);
    this.s1 = mix32(hi ^ 0x7f4a7c15 ^ this.s0);
    this.s2 = mix32(this.s1 ^ 0x243f6a88);
    this.s3 = mix32(this.s0 ^ this.s1 ^ 0x85a308d3);
  }

  /** Uniform integer in [0, 2^32). */
  nextU32(): number {
    const s1 = this.s1;
    const r = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 = s1 ^ this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return r >>> 0;
  }

  /** Uniform float in [0, 1) with 53 random bits, so even tiny probabilities are resolved. */
  nextFloat(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / TWO_POW_53;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
