#!/usr/bin/env bash
# Tuning sweep of kernel constants: every define set in DEFINES (sets separated by spaces,
# constants within a set by commas, "-" for the defaults) and every environment setting in ENVS
# (items separated by spaces, each "VAR=value" settings joined by "+", "-" for none) against every format in WEIGHTS and
# shape in SHAPES, through TACHYON_KERNEL_DEFINES. Run via scripts/gpu-run.sh after the GPU tests
# pass, e.g.
#   DEFINES="- QDEPTH=2 QMINBLOCKS=2" WEIGHTS="int4-g128 int8" bash scripts/gpu-tune.sh
#   DEFINES="GEMV_PREFETCH=4,GEMV_UNROLL=4 -" WEIGHTS=bf16 SHAPES="llama-3-8b llama-3.2-1b" bash scripts/gpu-tune.sh
#   DEFINES=- ENVS="TACHYON_PREFETCH_MB=0,0,0 -" bash scripts/gpu-tune.sh
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
