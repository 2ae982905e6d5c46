#!/usr/bin/env bash
# (.whl/ and .bench-data/ are in .gitignore.) Run HERE (a machine with PyPI and ../shared): puts what benchmarks/gpu_run.sh needs on a GPU
# machine into two git-ignored folders of the repo, to be carried with the device call:
#   .whl/        wheels of the packages that machine lacks (open_clip and its text deps)
#   .bench-data/ the Flickr8k photos (../shared beside the checkout does not travel)
# Together ~23 MiB of the 64 MiB a call may carry. Then, from the repo root:
#   device run: command "bash benchmarks/gpu_run.sh", carry [".whl", ".bench-data"]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
SRC=${SHARED_DATA:-../shared/data}/flickr8k-1k/images
[ -d "$SRC" ] || { echo "no photos at $SRC (set SHARED_DATA)" >&2; exit 1; }
mkdir -p .bench-data/flickr8k-1k
rm -rf .bench-data/flickr8k-1k/images && cp -r "$SRC" .bench-data/flickr8k-1k/images
du -sh .whl .bench-data
