#!/bin/bash
# Builds .devkit/ (git-ignored, carried to a lent GPU machine): wheels the device image lacks for
# Python 3.12, and ML-1M (gzipped; MovieLens data is never committed). Then, on the machine:
#   bash benchmarks/device/run_device.sh 530    # ML-1M + ml-100k runs, 15 processes, one GPU
#   bash benchmarks/device/run_device.sh 540 embedding   # other plans: its header
#   bash benchmarks/device/speed_device.sh      # bench_speed on CUDA
# The image has numpy 2 and scipy >= 1.18 (which needs numpy 2), so numpy stays at the image's;
# stub/sitecustomize.py restores the three aliases RecBole 1.2.1's Config reads, and stub/ray
# stands in for ray (no Python 3.12 wheel of 2.6.3; nothing here runs ray).
set -eu
DATA=${1:-../shared/datasets/ml-1m}
mkdir -p .devkit/whl .devkit/datasets/ml-1m
grep -qx "/.devkit/" .git/info/exclude 2>/dev/null || echo "/.devkit/" >> .git/info/exclude
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .devkit/whl \
    pandas==2.2.3 pytz==2024.2 tzdata==2024.2 recbole==1.2.1 colorlog==6.8.2 texttable==1.7.0 \
    thop==0.1.1.post2209072238
cp "$DATA"/ml-1m.* .devkit/datasets/ml-1m/
gzip -f .devkit/datasets/ml-1m/ml-1m.inter
du -sh .devkit
