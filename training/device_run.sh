#!/usr/bin/env bash
# One GPU session of the training pipeline, run from the repository root on the GPU machine.
#
#   T0=$(date +%s) OUT=/some/dir bash training/device_run.sh main    # corpus, tokenizer, main model + MTP, fixtures
#   T0=$(date +%s) OUT=/some/dir bash training/device_run.sh draft   # draft model (needs models/tachyon-code-tiny)
#
# Each stage ends by itself about 560 s after T0 (the device tool allows 600 s a command). The
# results are packed into $OUT as run-<stage>.tgz.* parts of at most 15 MB; reassemble them with
# `cat run-main.tgz.* | tar xzf -` in the repository root.
set -u -o pipefail
stage=${1:?stage: main or draft}
T0=${T0:-$(date +%s)}
OUT=${OUT:?set OUT}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import sys, torch, transformers, tokenizers, safetensors; print(sys.version.split()[0], torch.__version__, transformers.__version__, tokenizers.__version__, safetensors.__version__)'

left() { echo $((T0 + $1 - $(date +%s))); }

if [ "$stage" = main ]; then
  python3 training/train.py --kind main --out models/tachyon-code-tiny --seconds 300 --end-by $((T0 + 465))
  echo "train rc=$?"
  timeout "$(left 550)" python3 training/evaluate.py --model models/tachyon-code-tiny \
    --fixtures test/fixtures/embedded --results "$OUT/eval-tiny.json"
  echo "evaluate rc=$?"
  paths="models/tachyon-code-tiny test/fixtures/embedded"
else
  python3 training/train.py --kind draft --out models/tachyon-code-draft --tokenizer models/tachyon-code-tiny \
    --seconds 150 --end-by $((T0 + 400))
  echo "train rc=$?"
  timeout "$(left 470)" python3 training/evaluate.py --model models/tachyon-code-draft --results "$OUT/eval-draft.json"
  echo "evaluate rc=$?"
  paths="models/tachyon-code-draft"
  if [ "${REDO_TINY:-0}" = 1 ]; then
    timeout "$(left 550)" python3 training/evaluate.py --model models/tachyon-code-tiny \
      --fixtures test/fixtures/embedded --results "$OUT/eval-tiny.json"
    echo "evaluate tiny rc=$?"
    paths="$paths test/fixtures/embedded"
  fi
fi
existing=$(for p in $paths; do [ -e "$p" ] && echo "$p"; done)
tar czf - $existing | split -b 15m - "$OUT/run-$stage.tgz."
ls -l "$OUT"
du -sb models/* test/fixtures/embedded 2>/dev/null
echo "done in $(( $(date +%s) - T0 )) s"
