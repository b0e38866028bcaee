#!/bin/bash
# Device speed check: HDCCF's step (fused vs reference, fp32 and bf16), one real ml-1m epoch and
# full-sort inference on CUDA, one process. Usage (repo root): bash benchmarks/device/speed_device.sh
set -u
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .devkit/whl/*.whl || { echo "PIP FAILED"; exit 3; }
export PYTHONPATH=/tmp/site:$PWD/benchmarks/device/stub:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/data/ml-1m && cp .devkit/datasets/ml-1m/* /tmp/data/ml-1m/ \
    && gunzip -f /tmp/data/ml-1m/ml-1m.inter.gz
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 170 python3 -m recbole_hdccf.bench_speed --device cuda --data-path /tmp/data --bf16 \
    --full-epoch 2>&1 | grep -v Warning | tee "$OUT/speed.txt"
