#!/usr/bin/env bash
# Decode speed for GEMV prefetch/unroll variants (kernel defines), same process setup each time.
set -uo pipefail
for v in ${VARIANTS:-"GEMV_PREFETCH=4,GEMV_UNROLL=4" "GEMV_PREFETCH=2,GEMV_UNROLL=8"}; do
  for shape in ${SHAPES:-llama-3-8b llama-3.2-1b}; do
    TACHYON_KERNEL_DEFINES=$v node dist/src/cli/main.js bench --shape "$shape" --device cuda --gen-tokens 128 --ttft-tokens 0 2>&1 | grep "tok/s" | sed "s/^/$v  /"
  done
done
