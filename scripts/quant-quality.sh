#!/usr/bin/env bash
# Held-out perplexity (and MTP acceptance) of the embedded model quantized every way tachyon
# quantizes, on the CPU backend. Calibration text for GPTQ: the repository's own training/*.py
# (code the model never trained on, and not the held-out sample). Writes one JSON file.
# Usage: scripts/quant-quality.sh OUT.json   (after npm run build)
set -euo pipefail
out_json=${1:?usage: scripts/quant-quality.sh OUT.json}
tachyon="node dist/src/cli/main.js"
model=models/tachyon-code-tiny
heldout=test/fixtures/embedded/heldout-sample.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat training/*.py > "$work/calibration.py"

configs=(
  "bf16|"
  "fp8|--to fp8"
  "int8|--to int8"
  "int4-g128-rtn|--to int4 --group-size 128"
  "int4-g128-gptq|--to int4 --group-size 128 --method gptq"
  "int4-g64-rtn|--to int4 --group-size 64"
  "int4-g64-gptq|--to int4 --group-size 64 --method gptq"
  "int4-g32-rtn|--to int4 --group-size 32"
  "int4-g32-gptq|--to int4 --group-size 32 --method gptq"
  "int2-g64-rtn|--to int2 --group-size 64"
  "int2-g64-gptq|--to int2 --group-size 64 --method gptq"
  "int2-g32-rtn|--to int2 --group-size 32"
  "int2-g32-gptq|--to int2 --group-size 32 --method gptq"
  "int4-g128-gptq-head|--to int4 --group-size 128 --method gptq --quantize-lm-head"
  "int2-g32-gptq-keep|--to int2 --group-size 32 --method gptq --keep model.layers.0. --keep mlp.down_proj"
)
for entry in "${configs[@]}"; do
  name=${entry%%|*}
  flags=${entry#*|}
  dir=$model
  seconds=0
  if [ -n "$flags" ]; then
    dir=$work/$name
    [[ $flags == *gptq* ]] && flags="$flags --calibration $work/calibration.py"
    start=$(date +%s.%N)
    $tachyon quantize --model $model $flags --out "$dir" 2> "$work/$name.log"
    seconds=$(printf '%.2f' "$(echo "$(date +%s.%N) - $start" | bc)")
  fi
  bytes=$(cat "$dir"/*.safetensors | wc -c)
  $tachyon eval --model "$dir" --file $heldout --device cpu --json > "$work/$name.json"
  echo "{\"name\":\"$name\",\"flags\":\"${entry#*|}\",\"quantize_seconds\":$seconds,\"safetensors_bytes\":$bytes,\"eval\":$(cat "$work/$name.json")}" > "$work/$name.row"
  echo "$name: $(grep -o '"perplexity": [0-9.]*' "$work/$name.json")" >&2
done
node -e '
const fs = require("fs");
const [dir, out, ...names] = process.argv.slice(1);
const rows = names.map((n) => JSON.parse(fs.readFileSync(`${dir}/${n}.row`, "utf8")));
const base = rows[0].eval.perplexity;
for (const r of rows) r.delta_percent = +(100 * (r.eval.perplexity / base - 1)).toFixed(2);
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString().slice(0, 10), rows }, null, 2) + "\n");
' "$work" "$out_json" $(for e in "${configs[@]}"; do echo "${e%%|*}"; done)
