#!/bin/bash
# One prepared device run: environment preflight (fails fast), a CUDA check of the fused grid,
# then one plan of benchmark runs, all in parallel, each with THREADS torch threads:
#   sweep      ML-1M (paper + full protocol) and an ml-100k HDCCF sweep, seed 2020, 15 processes
#   embedding  ML-1M paper protocol: LightGCN and SimpleX (the main table's settings) at d = 64
#              and d = 128, run until early stopping or the budget, 8 processes
#   lightgcn128 the same LightGCN at d = 128, seed 2020 alone (one process: no GPU time-slicing)
# Usage (repo root): bash benchmarks/device/run_device.sh DEADLINE_S [PLAN]
# RESERVE (default 110 s) is what each run keeps of its time for data loading and the test, the
# rest is its train_time_budget; 45 s is enough for one ML-1M process alone on the machine.
set -u
DEADLINE=${1:-500}
PLAN=${2:-sweep}
case $PLAN in sweep | embedding | lightgcn128) ;; *) echo "unknown plan '$PLAN': give sweep, embedding or lightgcn128"; exit 2 ;; esac
T0=$(date +%s)
ROOT=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/res /tmp/data/ml-1m
elapsed() { echo $(($(date +%s) - T0)); }

if [ -z "${LOCAL_TEST:-}" ]; then  # LOCAL_TEST=1: a dry run here (venv python, 1 epoch each)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        .devkit/whl/*.whl || { echo "PIP FAILED"; exit 3; }
fi
export PYTHONPATH=/tmp/site:$ROOT/benchmarks/device/stub:$ROOT PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
cp .devkit/datasets/ml-1m/* /tmp/data/ml-1m/ && gunzip -f /tmp/data/ml-1m/ml-1m.inter.gz

python3 - <<'EOF' 2>&1 | tee "$OUT/preflight.txt"
import numpy, pandas, scipy, sklearn, torch
print("versions", numpy.__version__, pandas.__version__, scipy.__version__, sklearn.__version__,
      torch.__version__, torch.cuda.is_available())
import recbole_hdccf  # noqa
from recbole.quick_start import run_recbole  # noqa
import scipy.sparse, sklearn.metrics  # noqa
# fused grid on CUDA against the reference (values and gradients)
from recbole_hdccf.similarity import ModulationNet, grid_scores
torch.manual_seed(0)
d = 64
dev = "cuda" if torch.cuda.is_available() else "cpu"
mod = ModulationNet(d).to(dev).double()
leaves = [torch.randn(n, d, device=dev, dtype=torch.float64, requires_grad=True)
          for n in (37, 53, 37, 53)]
ids = torch.randint(0, 53, (120,), device=dev)
def run(impl):
    for x in leaves + list(mod.parameters()):
        x.grad = None
    p, q, eu, ei = leaves[0], leaves[1][ids], leaves[2], leaves[3][ids]
    g = grid_scores(p, q, eu, ei, mod, impl=impl)
    (g * torch.linspace(-1, 1, g.numel(), device=dev, dtype=g.dtype).view_as(g)).sum().backward()
    return g.detach(), [x.grad.clone() for x in leaves + list(mod.parameters())]
if not torch.cuda.is_available():
    print("PREFLIGHT OK (no CUDA: check skipped)")
    raise SystemExit
gf, grads_f = run("fused")
gr, grads_r = run("reference")
err = max([(gf - gr).abs().max().item()] + [(a - b).abs().max().item() for a, b in zip(grads_f, grads_r)])
print("CUDA fused vs reference max abs diff (float64):", err)
assert err < 1e-9, err
print("PREFLIGHT OK")
EOF
grep -q "PREFLIGHT OK" "$OUT/preflight.txt" || { echo "PREFLIGHT FAILED"; exit 4; }
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>&1 | tee -a "$OUT/preflight.txt"
echo "preflight done at $(elapsed) s"

SEEDS=2020
THREADS=1
bench() {  # name dataset protocol timeout models [extra args]
    local name=$1 dataset=$2 protocol=$3 limit=$4 models=$5
    shift 5
    python3 -m recbole_hdccf.benchmark --dataset="$dataset" --protocol="$protocol" \
        --seed_list="$SEEDS" --models="$models" --out="/tmp/res/$name" --timeout="$limit" \
        --threads="$THREADS" "$@" > "/tmp/res/$name.log" 2>&1
}
LEFT=$((DEADLINE - $(elapsed) - 15))   # hard per-run timeout (the run is lost)
BUDGET=$((LEFT - ${RESERVE:-110}))      # training budget: data loading and the test fit after
HD_UN="normalize=False;tau=1.0"
launch() {  # prefix dataset protocol "spec|epochs|stopping_step" ... (plain labels: caps go to --set)
    local prefix=$1 dataset=$2 protocol=$3
    shift 3
    local extra=()
    [ "$dataset" = ml-1m ] && extra+=(--data_path=/tmp/data)
    for item in "$@"; do
        IFS='|' read -r spec epochs stop <<< "$item"
        [ -n "${LOCAL_TEST:-}" ] && epochs=1
        n=$(echo "${spec}_$SEEDS" | tr -c 'A-Za-z0-9' '_')
        bench "${prefix}_$n" "$dataset" "$protocol" $LEFT "$spec" "${extra[@]}" \
            --set "epochs=$epochs" --set "stopping_step=$stop" \
            --set "train_time_budget=$BUDGET" &
    done
}
if [ "$PLAN" = sweep ]; then
    launch m1p ml-1m paper "HDCCF|300|5" "HDCCF[${HD_UN}]|300|5" "BPR|300|10" "NeuMF|300|10" \
        "ENMF|300|10" "LightGCN|300|10" "SimpleX|300|10"
    launch m1f ml-1m full "HDCCF|300|5" "BPR|300|10" "LightGCN|300|10"
    launch k100 ml-100k paper "BPR|300|10" "HDCCF[${HD_UN}]|300|5" \
        "HDCCF[normalize=False;tau=0.5]|300|5" "HDCCF[${HD_UN};train_batch_size=1024]|300|5" \
        "HDCCF[${HD_UN};neighbor_num=4]|300|5"
elif [ "$PLAN" = lightgcn128 ]; then
    THREADS=4
    launch emb ml-1m paper "LightGCN[learning_rate=0.01;embedding_size=128]|300|10"
else  # the main table's LightGCN and SimpleX (docs/results.md), one process per seed and size
    THREADS=2
    L="LightGCN[learning_rate=0.01"
    S="SimpleX[train_batch_size=26112;learning_rate=0.005"
    for SEEDS in 2020 2021 2022; do
        launch emb ml-1m paper "$L]|300|10" "$L;embedding_size=128]|300|10"
    done
    SEEDS=2020
    launch emb ml-1m paper "$S]|300|10" "$S;embedding_size=128]|300|10"
fi

snapshot() {
    tar czf "$OUT/results.tar.gz.tmp" -C /tmp/res --exclude='*.pth' --exclude='saved' . \
        2>/dev/null && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
}
while [ -n "$(jobs -r)" ] && [ "$(elapsed)" -lt "$DEADLINE" ]; do
    sleep 20
    snapshot
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> "$OUT/gpu.txt" 2>&1
    echo "t=$(elapsed)s running=$(jobs -r | wc -l) $(ls /tmp/res/*/runs/*.json 2>/dev/null | wc -l) done"
done
pkill -f recbole_hdccf.benchmark
sleep 2
snapshot
echo "finished at $(elapsed) s"
