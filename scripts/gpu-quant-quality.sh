#!/usr/bin/env bash
# Held-out perplexity of the embedded model quantized by `tachyon quantize`, on DEVICES (default
# the GPU: its kernels, int8-rounded activations for integer schemes; "cuda cpu" adds the CPU
# reference, which takes minutes). Quantization is deterministic, so the CPU figures can be
# taken on any machine with the same script.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
model=models/tachyon-code-tiny
text=test/fixtures/embedded/heldout-sample.txt
calib=/tmp/calibration.txt
cat training/*.py src/engine/*.ts > "$calib"
eval_ppl() { node dist/src/cli/main.js eval --model "$1" --device "$2" --file "$text" --window 2048 --mtp-prompts 0 2>&1 | grep -o "perplexity [0-9.]*"; }
ppls() { for d in ${DEVICES:-cuda}; do echo -n "$d $(eval_ppl "$1" "$d"); "; done; }
echo "bf16: $(ppls $model)"
for spec in "fp8" "int8" "int4 --group-size 128" "int4 --group-size 32" "int2 --group-size 32" \
  "int4 --group-size 128 --method gptq --calibration $calib" "int2 --group-size 32 --method gptq --calibration $calib"; do
  dir=/tmp/q-$(echo "$spec" | tr -cd 'a-z0-9')
  rm -rf "$dir"
  node dist/src/cli/main.js quantize --model $model --to $spec --out "$dir" >/dev/null 2>&1 || { echo "$spec: quantize failed"; continue; }
  echo "$spec: $(ppls "$dir")"
done 2>&1 | sed "s#$calib#CALIB#" | tee "$out/quant-quality-gpu.txt"
