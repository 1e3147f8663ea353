/**
 * Run-time compilation of tachyon's CUDA C++ kernels with NVRTC, for the GPU at hand, with model
 * dimensions baked in as compile-time constants. Compiled images are cached on disk by a hash of
 * everything that affects them, so a second start compiles nothing.
 */
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import koffi, { type LibraryHandle } from "koffi";
import { CudaError } from "./driver.js";

const candidates = [
  process.env.TACHYON_NVRTC,
  "libnvrtc.so.13",
  "/usr/local/cuda/lib64/libnvrtc.so.13",
  "libnvrtc.so.12",
  "/usr/local/cuda/lib64/libnvrtc.so.12",
  "libnvrtc.so",
].filter((x): x is string => !!x);

type Fn = (...args: unknown[]) => number;

export class Nvrtc {
  private readonly f: Record<string, Fn> = {};
  readonly version: string;

  private constructor(lib: LibraryHandle) {
    for (const d of [
      "int nvrtcVersion(_Out_ int *major, _Out_ int *minor)",
      "int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, void *headers, void *includeNames)",
      "int nvrtcCompileProgram(void *prog, int numOptions, const char **options)",
      "int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *size)",
      "int nvrtcGetProgramLog(void *prog, _Out_ uint8_t *log)",
      "int nvrtcGetCUBINSize(void *prog, _Out_ size_t *size)",
      "int nvrtcGetCUBIN(void *prog, _Out_ uint8_t *cubin)",
      "int nvrtcDestroyProgram(_Inout_ void **prog)",
    ]) {
      this.f[/\s(nvrtc\w+)\(/.exec(d)![1]] = lib.func(d) as Fn;
    }
    const major = [0];
    const minor = [0];
    this.f.nvrtcVersion(major, minor);
    this.version = `${major[0]}.${minor[0]}`;
  }

  static load(): Nvrtc {
    for (const c of candidates) {
      try {
        return new Nvrtc(koffi.load(c));
      } catch {
        // try the next name
      }
    }
    throw new CudaError(
      `NVRTC (the CUDA run-time compiler) was not found (tried ${candidates.join(", ")}); ` +
        `install the CUDA toolkit or set TACHYON_NVRTC to libnvrtc.so's path`,
    );
  }

  /** Compiles `source` for `arch` (e.g. "sm_90a") with `defines`; returns the cubin. */
  compile(name: string, source: string, arch: string, defines: Record<string, number | string>): Buffer {
    const options = [
      `--gpu-architecture=${arch}`,
      "-std=c++17",
      "--device-as-default-execution-space",
      ...Object.entries(defines).map(([k, v]) => `-D${k}=${v}`),
    ];
    const key = crypto
      .createHash("sha256")
      .update(JSON.stringify([source, options, this.version]))
      .digest("hex")
      .slice(0, 32);
    const file = path.join(cacheDir(), `${name}-${key}.cubin`);
    if (fs.existsSync(file)) return fs.readFileSync(file);

    const prog = [null] as unknown[];
    this.check(
      this.f.nvrtcCreateProgram(prog, source, `${name}.cu`, 0, null, null),
      "nvrtcCreateProgram",
      name,
    );
    try {
      const rc = this.f.nvrtcCompileProgram(prog[0], options.length, options);
      if (rc !== 0) {
        throw new CudaError(`kernel ${name} failed to compile for ${arch}:\n${this.log(prog[0])}`);
      }
      const size = [0];
      this.check(this.f.nvrtcGetCUBINSize(prog[0], size), "nvrtcGetCUBINSize", name);
      const cubin = Buffer.alloc(Number(size[0]));
      this.check(this.f.nvrtcGetCUBIN(prog[0], cubin), "nvrtcGetCUBIN", name);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file + ".tmp", cubin);
      fs.renameSync(file + ".tmp", file);
      return cubin;
    } finally {
      this.f.nvrtcDestroyProgram(prog);
    }
  }

  private log(prog: unknown): string {
    const size = [0];
    this.f.nvrtcGetProgramLogSize(prog, size);
    const buf = Buffer.alloc(Number(size[0]));
    this.f.nvrtcGetProgramLog(prog, buf);
    return buf.toString("utf8").replace(/\0+$/, "");
  }

  private check(rc: number, call: string, name: string): void {
    if (rc !== 0) throw new CudaError(`${call} failed (NVRTC error ${rc}) for kernel ${name}`);
  }
}

function cacheDir(): string {
  const base = process.env.TACHYON_CACHE ?? process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache");
  return path.join(base, process.env.TACHYON_CACHE ? "" : "tachyon", "kernels");
}
