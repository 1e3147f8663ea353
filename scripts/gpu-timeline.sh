#!/usr/bin/env bash
# The kernel timeline of decode steps (TACHYON_TIMELINE=1, src/backends/cuda/timeline.ts): for each
# format in WEIGHTS, what every kernel costs inside the graph, then the same bench without the
# timeline (its recording costs a little), and with PDL_COMPARE=1 the first format without
# dependent launch. JSON under $OUT. Run via scripts/gpu-run.sh (carry .device and dist), e.g.
#   WEIGHTS="int4-g128 int8 bf16" PROMPT=128 bash scripts/gpu-timeline.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
bench() {
  node dist/src/cli/main.js bench --shape "${SHAPE:-llama-3-8b}" --device cuda --ttft-tokens 0 \
    --prompt-tokens "${PROMPT:-128}" "$@" 2>&1 >/dev/null | grep -v "^bench "
}
for w in ${WEIGHTS:-int4-g128 int8}; do
  echo "== $w, timeline"
  TACHYON_TIMELINE=1 bench --weights "$w" --out "$out/timeline-$w.json"
  echo "== $w, no timeline"
  bench --weights "$w"
done
if [ "${PDL_COMPARE:-0}" = 1 ]; then
  w=${WEIGHTS%% *}
  w=${w:-int4-g128}
  echo "== $w, timeline, without dependent launch"
  TACHYON_PDL=0 TACHYON_TIMELINE=1 bench --weights "$w" --out "$out/timeline-$w-nopdl.json"
fi
