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
import { kernelDir, kernelSources, variantSources } from "../src/backends/cuda/kernels.js";
import { qgemvFormat } from "../src/backends/cuda/quant-layout.js";

const nvcc = spawnSync("nvcc", ["--version"], { encoding: "utf8" });
const haveNvcc = nvcc.status === 0;

test(
  "CUDA kernels compile with nvcc",
  { skip: !haveNvcc && !process.env.CI ? "nvcc not installed" : false },
  () => {
    assert.ok(haveNvcc, "nvcc is required in CI to check the kernels");
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "tachyon-nvcc-"));
    const jobs: { name: string; args: string[] }[] = [];
    const job = (name: string, arch: string, defines: Record<string, number>) => {
      const tag = Object.entries(defines)
        .map(([k, v]) => `${k}=${v}`)
        .join(" ");
      jobs.push({
        name: `${name} ${arch} ${tag}`,
        args: [
          "-cubin",
          `-arch=${arch}`,
          "-std=c++17",
          ...Object.entries(defines).map(([k, v]) => `-D${k}=${v}`),
          "-include",
          path.join(kernelDir, "common.cuh"),
          "-x",
          "cu",
          path.join(kernelDir, `${name}.cu`),
          "-o",
          path.join(out, `${name}-${arch}-${jobs.length}.cubin`),
        ],
      });
    };
    for (const name of kernelSources) {
      job(name, "sm_90a", { HEAD_DIM: 128, GROUP: 4 });
      job(name, "sm_90a", { HEAD_DIM: 64, GROUP: 1 });
      job(name, "sm_80", { HEAD_DIM: 16, GROUP: 2 });
    }
    // With the kernel timeline's recording (TACHYON_TIMELINE, kernels/common.cuh).
    for (const name of [...kernelSources, ...variantSources])
      job(name, "sm_90a", { HEAD_DIM: 128, GROUP: 4, QFMT: 1, TIMELINE: 1024 });
    for (const name of variantSources) {
      for (const qfmt of Object.values(qgemvFormat)) {
        job(name, "sm_90a", { QFMT: qfmt });
        job(name, "sm_80", { QFMT: qfmt });
      }
    }
    for (const { name, args } of jobs) {
      const r = spawnSync("nvcc", args, { encoding: "utf8" });
      assert.equal(r.status, 0, `${name}:\n${r.stderr}`);
    }
    fs.rmSync(out, { recursive: true, force: true });
  },
);
