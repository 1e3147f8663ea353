#!/usr/bin/env bash
# The GPU machine's check-and-measure run: CUDA tests against the CPU backend, the embedded model
# on the GPU, then benchmarks of each SHAPES × WEIGHTS (with verify-step costs), optionally also
# without dependent launch (PDL_COMPARE=1). Writes logs and bench JSON under $OUT. Run via
# scripts/gpu-run.sh (carry .device and dist).
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  node --test --test-reporter=spec dist/test-gpu/ 2>&1 | tee "$out/gpu-test.log" | grep -E "^(✔|✖|ℹ (pass|fail))|^# .*prompt 0"
  node dist/src/cli/main.js run --device cuda --temperature 0 --max-tokens 48 2>&1 | tail -1
  node dist/src/cli/main.js run --device cuda --temperature 0.8 --top-p 0.95 --seed 1 --max-tokens 256 2>&1 | tail -1
  node dist/src/cli/main.js eval --device cuda --file test/fixtures/embedded/heldout-sample.txt --window 2048 --mtp-prompts 4 2>&1 | head -1
  node scripts/spec-embedded.mjs --device cuda --out "$out/spec-embedded-cuda.json" 2>&1 | tail -12
fi
for shape in ${SHAPES:-llama-3.2-1b llama-3-8b}; do
  for w in ${WEIGHTS:-bf16}; do
    node dist/src/cli/main.js bench --shape "$shape" --weights "$w" --device cuda --verify-rows "${VERIFY_ROWS:-1,2,4,8,16}" \
      --out "$out/bench-$shape-$w.json" ${BENCH_FLAGS:-} 2>&1 | grep "tok/s"
    if [ "${PDL_COMPARE:-0}" = 1 ]; then
      TACHYON_PDL=0 node dist/src/cli/main.js bench --shape "$shape" --weights "$w" --device cuda --ttft-tokens 0 2>&1 |
        grep "tok/s" | sed 's/^/without dependent launch: /'
    fi
  done
done
