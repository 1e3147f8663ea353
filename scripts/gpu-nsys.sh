#!/usr/bin/env bash
# Per-kernel GPU time of decode steps inside their CUDA graphs (Nsight Systems), for the
# "where the time goes" tables: SHAPE × WEIGHTS, 64 generated tokens after a 128-token prompt.
set -uo pipefail
out=${OUT:-/tmp/out}
nsys=$(command -v nsys || ls /usr/local/cuda/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)
[ -n "$nsys" ] || { echo "nsys not found"; exit 1; }
for run in ${RUNS:-llama-3-8b:bf16 llama-3-8b:int4-g128 llama-3.2-1b:bf16}; do
  shape=${run%%:*} w=${run##*:}
  "$nsys" profile --cuda-graph-trace=node -t cuda -o "/tmp/prof-$shape-$w" -f true \
    node dist/src/cli/main.js bench --shape "$shape" --weights "$w" --device cuda --gen-tokens 64 --ttft-tokens 0 >/dev/null 2>&1
  echo "== $shape $w"
  "$nsys" stats --report cuda_gpu_kern_sum --format csv "/tmp/prof-$shape-$w.nsys-rep" 2>/dev/null |
    python3 -c '
import csv,sys
rows=[r for r in csv.reader(sys.stdin) if len(r)>5]
h=rows[0]; rows=rows[1:]
it=h.index("Instances"); tt=h.index("Total Time (ns)"); nm=h.index("Name")
tot=sum(float(r[tt]) for r in rows)
for r in sorted(rows,key=lambda r:-float(r[tt]))[:14]:
  print(f"{r[nm][:40]:40s} {int(r[it]):7d} {float(r[tt])/1e6:9.2f} ms {100*float(r[tt])/tot:5.1f}% avg {float(r[tt])/int(r[it])/1e3:7.2f} us")
' | tee "$out/nsys-$shape-$w.txt"
done
