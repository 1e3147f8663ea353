/**
 * The CUDA driver API through koffi: only the calls tachyon uses, each checked. A failing call
 * becomes a CudaError naming the call, the driver's error name and what it was doing, e.g.
 * "cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory) while loading lm_head.weight".
 */
import koffi, { type LibraryHandle } from "koffi";
import { TachyonError } from "../../errors.js";

export class CudaError extends TachyonError {
  constructor(message: string) {
    super(message, "cuda");
  }
}

/** Opaque driver handles (contexts, modules, functions, streams, graphs, events). */
export type Handle = unknown;
/** Device memory address. */
export type DevicePtr = number;

type Fn = (...args: unknown[]) => number;

const CU_DEVICE_ATTRIBUTE = {
  multiprocessorCount: 16,
  computeCapabilityMajor: 75,
  computeCapabilityMinor: 76,
  maxSharedMemoryPerBlockOptin: 97,
  l2CacheSize: 38,
} as const;

export interface DeviceInfo {
  name: string;
  computeCapability: [number, number];
  multiprocessors: number;
  totalMemory: number;
  l2CacheBytes: number;
  driverVersion: number;
}

/** The loaded driver library; one per process. */
export class Driver {
  private readonly fns: Record<string, Fn> = {};
  private readonly errorName: (code: number, out: unknown[]) => number;
  private readonly errorString: (code: number, out: unknown[]) => number;

  private constructor(private readonly lib: LibraryHandle) {
    this.errorName = lib.func("int cuGetErrorName(int error, _Out_ const char **pStr)") as never;
    this.errorString = lib.func("int cuGetErrorString(int error, _Out_ const char **pStr)") as never;
    const decls = [
      "int cuInit(unsigned int flags)",
      "int cuDriverGetVersion(_Out_ int *version)",
      "int cuDeviceGetCount(_Out_ int *count)",
      "int cuDeviceGet(_Out_ int *device, int ordinal)",
      "int cuDeviceGetName(_Out_ uint8_t *name, int len, int dev)",
      "int cuDeviceGetAttribute(_Out_ int *pi, int attrib, int dev)",
      "int cuDeviceTotalMem_v2(_Out_ uint64_t *bytes, int dev)",
      "int cuDevicePrimaryCtxRetain(_Out_ void **pctx, int dev)",
      "int cuCtxSetCurrent(void *ctx)",
      "int cuMemGetInfo_v2(_Out_ uint64_t *free, _Out_ uint64_t *total)",
      "int cuMemAlloc_v2(_Out_ uint64_t *dptr, size_t bytesize)",
      "int cuMemFree_v2(uint64_t dptr)",
      "int cuMemHostAlloc(_Out_ void **pp, size_t bytesize, unsigned int flags)",
      "int cuMemFreeHost(void *p)",
      "int cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t bytes)",
      "int cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t bytes)",
      "int cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t bytes, void *stream)",
      "int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t bytes, void *stream)",
      "int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *stream)",
      "int cuMemsetD32Async(uint64_t dst, unsigned int value, size_t count, void *stream)",
      "int cuModuleLoadData(_Out_ void **module, const void *image)",
      "int cuModuleGetFunction(_Out_ void **fn, void *module, const char *name)",
      "int cuModuleGetGlobal_v2(_Out_ uint64_t *dptr, _Out_ size_t *bytes, void *module, const char *name)",
      "int cuFuncSetAttribute(void *fn, int attrib, int value)",
      "int cuLaunchKernel(void *f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem, void *stream, uint64_t params, uint64_t extra)",
      "int cuLaunchKernelEx(uint64_t config, void *f, uint64_t params, uint64_t extra)",
      "int cuOccupancyMaxActiveClusters(_Out_ int *numClusters, void *func, uint64_t config)",
      "int cuStreamCreate(_Out_ void **stream, unsigned int flags)",
      "int cuStreamSynchronize(void *stream)",
      "int cuStreamBeginCapture_v2(void *stream, int mode)",
      "int cuStreamEndCapture(void *stream, _Out_ void **graph)",
      "int cuGraphInstantiateWithFlags(_Out_ void **exec, void *graph, unsigned long long flags)",
      "int cuGraphLaunch(void *exec, void *stream)",
      "int cuGraphDestroy(void *graph)",
      "int cuGraphExecDestroy(void *exec)",
      "int cuEventCreate(_Out_ void **event, unsigned int flags)",
      "int cuEventRecord(void *event, void *stream)",
      "int cuEventSynchronize(void *event)",
      "int cuStreamWaitEvent(void *stream, void *event, unsigned int flags)",
      "int cuEventElapsedTime(_Out_ float *ms, void *start, void *end)",
    ];
    for (const d of decls) {
      const name = /\s(cu\w+)\(/.exec(d)![1];
      this.fns[name] = lib.func(d) as Fn;
    }
  }

  /** Loads libcuda.so.1, or returns null with the reason when there is no usable driver. */
  static tryLoad(): { driver: Driver | null; reason: string } {
    let lib: LibraryHandle;
    try {
      lib = koffi.load("libcuda.so.1");
    } catch {
      return { driver: null, reason: "no CUDA driver (libcuda.so.1 not found)" };
    }
    const driver = new Driver(lib);
    const rc = driver.fns.cuInit(0);
    if (rc !== 0) return { driver: null, reason: `cuInit failed: ${driver.describe(rc)}` };
    const count = [0];
    driver.fns.cuDeviceGetCount(count);
    if (count[0] === 0) return { driver: null, reason: "the CUDA driver sees no GPU" };
    return { driver, reason: "" };
  }

  describe(code: number): string {
    const name = [null] as unknown[];
    const text = [null] as unknown[];
    this.errorName(code, name);
    this.errorString(code, text);
    return `${name[0] ?? `error ${code}`} (${text[0] ?? "unknown"})`;
  }

  /** Calls a driver function and throws a CudaError on failure; `what` says what it was for. */
  call(name: string, args: unknown[], what = ""): void {
    const rc = this.fns[name](...args);
    if (rc !== 0) throw new CudaError(`${name} failed: ${this.describe(rc)}${what ? ` while ${what}` : ""}`);
  }

  /** Calls a driver function; returns whether it succeeded (for calls whose failure is an answer). */
  tryCall(name: string, args: unknown[]): boolean {
    return this.fns[name](...args) === 0;
  }

  deviceInfo(dev: number): DeviceInfo {
    const attr = (a: number): number => {
      const v = [0];
      this.call("cuDeviceGetAttribute", [v, a, dev]);
      return v[0];
    };
    const nameBuf = Buffer.alloc(256);
    this.call("cuDeviceGetName", [nameBuf, 256, dev]);
    const total = [0];
    this.call("cuDeviceTotalMem_v2", [total, dev]);
    const version = [0];
    this.call("cuDriverGetVersion", [version]);
    return {
      name: nameBuf.toString("utf8", 0, nameBuf.indexOf(0)),
      computeCapability: [
        attr(CU_DEVICE_ATTRIBUTE.computeCapabilityMajor),
        attr(CU_DEVICE_ATTRIBUTE.computeCapabilityMinor),
      ],
      multiprocessors: attr(CU_DEVICE_ATTRIBUTE.multiprocessorCount),
      totalMemory: Number(total[0]),
      l2CacheBytes: attr(CU_DEVICE_ATTRIBUTE.l2CacheSize),
      driverVersion: version[0],
    };
  }
}
