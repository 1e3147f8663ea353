import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { seededRandom } from "./random.js";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { TachyonError } from "../src/errors.js";
import { Checkpoint } from "../src/model/checkpoint.js";
import { DTYPES, dtypeBytes, toFloat32, type DType } from "../src/model/dtype.js";
import { SafetensorsFile, writeSafetensors } from "../src/model/safetensors.js";

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tachyon-safetensors-"));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const rng = seededRandom;

function randomBytes(rand: () => number, n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) bytes[i] = Math.floor(rand() * 256);
  return bytes;
}

let fileCounter = 0;
function freshDir(): string {
  const dir = path.join(tmp, `d${fileCounter++}`);
  fs.mkdirSync(dir);
  return dir;
}

/** Writes a file by hand: 8-byte header length (the true one unless given), header, data bytes. */
function rawFile(header: unknown, data: Uint8Array | number = 0, headerLength?: bigint): string {
  const file = path.join(tmp, `raw${fileCounter++}.safetensors`);
  const json = header instanceof Uint8Array ? header : Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(headerLength ?? BigInt(json.byteLength));
  const body = typeof data === "number" ? new Uint8Array(data) : data;
  fs.writeFileSync(file, Buffer.concat([length, json, body]));
  return file;
}

/** Asserts `fn` throws a checkpoint TachyonError that names `file` and matches `phrase`. */
function assertCheckpointError(fn: () => unknown, file: string, phrase: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TachyonError, `expected a TachyonError, got ${String(e)}`);
    assert.equal(e.code, "checkpoint");
    assert.ok(e.message.includes(path.basename(file)), `message should name ${file}: ${e.message}`);
    assert.match(e.message, phrase);
    return true;
  });
}

describe("writeSafetensors + SafetensorsFile", () => {
  test("round-trips every dtype, odd shapes and metadata", () => {
    const rand = rng(1);
    const tensors: Record<string, { dtype: DType; shape: number[]; data: Uint8Array }> = {};
    for (const dtype of DTYPES) {
      const shape = [3, 5];
      tensors[`t.${dtype}`] = { dtype, shape, data: randomBytes(rand, 15 * dtypeBytes(dtype)) };
    }
    tensors.scalar = { dtype: "F32", shape: [], data: randomBytes(rand, 4) };
    tensors.empty = { dtype: "BF16", shape: [2, 0, 3], data: new Uint8Array(0) };
    const file = path.join(tmp, "all.safetensors");
    writeSafetensors(file, tensors, { format: "pt", note: "héllo" });
    assert.ok(!fs.existsSync(file + ".tmp"));

    const headerLength = Number(fs.readFileSync(file).readBigUInt64LE(0));
    assert.equal((8 + headerLength) % 8, 0, "data region is 8-byte aligned");

    const st = SafetensorsFile.open(file);
    try {
      assert.deepEqual(st.metadata, { format: "pt", note: "héllo" });
      assert.deepEqual([...st.tensors.keys()], Object.keys(tensors));
      for (const [name, t] of Object.entries(tensors)) {
        const info = st.tensors.get(name)!;
        assert.equal(info.dtype, t.dtype);
        assert.deepEqual(info.shape, t.shape);
        assert.equal(info.file, file);
        assert.equal(info.byteLength, t.data.byteLength);
        assert.deepEqual(st.read(name), t.data);
        if (t.dtype.startsWith("F") || t.dtype === "BF16") {
          assert.deepEqual(st.readFloat32(name), toFloat32(t.data, t.dtype));
        }
      }
    } finally {
      st.close();
    }
  });

  test("converts float32 data to F32, F16 and BF16 on write", () => {
    const values = new Float32Array([1, -2.5, 0.333333, 65504, 1e-3]);
    const file = path.join(tmp, "floats.safetensors");
    writeSafetensors(file, {
      f32: { dtype: "F32", shape: [5], data: values },
      f16: { dtype: "F16", shape: [5], data: values },
      bf16: { dtype: "BF16", shape: [5], data: values },
    });
    const st = SafetensorsFile.open(file);
    try {
      assert.deepEqual(st.readFloat32("f32"), values);
      const f16 = st.readFloat32("f16");
      const bf16 = st.readFloat32("bf16");
      for (let i = 0; i < values.length; i++) {
        assert.ok(Math.abs(f16[i] - values[i]) <= Math.abs(values[i]) * 2 ** -11, `f16 ${values[i]}`);
        assert.ok(Math.abs(bf16[i] - values[i]) <= Math.abs(values[i]) * 2 ** -8, `bf16 ${values[i]}`);
      }
    } finally {
      st.close();
    }
  });

  test("writer rejects data of the wrong size", () => {
    const file = path.join(tmp, "bad-write.safetensors");
    assert.throws(() => writeSafetensors(file, { x: { dtype: "F32", shape: [3], data: new Uint8Array(8) } }));
    assert.ok(!fs.existsSync(file) && !fs.existsSync(file + ".tmp"));
  });

  test("reading an unknown tensor names the file", () => {
    const file = path.join(tmp, "one.safetensors");
    writeSafetensors(file, { x: { dtype: "U8", shape: [1], data: new Uint8Array([7]) } });
    const st = SafetensorsFile.open(file);
    assertCheckpointError(() => st.read("y"), file, /no tensor named "y"/);
    st.close();
  });
});

describe("SafetensorsFile rejects malformed files", () => {
  const entry = (over: Record<string, unknown> = {}) => ({
    dtype: "F32",
    shape: [2],
    data_offsets: [0, 8],
    ...over,
  });
  const cases: [string, () => string, RegExp][] = [
    ["missing file", () => path.join(tmp, "nope.safetensors"), /cannot open/],
    [
      "file shorter than 8 bytes",
      () => {
        const f = path.join(tmp, "short.safetensors");
        fs.writeFileSync(f, new Uint8Array(5));
        return f;
      },
      /too short.*5 bytes/,
    ],
    [
      "header length past the file",
      () => rawFile({}, 0, 1000n),
      /truncated: expected at least 1008 bytes.*file has 10/,
    ],
    ["absurd header length", () => rawFile({}, 0, 2n ** 60n), /implausibly large/],
    ["invalid UTF-8", () => rawFile(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), /not valid UTF-8/],
    ["invalid JSON", () => rawFile(Buffer.from('{"x": ')), /not valid JSON/],
    ["header is an array", () => rawFile([1, 2]), /must be a JSON object/],
    ["entry not an object", () => rawFile({ x: 5 }), /tensor "x": entry must be an object/],
    [
      "missing dtype",
      () => rawFile({ x: { shape: [2], data_offsets: [0, 8] } }, 8),
      /tensor "x": missing "dtype"/,
    ],
    ["missing shape", () => rawFile({ x: { dtype: "F32", data_offsets: [0, 8] } }, 8), /missing "shape"/],
    ["missing offsets", () => rawFile({ x: { dtype: "F32", shape: [2] } }, 8), /missing "data_offsets"/],
    ["dtype not a string", () => rawFile({ x: entry({ dtype: 4 }) }, 8), /dtype must be a string/],
    ["unknown dtype", () => rawFile({ x: entry({ dtype: "F7" }) }, 8), /unknown dtype "F7".*supported.*BF16/],
    [
      "negative dim",
      () => rawFile({ x: entry({ shape: [-2] }) }, 8),
      /shape must be .*non-negative integers/,
    ],
    ["fractional dim", () => rawFile({ x: entry({ shape: [2.5] }) }, 8), /shape must be/],
    ["string dim", () => rawFile({ x: entry({ shape: ["2"] }) }, 8), /shape must be/],
    ["unsafe offset", () => rawFile({ x: entry({ data_offsets: [0, 2 ** 60] }) }, 8), /data_offsets must be/],
    ["three offsets", () => rawFile({ x: entry({ data_offsets: [0, 4, 8] }) }, 8), /data_offsets must be/],
    ["begin after end", () => rawFile({ x: entry({ data_offsets: [8, 0] }) }, 8), /begin 8 is after end 0/],
    [
      "size mismatch",
      () => rawFile({ x: entry({ data_offsets: [0, 12] }) }, 12),
      /size mismatch.*12 bytes.*needs 8/,
    ],
    [
      "huge shape",
      () => rawFile({ x: entry({ shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] }) }, 8),
      /too large/,
    ],
    [
      "truncated data",
      () => rawFile({ x: entry() }, 5),
      /tensor "x": truncated: expected at least \d+ bytes/,
    ],
    [
      "overlapping tensors",
      () => rawFile({ a: entry(), b: entry({ data_offsets: [4, 12] }) }, 12),
      /tensors "a" and "b" overlap/,
    ],
    [
      "non-string metadata",
      () => rawFile({ __metadata__: { n: 1 } }),
      /__metadata__ value for "n" must be a string/,
    ],
    ["metadata not an object", () => rawFile({ __metadata__: "x" }), /__metadata__ must be an object/],
    ["a directory", () => freshDir(), /not a regular file/],
  ];
  for (const [what, make, phrase] of cases) {
    test(what, () => {
      const file = make();
      assertCheckpointError(() => SafetensorsFile.open(file), file, phrase);
    });
  }

  test("truncated message gives the expected and actual sizes", () => {
    const file = rawFile({ x: entry() }, 5);
    const size = fs.statSync(file).size;
    assertCheckpointError(
      () => SafetensorsFile.open(file),
      file,
      new RegExp(`expected at least ${size + 3} bytes, file has ${size}`),
    );
  });

  test("empty tensors may share an offset with others", () => {
    const file = rawFile({ a: entry(), e: entry({ shape: [0], data_offsets: [4, 4] }) }, 8);
    SafetensorsFile.open(file).close();
  });
});

describe("Checkpoint", () => {
  const tensor = (v: number, n = 4) => ({
    dtype: "U8" as const,
    shape: [n],
    data: new Uint8Array(n).fill(v),
  });

  test("opens a single model.safetensors", () => {
    const dir = freshDir();
    writeSafetensors(path.join(dir, "model.safetensors"), { a: tensor(1), b: tensor(2, 6) });
    const ckpt = Checkpoint.open(dir);
    try {
      assert.ok(ckpt.has("a") && ckpt.has("b") && !ckpt.has("c"));
      assert.deepEqual(ckpt.read("b"), new Uint8Array(6).fill(2));
      assert.equal(ckpt.totalBytes(), 10);
      assertCheckpointError(() => ckpt.info("c"), dir, /no tensor named "c"/);
    } finally {
      ckpt.close();
    }
  });

  test("opens a sharded checkpoint through its index", () => {
    const dir = freshDir();
    const shards = [
      "model-00001-of-00003.safetensors",
      "model-00002-of-00003.safetensors",
      "model-00003-of-00003.safetensors",
    ];
    const weightMap: Record<string, string> = {};
    shards.forEach((shard, s) => {
      writeSafetensors(path.join(dir, shard), { [`w${s}.a`]: tensor(s * 2), [`w${s}.b`]: tensor(s * 2 + 1) });
      weightMap[`w${s}.a`] = shard;
      weightMap[`w${s}.b`] = shard;
    });
    // A stray file that the index does not name is ignored.
    writeSafetensors(path.join(dir, "consolidated.safetensors"), { w0: tensor(9) });
    const index = { metadata: { total_size: 24 }, weight_map: weightMap };
    fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify(index));

    const ckpt = Checkpoint.open(dir);
    try {
      assert.equal(ckpt.tensors.size, 6);
      assert.equal(ckpt.totalBytes(), 24);
      assert.equal(ckpt.info("w2.b").file, path.join(dir, shards[2]));
      assert.deepEqual(ckpt.read("w2.b"), new Uint8Array(4).fill(5));
    } finally {
      ckpt.close();
    }
  });

  test("merges several *.safetensors files without an index", () => {
    const dir = freshDir();
    writeSafetensors(path.join(dir, "a.safetensors"), { x: tensor(1) });
    writeSafetensors(path.join(dir, "b.safetensors"), { y: tensor(2), z: tensor(3) });
    const ckpt = Checkpoint.open(dir);
    try {
      assert.deepEqual([...ckpt.tensors.keys()].sort(), ["x", "y", "z"]);
      assert.deepEqual(ckpt.read("z"), new Uint8Array(4).fill(3));
    } finally {
      ckpt.close();
    }
  });

  test("a directory without safetensors explains the PyTorch conversion", () => {
    const dir = freshDir();
    fs.writeFileSync(path.join(dir, "pytorch_model.bin"), "x");
    assertCheckpointError(
      () => Checkpoint.open(dir),
      dir,
      /no model\.safetensors.*pytorch_model\.bin.*not supported.*safe_serialization=True/,
    );
  });

  test("a missing directory", () => {
    const dir = path.join(tmp, "missing-dir");
    assertCheckpointError(() => Checkpoint.open(dir), dir, /cannot read checkpoint directory/);
  });

  test("a shard named by the index is missing", () => {
    const dir = freshDir();
    writeSafetensors(path.join(dir, "s1.safetensors"), { a: tensor(1) });
    const index = { weight_map: { a: "s1.safetensors", b: "s2.safetensors" } };
    fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify(index));
    assertCheckpointError(
      () => Checkpoint.open(dir),
      "s2.safetensors",
      /names shard s2\.safetensors.*missing/,
    );
  });

  test("a tensor named by the index is not in its shard", () => {
    const dir = freshDir();
    writeSafetensors(path.join(dir, "s1.safetensors"), { a: tensor(1) });
    const index = { weight_map: { a: "s1.safetensors", b: "s1.safetensors" } };
    fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify(index));
    assertCheckpointError(() => Checkpoint.open(dir), "s1.safetensors", /tensor "b".*does not have it/);
  });

  test("the same tensor in two files", () => {
    const dir = freshDir();
    writeSafetensors(path.join(dir, "a.safetensors"), { x: tensor(1) });
    writeSafetensors(path.join(dir, "b.safetensors"), { x: tensor(2) });
    assertCheckpointError(() => Checkpoint.open(dir), "b.safetensors", /tensor "x" is in both/);
  });

  const badIndexes: [string, string, RegExp][] = [
    ["invalid JSON", "{", /not valid JSON/],
    ["no weight_map", '{"metadata": {}}', /"weight_map" object/],
    ["weight_map is an array", '{"weight_map": []}', /"weight_map" object/],
    ["non-string shard", '{"weight_map": {"a": 3}}', /entry for "a" must be a \.safetensors file name/],
    [
      "shard outside the folder",
      '{"weight_map": {"a": "../x.safetensors"}}',
      /must be a \.safetensors file name/,
    ],
    ["empty weight_map", '{"weight_map": {}}', /weight_map is empty/],
  ];
  for (const [what, text, phrase] of badIndexes) {
    test(`malformed index: ${what}`, () => {
      const dir = freshDir();
      fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), text);
      assertCheckpointError(() => Checkpoint.open(dir), "model.safetensors.index.json", phrase);
    });
  }
});

describe("fuzz", () => {
  const WEIRD: unknown[] = [
    -1,
    0.5,
    2 ** 60,
    2 ** 53,
    2 ** 32,
    1e308,
    -0,
    0,
    3,
    "12",
    "F32",
    null,
    true,
    {},
    [],
    [[1]],
    [1, 2, 3],
    [-1, 4],
    [0, 2 ** 60],
    [1.5, 2],
    ["0", "4"],
    [2 ** 53, 2 ** 53 + 8],
  ];
  const DTYPE_VALUES: unknown[] = [...DTYPES, "F7", "", "bf16", 5, null];
  const LENGTHS = [
    0n,
    1n,
    7n,
    2n ** 31n,
    2n ** 32n,
    2n ** 53n,
    2n ** 63n,
    2n ** 64n - 1n,
    100n * 1024n * 1024n,
  ];

  test("open + read either succeeds exactly or throws TachyonError", () => {
    const rand = rng(42);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
    const int = (n: number) => Math.floor(rand() * n);

    const baseFile = path.join(tmp, "fuzz-base.safetensors");
    writeSafetensors(
      baseFile,
      {
        "model.embed.weight": { dtype: "BF16", shape: [4, 3], data: randomBytes(rand, 24) },
        "layer.0.w": { dtype: "F32", shape: [2, 2], data: randomBytes(rand, 16) },
        "layer.0.q": { dtype: "F8_E4M3", shape: [5], data: randomBytes(rand, 5) },
        "layer.0.i": { dtype: "I64", shape: [1, 2], data: randomBytes(rand, 16) },
        empty: { dtype: "F16", shape: [0], data: new Uint8Array(0) },
      },
      { format: "pt" },
    );
    const base = fs.readFileSync(baseFile);
    const headerLength = Number(base.readBigUInt64LE(0));
    const baseHeader = JSON.parse(base.subarray(8, 8 + headerLength).toString()) as Record<string, unknown>;
    const baseData = base.subarray(8 + headerLength);

    const withHeader = (header: unknown, data: Uint8Array): Buffer => {
      const json = Buffer.from(JSON.stringify(header));
      const length = Buffer.alloc(8);
      length.writeBigUInt64LE(BigInt(json.byteLength));
      return Buffer.concat([length, json, data]);
    };

    const mutateJson = (): Buffer => {
      const header = structuredClone(baseHeader) as Record<string, Record<string, unknown>>;
      const names = Object.keys(header).filter((n) => n !== "__metadata__");
      const name = pick(names);
      switch (int(7)) {
        case 0:
          header[name].dtype = pick(DTYPE_VALUES);
          break;
        case 1:
          header[name].shape = rand() < 0.5 ? pick(WEIRD) : [int(6), pick(WEIRD)];
          break;
        case 2: {
          // Sliding a valid range keeps its size right but can overlap a neighbour or run past the end.
          const [begin, end] = header[name].data_offsets as number[];
          const shift = int(48) - 24;
          const r = rand();
          header[name].data_offsets =
            r < 0.3 ? pick(WEIRD) : r < 0.5 ? [int(80), int(80)] : [begin + shift, end + shift];
          break;
        }
        case 3:
          delete header[name][pick(["dtype", "shape", "data_offsets"])];
          break;
        case 4:
          header[name] = pick(WEIRD) as Record<string, unknown>;
          break;
        case 5:
          header[pick(["__metadata__", "__proto__", "", "x"])] = header[name];
          break;
        default:
          header.__metadata__ = { k: pick(WEIRD) } as Record<string, unknown>;
      }
      return withHeader(header, baseData);
    };

    const mutate = (bytes: Buffer): Buffer => {
      // Header mutations need the length field; once truncated below it, only appending applies.
      if (bytes.length < 8) return Buffer.concat([bytes, randomBytes(rand, int(16))]);
      switch (int(8)) {
        case 0: {
          const out = Buffer.from(bytes);
          const end = Math.min(out.length, 8 + headerLength);
          // Mostly JSON-significant ASCII, so mutants get past UTF-8 and JSON parsing.
          const ascii = () => '0123456789-.e[]{}":, x'.charCodeAt(int(22));
          for (let k = 1 + int(4); k > 0; k--) out[8 + int(end - 8)] = rand() < 0.8 ? ascii() : int(256);
          return out;
        }
        case 1: {
          const out = Buffer.from(bytes);
          out.writeBigUInt64LE(rand() < 0.5 ? pick(LENGTHS) : BigInt(int(out.length + 16)));
          return out;
        }
        case 2:
          return bytes.subarray(0, int(bytes.length + 1));
        case 3:
          return Buffer.concat([bytes, randomBytes(rand, int(64))]);
        case 4: {
          const out = Buffer.from(bytes);
          for (let k = 1 + int(8); k > 0; k--) out[int(out.length)] = int(256);
          return out;
        }
        default:
          return mutateJson();
      }
    };

    const file = path.join(tmp, "fuzz.safetensors");
    let opened = 0;
    for (let iter = 0; iter < 4000; iter++) {
      let bytes: Buffer = base;
      for (let k = 1 + int(3); k > 0; k--) bytes = mutate(bytes);
      fs.writeFileSync(file, bytes);
      let st: SafetensorsFile | undefined;
      try {
        st = SafetensorsFile.open(file);
        opened++;
        let total = 0;
        for (const info of st.tensors.values()) {
          assert.equal(st.read(info.name).byteLength, info.byteLength);
          total += info.byteLength;
        }
        assert.ok(total <= bytes.length, "tensors claim more bytes than the file has");
      } catch (e) {
        if (!(e instanceof TachyonError)) {
          assert.fail(
            `iteration ${iter}: ${String(e)}\n${(e as Error).stack}\nheader: ${bytes.subarray(0, 300)}`,
          );
        }
      } finally {
        st?.close();
      }
    }
    // Both outcomes must actually be exercised.
    assert.ok(opened > 100 && opened < 3900, `opened ${opened} of 4000`);
  });
});
