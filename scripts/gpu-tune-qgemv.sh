set -uo pipefail
bash scripts/gpu-run.sh true
out=/tmp/out; mkdir -p $out
node --test --test-name-pattern="quantized" dist/test-gpu/ 2>&1 | grep -E "^(✔|✖|ℹ (pass|fail))|Error|relative" | head -20
for d in 1 2 4; do for w in int4-g128 int8; do
  TACHYON_KERNEL_DEFINES=QDEPTH=$d node dist/src/cli/main.js bench --shape llama-3-8b --weights $w --device cuda --ttft-tokens 0 --gen-tokens 128 2>&1 | grep tok/s | sed "s/^/QDEPTH=$d /"
done; done
