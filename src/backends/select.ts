/** Picks the backend for a --device setting; "auto" takes the GPU when a driver and a GPU are present. */
import type { Backend } from "./backend.js";
import { CpuBackend } from "./cpu/cpu-backend.js";
import { CudaBackend } from "./cuda/cuda-backend.js";
import type { ModelConfig } from "../model/config.js";

export type Device = "auto" | "cpu" | "cuda";

/** Rows one CUDA step may hold: the prefill chunk, and the longest sequence scored at once. */
export const cudaMaxRows = 512;

export function createBackend(device: Device, config: ModelConfig): { backend: Backend; note: string } {
  if (device === "cpu") return { backend: new CpuBackend(), note: "cpu" };
  if (device === "auto") {
    const probe = CudaBackend.probe();
    if (!probe.ok) return { backend: new CpuBackend(), note: `cpu (${probe.reason})` };
  }
  const cuda = CudaBackend.create(config, { maxRows: cudaMaxRows });
  return { backend: cuda, note: `cuda (${cuda.deviceName})` };
}
