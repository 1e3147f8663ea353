#!/usr/bin/env bash
# Prepares the GPU machine for a run: the carried Node.js, production node_modules, a kernel cache.
# Usage (on the device): bash scripts/gpu-run.sh COMMAND...   (carry .device and dist)
set -euo pipefail
bash .device/portable-node.sh install .device >/dev/null
# Production node_modules travel compressed (the carried tree is limited to 64 MiB); make it with
# (cd .device && mkdir prod && cp ../package*.json prod && cd prod && npm ci --omit=dev &&
#  tar cJf ../prod-node_modules.tar.xz node_modules).
rm -rf node_modules && tar xJf .device/prod-node_modules.tar.xz
export TACHYON_CACHE=${TACHYON_CACHE:-/tmp/tachyon-kernels}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
"$@"
