#!/usr/bin/env bash
# What kernels cost inside the captured decode graph, measured by leaving them out: for each set in
# SKIPS (kernel names separated by commas, "-" for none), the decode speed with those kernels never
# launched (TACHYON_SKIP; the output is garbage, the time is not). Run via scripts/gpu-run.sh, e.g.
#   SKIPS="- rmsnorm quantize_x attention_decode qgemv,qgate_up" WEIGHTS=int4-g128 bash scripts/gpu-skip.sh
set -uo pipefail
SKIPS=${SKIPS:-"- rmsnorm quantize_x attention_decode rmsnorm,quantize_x,attention_decode qgemv qgate_up qgemv,qgate_up"}
for shape in ${SHAPES:-llama-3-8b}; do for w in ${WEIGHTS:-int4-g128}; do for skip in $SKIPS; do
  names=$skip
  [ "$skip" = "-" ] && names=""
  TACHYON_SKIP=$names node dist/src/cli/main.js bench --shape "$shape" --weights "$w" --device cuda \
    --gen-tokens "${GEN_TOKENS:-128}" --ttft-tokens 0 2>&1 >/dev/null | grep tok/s | sed "s/^/skip [$skip] /"
done; done; done
