#!/usr/bin/env bash
# Held-out perplexity of the embedded model quantized by `tachyon quantize`, on the GPU (its
# kernels, int8-rounded activations for integer schemes) and on the CPU (the reference), same run.
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
model=models/tachyon-code-tiny
text=test/fixtures/embedded/heldout-sample.txt
calib=/tmp/calibration.txt
cat training/*.py src/engine/*.ts > "$calib"
eval_ppl() { node dist/src/cli/main.js eval --model "$1" --device "$2" --file "$text" --window 2048 2>&1 | grep -o "perplexity [0-9.]*"; }
echo "bf16: gpu $(eval_ppl $model cuda), cpu $(eval_ppl $model cpu)"
for spec in "fp8" "int8" "int4 --group-size 128" "int4 --group-size 32" "int2 --group-size 32" \
  "int4 --group-size 128 --method gptq --calibration $calib" "int2 --group-size 32 --method gptq --calibration $calib"; do
  dir=/tmp/q-$(echo "$spec" | tr -cd 'a-z0-9')
  node dist/src/cli/main.js quantize --model $model --to $spec --out "$dir" >/dev/null 2>&1 || { echo "$spec: quantize failed"; continue; }
  echo "$spec: gpu $(eval_ppl "$dir" cuda), cpu $(eval_ppl "$dir" cpu)"
done 2>&1 | sed "s#$calib#CALIB#" | tee "$out/quant-quality-gpu.txt"
