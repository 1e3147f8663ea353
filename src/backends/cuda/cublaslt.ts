/**
 * Tensor-core matrix products for prefill through cuBLASLt: Y[M, N] = X[M, K] · W[N, K]ᵀ with
 * bf16 operands, float32 accumulation and output. Decode steps never come here (GEMV kernels
 * stream the weights faster at small M); a prompt's rows do, where the work is arithmetic.
 * One algorithm is chosen per shape by cuBLASLt's heuristic and remembered.
 */
import koffi, { type LibraryHandle } from "koffi";
import type { CudaContext } from "./context.js";
import type { DevicePtr } from "./driver.js";
import { CudaError } from "./driver.js";

const CUDA_R_32F = 0;
const CUDA_R_16BF = 14;
const CUBLAS_COMPUTE_32F = 68;
const CUBLASLT_MATMUL_DESC_TRANSA = 3;
const CUBLASLT_MATMUL_DESC_TRANSB = 4;
const CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;
const CUBLAS_OP_N = 0;
const CUBLAS_OP_T = 1;
/** sizeof(cublasLtMatmulHeuristicResult_t): algo (64) + workspaceSize + state + wavesCount + reserved. */
const HEURISTIC_BYTES = 96;
const WORKSPACE_BYTES = 32 << 20;

type Fn = (...args: unknown[]) => number;

interface Plan {
  desc: unknown;
  a: unknown;
  b: unknown;
  d: unknown;
  algo: Buffer;
}

export class CublasLt {
  private readonly f: Record<string, Fn> = {};
  private readonly handle: unknown;
  private readonly workspace: DevicePtr;
  private readonly plans = new Map<string, Plan>();
  private readonly one = Float32Array.of(1);
  private readonly zero = Float32Array.of(0);

  private constructor(
    lib: LibraryHandle,
    private readonly ctx: CudaContext,
  ) {
    for (const d of [
      "int cublasLtCreate(_Out_ void **handle)",
      "int cublasLtMatmulDescCreate(_Out_ void **desc, int computeType, int scaleType)",
      "int cublasLtMatmulDescSetAttribute(void *desc, int attr, const void *buf, size_t size)",
      "int cublasLtMatrixLayoutCreate(_Out_ void **layout, int type, uint64_t rows, uint64_t cols, int64_t ld)",
      "int cublasLtMatmulPreferenceCreate(_Out_ void **pref)",
      "int cublasLtMatmulPreferenceSetAttribute(void *pref, int attr, const void *buf, size_t size)",
      "int cublasLtMatmulAlgoGetHeuristic(void *handle, void *desc, void *a, void *b, void *c, void *d, void *pref, int count, _Out_ uint8_t *results, _Out_ int *returned)",
      "int cublasLtMatmul(void *handle, void *desc, const void *alpha, uint64_t A, void *Adesc, uint64_t B, void *Bdesc, const void *beta, uint64_t C, void *Cdesc, uint64_t D, void *Ddesc, const void *algo, uint64_t workspace, size_t workspaceSize, void *stream)",
    ]) {
      this.f[/\s(cublasLt\w+)\(/.exec(d)![1]] = lib.func(d) as Fn;
    }
    const h = [null] as unknown[];
    this.check("cublasLtCreate", h);
    this.handle = h[0];
    this.workspace = ctx.alloc(WORKSPACE_BYTES, "the cuBLASLt workspace");
  }

  /** cuBLASLt for this context, or null (with the reason) where the library is missing. */
  static tryLoad(ctx: CudaContext): { lt: CublasLt | null; reason: string } {
    for (const name of [
      "libcublasLt.so.13",
      "/usr/local/cuda/lib64/libcublasLt.so.13",
      "libcublasLt.so.12",
      "libcublasLt.so",
    ]) {
      let lib: LibraryHandle;
      try {
        lib = koffi.load(name);
      } catch {
        continue;
      }
      return { lt: new CublasLt(lib, ctx), reason: "" };
    }
    return { lt: null, reason: "libcublasLt not found: prefill uses the GEMV kernels (slower)" };
  }

  /**
   * y [M, N] (float32, row-major) = x [M, K] (bf16, row-major) · w [N, K]ᵀ (bf16, row-major).
   * In cuBLAS's column-major terms: yᵀ (N×M) = wᵀᵀ… i.e. D = op(A)·B with A = w viewed as K×N
   * transposed, B = xᵀ as K×M. With `add` (float32 [M, N]), y = add + x · wᵀ (C = add, beta 1).
   */
  matmul(y: DevicePtr, x: DevicePtr, w: DevicePtr, M: number, N: number, K: number, add?: DevicePtr): void {
    const plan = this.plan(M, N, K);
    this.check(
      "cublasLtMatmul",
      this.handle,
      plan.desc,
      this.one,
      w,
      plan.a,
      x,
      plan.b,
      add ? this.one : this.zero,
      add ?? y,
      plan.d,
      y,
      plan.d,
      plan.algo,
      this.workspace,
      WORKSPACE_BYTES,
      this.ctx.stream,
    );
  }

  private plan(M: number, N: number, K: number): Plan {
    const key = `${M}x${N}x${K}`;
    const known = this.plans.get(key);
    if (known) return known;
    const out = () => [null] as unknown[];
    const desc = out();
    this.check("cublasLtMatmulDescCreate", desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    this.check(
      "cublasLtMatmulDescSetAttribute",
      desc[0],
      CUBLASLT_MATMUL_DESC_TRANSA,
      Int32Array.of(CUBLAS_OP_T),
      4,
    );
    this.check(
      "cublasLtMatmulDescSetAttribute",
      desc[0],
      CUBLASLT_MATMUL_DESC_TRANSB,
      Int32Array.of(CUBLAS_OP_N),
      4,
    );
    const a = out();
    const b = out();
    const d = out();
    this.check("cublasLtMatrixLayoutCreate", a, CUDA_R_16BF, K, N, K);
    this.check("cublasLtMatrixLayoutCreate", b, CUDA_R_16BF, K, M, K);
    this.check("cublasLtMatrixLayoutCreate", d, CUDA_R_32F, N, M, N);
    const pref = out();
    this.check("cublasLtMatmulPreferenceCreate", pref);
    this.check(
      "cublasLtMatmulPreferenceSetAttribute",
      pref[0],
      CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
      BigUint64Array.of(BigInt(WORKSPACE_BYTES)),
      8,
    );
    const results = Buffer.alloc(HEURISTIC_BYTES);
    const returned = [0];
    this.check(
      "cublasLtMatmulAlgoGetHeuristic",
      this.handle,
      desc[0],
      a[0],
      b[0],
      d[0],
      d[0],
      pref[0],
      1,
      results,
      returned,
    );
    if (returned[0] < 1) throw new CudaError(`cuBLASLt has no algorithm for a ${key} bf16 matrix product`);
    const plan: Plan = { desc: desc[0], a: a[0], b: b[0], d: d[0], algo: results.subarray(0, 64) };
    this.plans.set(key, plan);
    return plan;
  }

  private check(name: string, ...args: unknown[]): void {
    const rc = this.f[name](...args);
    if (rc !== 0) throw new CudaError(`${name} failed with cuBLAS status ${rc}`);
  }
}
