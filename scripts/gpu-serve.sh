#!/usr/bin/env bash
# The server on the GPU: aggregate and per-stream speed at 1, 8, 32 and 64 concurrent streams on
# a random-weight Llama-3-8B shape (bench/load-test.ts starts `tachyon serve --shape`). SPEC=ngram
# makes every request speculate (SPEC=mtp needs a model with MTP modules; the shapes have none).
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
spec=${SPEC:-}
node dist/bench/load-test.js --sweep "${SWEEP:-1,8,32,64}" --rounds 2 --max-tokens 256 --prompt-tokens 128 --ignore-eos \
  ${spec:+--spec "$spec"} --out "$out/server-llama-3-8b${spec:+-spec-$spec}.json" \
  -- --shape llama-3-8b --device cuda --kv-cache-tokens 32768 --max-context 1024 2>&1 | tail -20
