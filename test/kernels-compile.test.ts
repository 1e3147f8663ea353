/**
 * Every CUDA kernel source compiles with nvcc for Hopper (sm_90a) and for a generic older target,
 * for the head dimensions models use. Needs no GPU, only the CUDA toolkit (CI has nvcc); on a
 * machine without nvcc the test is skipped, except in CI where it must run.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { kernelDir, kernelSources } from "../src/backends/cuda/kernels.js";

const nvcc = spawnSync("nvcc", ["--version"], { encoding: "utf8" });
const haveNvcc = nvcc.status === 0;

test(
  "CUDA kernels compile with nvcc",
  { skip: !haveNvcc && !process.env.CI ? "nvcc not installed" : false },
  () => {
    assert.ok(haveNvcc, "nvcc is required in CI to check the kernels");
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "tachyon-nvcc-"));
    const jobs: { name: string; args: string[] }[] = [];
    for (const name of kernelSources) {
      for (const [arch, headDim, group] of [
        ["sm_90a", 128, 4],
        ["sm_90a", 64, 1],
        ["sm_80", 16, 2],
      ] as const) {
        jobs.push({
          name: `${name} ${arch} HEAD_DIM=${headDim}`,
          args: [
            "-cubin",
            `-arch=${arch}`,
            "-std=c++17",
            `-DHEAD_DIM=${headDim}`,
            `-DGROUP=${group}`,
            "-include",
            path.join(kernelDir, "common.cuh"),
            "-x",
            "cu",
            path.join(kernelDir, `${name}.cu`),
            "-o",
            path.join(out, `${name}-${arch}-${headDim}.cubin`),
          ],
        });
      }
    }
    for (const job of jobs) {
      const r = spawnSync("nvcc", job.args, { encoding: "utf8" });
      assert.equal(r.status, 0, `${job.name}:\n${r.stderr}`);
    }
    fs.rmSync(out, { recursive: true, force: true });
  },
);
