/**
 * A model directory's weights as one name → tensor map, whether they sit in a single
 * model.safetensors, in shards listed by model.safetensors.index.json, or in several
 * *.safetensors files with no index. Only headers are read at open; tensors are read on demand.
 */
import fs from "node:fs";
import path from "node:path";
import { TachyonError } from "../errors.js";
import { SafetensorsFile, type TensorInfo } from "./safetensors.js";

const SINGLE = "model.safetensors";
const INDEX = "model.safetensors.index.json";

export class Checkpoint {
  private constructor(
    readonly dir: string,
    private readonly files: Map<string, SafetensorsFile>,
    readonly tensors: Map<string, TensorInfo>,
  ) {}

  static open(dir: string): Checkpoint {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch (e) {
      throw new TachyonError(
        `cannot read checkpoint directory ${dir}: ${(e as Error).message}`,
        "checkpoint",
      );
    }
    const index = names.includes(INDEX) ? readIndex(path.join(dir, INDEX)) : undefined;
    const shardNames = index
      ? [...new Set(index.values())]
      : names.includes(SINGLE)
        ? [SINGLE]
        : names.filter((n) => n.endsWith(".safetensors")).sort();
    if (shardNames.length === 0) throw noSafetensors(dir, names);

    const files = new Map<string, SafetensorsFile>();
    try {
      for (const shard of shardNames) {
        const file = path.join(dir, shard);
        if (index && !fs.existsSync(file)) {
          throw new TachyonError(
            `${path.join(dir, INDEX)} names shard ${shard}, but ${file} is missing; ` +
              `download all shards of the checkpoint`,
            "checkpoint",
          );
        }
        files.set(file, SafetensorsFile.open(file));
      }
      return new Checkpoint(dir, files, mergeTensors(dir, files, index));
    } catch (e) {
      for (const f of files.values()) f.close();
      throw e;
    }
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (info === undefined) {
      throw new TachyonError(`${this.dir}: the checkpoint has no tensor named "${name}"`, "checkpoint");
    }
    return info;
  }

  read(name: string): Uint8Array {
    const info = this.info(name);
    return this.files.get(info.file)!.read(name);
  }

  readFloat32(name: string): Float32Array {
    const info = this.info(name);
    return this.files.get(info.file)!.readFloat32(name);
  }

  /** Bytes of all tensor data, as stored. */
  totalBytes(): number {
    let total = 0;
    for (const t of this.tensors.values()) total += t.byteLength;
    return total;
  }

  close(): void {
    for (const f of this.files.values()) f.close();
  }
}

/** The index's weight_map: tensor name → shard file name. */
function readIndex(file: string): Map<string, string> {
  const bad = (what: string) =>
    new TachyonError(
      `${file}: ${what}; re-download it or delete it if the folder has one model.safetensors`,
      "checkpoint",
    );
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw bad(`cannot read it (${(e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw bad(`not valid JSON (${(e as Error).message})`);
  }
  const weightMap = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw bad(`expected an object with a "weight_map" object of tensor name → shard file`);
  }
  const map = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // Shards are plain file names in the same folder; anything else could point outside it.
    if (typeof shard !== "string" || path.basename(shard) !== shard || !shard.endsWith(".safetensors")) {
      throw bad(
        `weight_map entry for "${name}" must be a .safetensors file name in the same folder, got ${JSON.stringify(shard)}`,
      );
    }
    map.set(name, shard);
  }
  if (map.size === 0) throw bad("weight_map is empty");
  return map;
}

function mergeTensors(
  dir: string,
  files: Map<string, SafetensorsFile>,
  index: Map<string, string> | undefined,
): Map<string, TensorInfo> {
  const tensors = new Map<string, TensorInfo>();
  for (const file of files.values()) {
    for (const [name, info] of file.tensors) {
      const seen = tensors.get(name);
      if (seen) {
        throw new TachyonError(
          `tensor "${name}" is in both ${seen.file} and ${info.file}; ` +
            `the folder mixes two checkpoints: keep one set of *.safetensors files`,
          "checkpoint",
        );
      }
      tensors.set(name, info);
    }
  }
  for (const [name, shard] of index ?? []) {
    if (tensors.get(name)?.file !== path.join(dir, shard)) {
      throw new TachyonError(
        `${path.join(dir, INDEX)} says tensor "${name}" is in ${shard}, but ${path.join(dir, shard)} does not have it; ` +
          `re-download the checkpoint`,
        "checkpoint",
      );
    }
  }
  return tensors;
}

function noSafetensors(dir: string, names: string[]): TachyonError {
  const pickles = names.filter((n) => /\.(bin|pth|pt|ckpt)$/.test(n));
  const found = pickles.length > 0 ? `it has ${pickles.join(", ")}, ` : "";
  return new TachyonError(
    `no model.safetensors, ${INDEX} or *.safetensors in ${dir}; ${found}` +
      `PyTorch pickles (.bin/.pth) are not supported: convert them in Python with ` +
      `model.save_pretrained(dir, safe_serialization=True)`,
    "checkpoint",
  );
}
