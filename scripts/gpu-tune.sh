#!/usr/bin/env bash
# Tuning sweep of kernel constants and settings: every define set in DEFINES (sets separated by
# spaces, constants within a set by commas, "-" for the defaults, through TACHYON_KERNEL_DEFINES)
# and every environment set in ENVS (sets separated by spaces, VAR=value within a set joined by
# "+", "-" for none) against every format in WEIGHTS and shape in SHAPES. Run via
# scripts/gpu-run.sh after the GPU tests pass, e.g.
#   DEFINES="- QDEPTH=2 QMINBLOCKS=2" WEIGHTS="int4-g128 int8" bash scripts/gpu-tune.sh
#   DEFINES="GEMV_PREFETCH=4,GEMV_UNROLL=4 -" WEIGHTS=bf16 SHAPES="llama-3-8b llama-3.2-1b" bash scripts/gpu-tune.sh
#   DEFINES=- VERIFY_ROWS=1,8,16 ENVS="TACHYON_QMMA_FROM_ROWS=17 -" bash scripts/gpu-tune.sh
set -uo pipefail
DEFINES=${DEFINES:-"- QDEPTH_SMALL=1 QDEPTH=2 QMINBLOCKS=2 QMINBLOCKS=4"}
WEIGHTS=${WEIGHTS:-"int4-g128 int8 fp8"}
VERIFY_ROWS=${VERIFY_ROWS:-1,16}
for e in ${ENVS:--}; do for d in $DEFINES; do for shape in ${SHAPES:-llama-3-8b}; do for w in $WEIGHTS; do
  defines=$d
  [ "$d" = "-" ] && defines=""
  settings=${e//+/ }
  [ "$e" = "-" ] && settings=""
  env $settings TACHYON_KERNEL_DEFINES=$defines node dist/src/cli/main.js bench --shape "$shape" --weights "$w" --device cuda \
    --ttft-tokens 0 --verify-rows "$VERIFY_ROWS" 2>&1 | grep tok/s | sed "s/^/$e $d /"
done; done; done; done
