/**
 * Codes of 8, 4 or 2 bits packed into bytes as the engine layout stores them
 * (src/quant/quantized-weight.ts): consecutive codes fill a byte from its lowest bits up.
 */
export type CodeBits = 8 | 4 | 2;

/** Packs one code per entry (only the low `bits` bits of each are kept). */
export function packCodes(codes: ArrayLike<number>, bits: CodeBits): Uint8Array {
  const perByte = 8 / bits;
  if (codes.length % perByte !== 0) {
    throw new Error(`packCodes: ${codes.length} codes do not fill whole bytes of ${perByte}`);
  }
  const out = new Uint8Array(codes.length / perByte);
  const mask = (1 << bits) - 1;
  for (let i = 0; i < codes.length; i++) {
    out[(i / perByte) | 0] |= (codes[i] & mask) << ((i % perByte) * bits);
  }
  return out;
}

/** The `count` codes in `packed`, one per byte, unsigned. */
export function unpackCodes(packed: Uint8Array, bits: CodeBits, count: number): Uint8Array {
  const perByte = 8 / bits;
  if (packed.length * perByte !== count) {
    throw new Error(
      `unpackCodes: ${packed.length} bytes hold ${packed.length * perByte} codes, not ${count}`,
    );
  }
  const out = new Uint8Array(count);
  const mask = (1 << bits) - 1;
  for (let i = 0; i < count; i++) out[i] = (packed[(i / perByte) | 0] >> ((i % perByte) * bits)) & mask;
  return out;
}
