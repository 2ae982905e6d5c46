#!/usr/bin/env bash
# Issue 12's GPU figures in one device call (~6 minutes on an H100): the machine's ceilings and
# end-to-end precompute for ViT-B-32 and ViT-L-14 (benchmarks/bench_ceilings.py), then the index
# stage against bare sae.encode (benchmarks/bench_index_device.py). Prepare with
# benchmarks/gpu_prepare.sh, then call the device with carry [".whl", ".bench-data"].
#   bash benchmarks/gpu_run.sh            # on the GPU machine; everything goes to $OUT/log too
#   bash benchmarks/gpu_run.sh --dry-run  # here, on the CPU: the same steps at toy sizes
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-$(mktemp -d)}; mkdir -p "$OUT"
LOG="$OUT/log"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore::DeprecationWarning,ignore::UserWarning
if ! "$PY" -c "import open_clip" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/ wheels: run benchmarks/gpu_prepare.sh and carry .whl" | tee -a "$LOG"; exit 1; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
step() {  # step SECONDS command...: run one measurement, never longer than its share
  local limit=$1; shift
  echo "== $* (limit ${limit}s)" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | grep -v -i -E "warn|no pretrained weights" | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || echo "!! exit $rc" | tee -a "$LOG"
}
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null; uptime; } | tee -a "$LOG"
if [ $DRY = 1 ]; then
  step 600 "$PY" benchmarks/bench_ceilings.py --clip ViT-B-32 --n-images 16 --precisions fp32 bf16 --json "$OUT/ceilings.json"
  step 300 "$PY" benchmarks/bench_index_device.py --n-items 4096 --n-latents 768 --modes device,host --device cpu
else
  step 300 "$PY" benchmarks/bench_ceilings.py --clip ViT-B-32 ViT-L-14 --n-images 1000 --json "$OUT/ceilings.json"
  step 150 "$PY" benchmarks/bench_index_device.py --n-items 1000000 --n-latents 6144 --modes device,host
  step 90 "$PY" benchmarks/bench_index_device.py --n-items 1000000 --n-latents 24576 --modes device
fi
echo "== done $(date -u)" | tee -a "$LOG"
