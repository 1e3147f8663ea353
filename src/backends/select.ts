/** Picks the backend for a --device setting; "auto" takes the GPU when a driver and a GPU are present. */
import type { Backend } from "./backend.js";
import { CpuBackend } from "./cpu/cpu-backend.js";
import { CudaBackend } from "./cuda/cuda-backend.js";
import type { ModelConfig } from "../model/config.js";
import { TachyonError } from "../errors.js";

export type Device = "auto" | "cpu" | "cuda";

/** Rows one CUDA step may hold: the prefill chunk; longer sequences are scored in chunks of it. */
export const cudaMaxRows = 512;

export function createBackend(device: Device, config: ModelConfig): { backend: Backend; note: string } {
  if (device === "cpu") return { backend: new CpuBackend(), note: "cpu" };
  if (device === "auto") {
    const probe = CudaBackend.probe();
    if (!probe.ok) return { backend: new CpuBackend(), note: `cpu (${probe.reason})` };
    try {
      return cudaBackend(config);
    } catch (e) {
      // A GPU that cannot be used (no NVRTC, an unsupported GPU): say why and carry on on the CPU.
      if (!(e instanceof TachyonError)) throw e;
      return { backend: new CpuBackend(), note: `cpu (the GPU is not usable: ${e.message})` };
    }
  }
  return cudaBackend(config);
}

function cudaBackend(config: ModelConfig): { backend: Backend; note: string } {
  const cuda = CudaBackend.create(config, { maxRows: cudaMaxRows });
  return { backend: cuda, note: `cuda (${cuda.deviceName})` };
}
