#!/usr/bin/env bash
# Hardware counters of the decode GEMVs (Nsight Compute) and their machine code, for tuning
# kernels/qgemv.cu: per-launch time and DRAM bytes of every GEMV of one 8B decode step, the
# warp-state breakdown of the M = 1 kernels, and their SASS. Run via scripts/gpu-run.sh.
# RUNS="llama-3-8b:int4-g128 llama-3-8b:int8" KERNELS="regex:qgemv_m1|qgate_up_m1" (per-launch table)
# SECTION_KERNELS="regex:attention_decode" (sections; default KERNELS)
# SASS_FUNCTIONS="qgemv_m1,qgate_up_fold_m1" (machine code dumped; default the one-row GEMVs and the fold)
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out"
ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$ncu" ] || { echo "ncu not found"; exit 1; }
kernels=${KERNELS:-regex:^(qgemv_m1|qgate_up_m1|gemv_bf16_m1|gate_up_bf16_m1)$}
for run in ${RUNS:-llama-3-8b:int4-g128}; do
  shape=${run%%:*} w=${run##*:}
  bench=(node dist/src/cli/main.js bench --shape "$shape" --weights "$w" --device cuda --gen-tokens 16 --ttft-tokens 0 --verify-rows 1)
  # One decode step's launches (skip the warm-up), time and DRAM bytes of each.
  "$ncu" --clock-control none -k "$kernels" --launch-skip ${SKIP:-300} --launch-count ${COUNT:-129} \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active \
    --csv --page raw --print-units base "${bench[@]}" > "/tmp/ncu-$shape-$w.csv" 2>&1
  grep -v "^\"" "/tmp/ncu-$shape-$w.csv" | tail -3
  python3 - "/tmp/ncu-$shape-$w.csv" <<'PY' | tee "$out/ncu-$shape-$w.txt"
import csv, sys, collections
rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))]
num = lambda v: float(v.replace(",", ""))
rows = [r for r in rows if r.get("gpu__time_duration.sum", "").replace(",", "").replace(".", "").isdigit()]
g = collections.defaultdict(list)
for r in rows:
    g[(r["Kernel Name"], r["launch__grid_size"])].append(r)
print(f'{"kernel":16s} {"grid":>6s} {"n":>4s} {"us":>8s} {"MB":>8s} {"GB/s":>7s} {"regs":>4s} {"occ%":>5s}')
for (k, grid), rs in sorted(g.items()):
    t = sum(num(r["gpu__time_duration.sum"]) for r in rs) / len(rs)  # ns
    b = sum(num(r["dram__bytes_read.sum"]) for r in rs) / len(rs)
    print(f'{k:16s} {grid:>6s} {len(rs):4d} {t/1e3:8.2f} {b/1e6:8.2f} {b/t:7.0f} {rs[0]["launch__registers_per_thread"]:>4s} {num(rs[0]["sm__warps_active.avg.pct_of_peak_sustained_active"]):5.1f}')
PY
  # Where the warps of the M = 1 kernels wait (one launch of each kind).
  "$ncu" --clock-control none -k "${SECTION_KERNELS:-$kernels}" --launch-skip ${SKIP:-300} --launch-count 4 \
    --section SpeedOfLight --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis \
    "${bench[@]}" 2>&1 | grep -vE "^==PROF==|^\s*$" > "$out/ncu-sections-$shape-$w.txt"
done
for f in "${TACHYON_CACHE:-/tmp/tachyon-kernels}"/kernels/qgemv-*.cubin; do
  cuobjdump --dump-sass --function "${SASS_FUNCTIONS:-qgemv_m1,qgemv_norm_m1,qgate_up_m1,qgate_up_fold_m1}" "$f" >> "$out/sass-qgemv.txt" 2>&1
done
ls -la "$out"
