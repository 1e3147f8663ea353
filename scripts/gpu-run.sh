#!/usr/bin/env bash
# Prepares the GPU machine for a run: the carried Node.js, production node_modules, a kernel cache.
# Usage (on the device): bash scripts/gpu-run.sh COMMAND...   (carry .device and dist)
set -euo pipefail
bash .device/portable-node.sh install .device >/dev/null
rm -rf node_modules && cp -r .device/prod/node_modules node_modules
export TACHYON_CACHE=${TACHYON_CACHE:-/tmp/tachyon-kernels}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
"$@"
