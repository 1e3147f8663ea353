/**
 * Writes a checkpoint's tensors as Hugging Face names them: one model.safetensors, or shards
 * model-0000i-of-0000n.safetensors with a model.safetensors.index.json when the tensors exceed
 * one shard. Tensors are held in memory one shard at a time, so host memory stays bounded.
 */
import fs from "node:fs";
import path from "node:path";
import { writeSafetensors, type TensorToWrite } from "./safetensors.js";

const DEFAULT_SHARD_BYTES = 2 * 1024 ** 3;

export class CheckpointWriter {
  private pending: Record<string, TensorToWrite> = {};
  private pendingBytes = 0;
  /** Tensor names of each shard written so far, in order. */
  private readonly shards: string[][] = [];
  private totalBytes = 0;

  constructor(
    private readonly dir: string,
    private readonly shardBytes = DEFAULT_SHARD_BYTES,
  ) {}

  add(name: string, tensor: TensorToWrite): void {
    const bytes = tensor.data.byteLength;
    if (this.pendingBytes > 0 && this.pendingBytes + bytes > this.shardBytes) this.flush();
    this.pending[name] = tensor;
    this.pendingBytes += bytes;
    this.totalBytes += bytes;
  }

  /** Writes what is pending and names the shards; returns the files written. */
  finish(): string[] {
    this.flush();
    const n = this.shards.length;
    if (n === 1) {
      fs.renameSync(this.shardPath(0), path.join(this.dir, "model.safetensors"));
      return ["model.safetensors"];
    }
    const names = this.shards.map((_, i) => `model-${pad(i + 1)}-of-${pad(n)}.safetensors`);
    const weightMap: Record<string, string> = {};
    this.shards.forEach((tensors, i) => {
      fs.renameSync(this.shardPath(i), path.join(this.dir, names[i]));
      for (const t of tensors) weightMap[t] = names[i];
    });
    const index = { metadata: { total_size: this.totalBytes }, weight_map: weightMap };
    fs.writeFileSync(
      path.join(this.dir, "model.safetensors.index.json"),
      JSON.stringify(index, null, 2) + "\n",
    );
    return [...names, "model.safetensors.index.json"];
  }

  private flush(): void {
    if (this.pendingBytes === 0 && this.shards.length > 0) return;
    writeSafetensors(this.shardPath(this.shards.length), this.pending, { format: "pt" });
    this.shards.push(Object.keys(this.pending));
    this.pending = {};
    this.pendingBytes = 0;
  }

  private shardPath(i: number): string {
    return path.join(this.dir, `shard-${i}.partial.safetensors`);
  }
}

function pad(i: number): string {
  return String(i).padStart(5, "0");
}
