/**
 * One safetensors file: an 8-byte little-endian header length N, N bytes of JSON describing each
 * tensor (dtype, shape, [begin, end) relative to the data region), then the data region at 8 + N.
 * The header is validated completely at open, so a bad or truncated file fails with a clear message
 * before anything is loaded; tensors are then read one at a time with positioned reads.
 */
import fs from "node:fs";
import { constants as bufferConstants } from "node:buffer";
import { TachyonError } from "../errors.js";
import {
  DTYPES,
  dtypeBytes,
  float32ToBf16Bits,
  float32ToF16Bits,
  isDType,
  toFloat32,
  type DType,
} from "./dtype.js";

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Path of the file that holds the tensor. */
  file: string;
  /** Absolute byte offset of the tensor's data in `file`. */
  offset: number;
  byteLength: number;
}

/** Real headers are at most a few MB; anything larger is corruption, not a checkpoint. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Largest single positioned read; big tensors are read in several. */
const READ_CHUNK = 1 << 30;
const FIX = "re-download or re-save the checkpoint";

export class SafetensorsFile {
  private fd: number;

  private constructor(
    readonly path: string,
    fd: number,
    readonly tensors: Map<string, TensorInfo>,
    readonly metadata: Record<string, string>,
  ) {
    this.fd = fd;
  }

  /** Opens and validates `path`; the file stays open for reads until `close()`. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(path, "r");
    } catch (e) {
      throw new TachyonError(`cannot open ${path}: ${(e as Error).message}`, "checkpoint");
    }
    try {
      const { tensors, metadata } = parseFile(path, fd);
      return new SafetensorsFile(path, fd, tensors, metadata);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** The tensor's raw little-endian bytes, freshly read from disk (offset 0 of their own buffer). */
  read(name: string): Uint8Array {
    const info = this.info(name);
    if (info.byteLength > bufferConstants.MAX_LENGTH) {
      throw new TachyonError(
        `${this.path}: tensor "${name}" is ${info.byteLength} bytes, more than Node can hold in one buffer`,
        "checkpoint",
      );
    }
    const bytes = new Uint8Array(Buffer.allocUnsafeSlow(info.byteLength).buffer, 0, info.byteLength);
    let done = 0;
    while (done < info.byteLength) {
      const want = Math.min(READ_CHUNK, info.byteLength - done);
      const got = fs.readSync(this.fd, bytes, done, want, info.offset + done);
      if (got === 0) {
        throw new TachyonError(
          `${this.path}: tensor "${name}" ends past the end of the file (was it truncated while open?); ${FIX}`,
          "checkpoint",
        );
      }
      done += got;
    }
    return bytes;
  }

  /** The tensor widened to float32 (for floating-point dtypes). */
  readFloat32(name: string): Float32Array {
    return toFloat32(this.read(name), this.info(name).dtype);
  }

  close(): void {
    if (this.fd < 0) return;
    fs.closeSync(this.fd);
    this.fd = -1;
  }

  private info(name: string): TensorInfo {
    if (this.fd < 0) throw new Error(`${this.path} is closed`);
    const info = this.tensors.get(name);
    if (info === undefined) throw new TachyonError(`${this.path}: no tensor named "${name}"`, "checkpoint");
    return info;
  }
}

function parseFile(
  path: string,
  fd: number,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  const bad = (what: string) => new TachyonError(`${path}: ${what}; ${FIX}`, "checkpoint");
  const stat = fs.fstatSync(fd);
  if (!stat.isFile()) throw bad("not a regular file");
  const fileSize = stat.size;
  if (fileSize < 8) throw bad(`file is too short to be safetensors (${fileSize} bytes, need at least 8)`);

  const lengthBytes = Buffer.alloc(8);
  readFully(path, fd, lengthBytes, 0);
  const headerLength = lengthBytes.readBigUInt64LE(0);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw bad(
      `header length ${headerLength} is implausibly large (limit ${MAX_HEADER_BYTES}): not a safetensors file`,
    );
  }
  const n = Number(headerLength);
  const dataStart = 8 + n;
  if (dataStart > fileSize) {
    throw bad(`truncated: expected at least ${dataStart} bytes for a ${n}-byte header, file has ${fileSize}`);
  }

  const headerBytes = Buffer.alloc(n);
  readFully(path, fd, headerBytes, 8);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw bad("header is not valid UTF-8");
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw bad(`header is not valid JSON (${(e as Error).message})`);
  }
  if (!isObject(header)) throw bad("header must be a JSON object of tensors");

  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") {
      metadata = parseMetadata(entry, bad);
      continue;
    }
    const info = parseEntry(entry, (what) => bad(`tensor "${name}": ${what}`));
    if (dataStart + info.end > fileSize) {
      throw bad(
        `tensor "${name}": truncated: expected at least ${dataStart + info.end} bytes, file has ${fileSize}`,
      );
    }
    tensors.set(name, {
      name,
      dtype: info.dtype,
      shape: info.shape,
      file: path,
      offset: dataStart + info.begin,
      byteLength: info.end - info.begin,
    });
  }

  // Empty tensors occupy no bytes, so they cannot overlap anything.
  const byOffset = [...tensors.values()].filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1];
    const cur = byOffset[i];
    if (prev.offset + prev.byteLength > cur.offset) {
      throw bad(`tensors "${prev.name}" and "${cur.name}" overlap`);
    }
  }
  return { tensors, metadata };
}

function parseEntry(
  entry: unknown,
  bad: (what: string) => TachyonError,
): { dtype: DType; shape: number[]; begin: number; end: number } {
  if (!isObject(entry)) throw bad("entry must be an object with dtype, shape and data_offsets");
  const { dtype, shape, data_offsets: offsets } = entry;
  for (const key of ["dtype", "shape", "data_offsets"]) {
    if (entry[key] === undefined) throw bad(`missing "${key}"`);
  }
  if (typeof dtype !== "string") throw bad(`dtype must be a string, got ${brief(dtype)}`);
  if (!isDType(dtype)) throw bad(`unknown dtype ${brief(dtype)} (supported dtypes: ${DTYPES.join(", ")})`);
  if (!Array.isArray(shape) || !shape.every(isSize)) {
    throw bad(`shape must be an array of non-negative integers, got ${brief(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isSize)) {
    throw bad(`data_offsets must be [begin, end] of non-negative integers, got ${brief(offsets)}`);
  }
  const [begin, end] = offsets;
  if (begin > end) throw bad(`data_offsets begin ${begin} is after end ${end}`);
  let expected = dtypeBytes(dtype);
  for (const d of shape) expected *= d;
  if (!Number.isSafeInteger(expected)) throw bad(`shape [${shape.join(", ")}] is too large`);
  if (end - begin !== expected) {
    throw bad(
      `size mismatch: data_offsets span ${end - begin} bytes but ${dtype} [${shape.join(", ")}] needs ${expected}`,
    );
  }
  return { dtype, shape, begin, end };
}

function parseMetadata(entry: unknown, bad: (what: string) => TachyonError): Record<string, string> {
  if (!isObject(entry)) throw bad("__metadata__ must be an object of strings");
  for (const [key, value] of Object.entries(entry)) {
    if (typeof value !== "string")
      throw bad(`__metadata__ value for "${key}" must be a string, got ${brief(value)}`);
  }
  // fromEntries defines own properties, so a "__proto__" key stays plain data.
  return Object.fromEntries(Object.entries(entry)) as Record<string, string>;
}

/** A value for an error message, cut short: a corrupt header can hold anything. */
function brief(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? s.slice(0, 60) + "…" : s;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isSize(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function readFully(path: string, fd: number, buf: Uint8Array, position: number): void {
  let done = 0;
  while (done < buf.byteLength) {
    const got = fs.readSync(fd, buf, done, buf.byteLength - done, position + done);
    if (got === 0)
      throw new TachyonError(`${path}: file ended while reading the header; ${FIX}`, "checkpoint");
    done += got;
  }
}

export interface TensorToWrite {
  dtype: DType;
  shape: number[];
  /** Raw little-endian bytes, or float32 values (only for F32, F16 and BF16, converted as needed). */
  data: Uint8Array | Float32Array;
}

/**
 * Writes a safetensors file with tensors laid out back to back in the given order. It goes to
 * `path + ".tmp"` first and is renamed into place, so a crash never leaves a half-written file.
 */
export function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): void {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header.__metadata__ = metadata;
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (name === "__metadata__")
      throw new Error(`writeSafetensors: "__metadata__" is not a valid tensor name`);
    const bytes = encode(t);
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (bytes.byteLength !== count * dtypeBytes(t.dtype)) {
      throw new Error(
        `writeSafetensors: tensor "${name}" has ${bytes.byteLength} bytes, ${t.dtype} [${t.shape}] needs ${count * dtypeBytes(t.dtype)}`,
      );
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    blobs.push(bytes);
    offset += bytes.byteLength;
  }

  let json = Buffer.from(JSON.stringify(header), "utf8");
  // The format allows trailing spaces; padding to 8 bytes keeps the data region aligned.
  const padded = Math.ceil(json.byteLength / 8) * 8;
  json = Buffer.concat([json, Buffer.alloc(padded - json.byteLength, " ")]);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.byteLength));

  const tmp = path + ".tmp";
  const fd = fs.openSync(tmp, "w");
  try {
    for (const part of [length, json, ...blobs]) writeFully(fd, part);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, path);
}

function encode(t: TensorToWrite): Uint8Array {
  const data = t.data;
  if (data instanceof Uint8Array) return data;
  if (t.dtype === "F32") return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (t.dtype !== "F16" && t.dtype !== "BF16") {
    throw new Error(`writeSafetensors: float32 data can only be written as F32, F16 or BF16, not ${t.dtype}`);
  }
  const toBits = t.dtype === "F16" ? float32ToF16Bits : float32ToBf16Bits;
  const bits = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) bits[i] = toBits(data[i]);
  return new Uint8Array(bits.buffer);
}

function writeFully(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) done += fs.writeSync(fd, bytes, done, bytes.byteLength - done);
}
