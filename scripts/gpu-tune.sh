# Tuning sweep of the quantized GEMV (kernels/qgemv.cu) on the 8B shape: chunks in flight per lane
# (QDEPTH) and blocks per multiprocessor the registers must allow (QMINBLOCKS), M = 1 and 16.
# Run via scripts/gpu-run.sh after the quantized GPU tests pass.
set -uo pipefail
node --test --test-reporter=spec --test-name-pattern="quantized" dist/test-gpu/ 2>&1 | grep -E "^(✔|✖|ℹ (pass|fail))"
for d in QDEPTH=1 QDEPTH=2 QDEPTH=4 QMINBLOCKS=2 QMINBLOCKS=3 QMINBLOCKS=4; do for w in int4-g128 int8 fp8; do
  TACHYON_KERNEL_DEFINES=$d node dist/src/cli/main.js bench --shape llama-3-8b --weights $w --device cuda --ttft-tokens 0 \
    --verify-rows 1,16 2>&1 | grep tok/s | sed "s/^/$d /"
done; done
