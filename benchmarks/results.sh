#!/bin/bash
# Every run behind docs/results.md's tables and figures, in one resumable script: started
# again, it skips each finished run (and refuses one whose settings changed), so the table can be
# filled over several sittings or machines.
#
#   bash benchmarks/results.sh [STEP ...]     (from the repository root)
#
# STEP: paper | paper30 | retest | long | random | d128 | variants | full | full30 | ablation |
#       sensitivity | modulation | plots | tune | tuned
#       (default: all, in that order; paper30: the paper step with a patience of 30 epochs for
#       every model (stopping_step=30 on each label: the baselines' 10 stopped ENMF while it
#       still rose, so its default label has 30 already), into $OUT/paper too; retest: the
#       paper runs' best checkpoints tested under full ranking without training again, into
#       $OUT/paper/retest-full; long: the paper step's baselines that its budget stopped
#       (LightGCN, SimpleX) with an epoch cap and no budget, so that early stopping ends them
#       whatever the machine's speed, into $OUT/paper-long, then tested under full ranking;
#       random: the unmodulated published configuration and the
#       baselines held out at random (--protocol=paper-random,
#       the other reading of the paper's "leave one out"), into $OUT/paper-random, each model
#       at the epoch count of docs/results.md's runs at random, then tested under full ranking
#       on that split; d128: the random step's models at embedding size 128 on the paper
#       protocol, into $OUT/d128, then tested under full ranking; variants: the published
#       HDCCF configuration without its modulation and with the debiased loss, tabled with the
#       paper step's HDCCF runs, and the paper's ablation and P (Fig. 4) over it, unmodulated,
#       P into $OUT/variants-p, and the false-negative rates w_i+ and w_u+ (Fig. 4) over the
#       paper's defaults, unmodulated (the published configuration's loss is biased, so they do
#       not apply to it), into $OUT/variants-w, then tested under full ranking; full: the paper
#       step's models and the unmodulated one trained under full ranking (validation too: it
#       chooses the epoch), with the random step's epoch counts, into $OUT/full; full30: the
#       same with a patience of 30 epochs for every model (stopping_step=30 on each label: the
#       full step's 5 and 10 stop ENMF early), into $OUT/full too; ablation, sensitivity,
#       modulation: the paper's figures, on HDCCF's defaults)
#       tune (on request): TRIALS random draws from properties/hyper/<Model>.hyper for every
#       model, each trial under the same BUDGET: the fair tuning budget (cheap on ml-100k);
#       then $OUT/tune/best.md: each model's best trial on validation, as benchmark labels
#       tuned (on request, after tune): those best trials over SEEDS, into $OUT/tuned
# Environment:
#   DATASET    default ml-1m (ml-100k needs no DATA_PATH: it ships with RecBole)
#   DATA_PATH  folder holding $DATASET/ (default ../shared/datasets)
#   OUT        results folder (default results/ml-1m)
#   JOBS       benchmark processes at once, one model each (default 2)
#   THREADS    torch threads per run (default 1; keep JOBS x THREADS within the cores)
#   SEEDS      seeds 2020, 2021, ... (default 3)
#   BUDGET     train_time_budget in seconds, the same for every model (default 3300)
#   EXTRA      more benchmark arguments, e.g. "--set epochs=1" for a dry run
#   BASELINES  the baselines, space-separated labels
#              (default "BPR NeuMF[learning_rate=0.0005] ENMF[dropout_prob=0.3;stopping_step=30]
#              LightGCN[learning_rate=0.01] SimpleX[train_batch_size=26112;learning_rate=0.005]")
#   TRIALS     trials per model for tune (default 8); TUNE_EXTRA: more arguments, e.g. --epochs=1
set -euo pipefail

export DATASET=${DATASET:-ml-1m}
[ "$DATASET" = ml-100k ] && default_path="" || default_path=../shared/datasets
export DATA_PATH=${DATA_PATH-$default_path}
OUT=$(realpath -m "${OUT:-results/$DATASET}")  # absolute: tune runs in per-model folders
export OUT
export SEEDS=${SEEDS:-3}
export BUDGET=${BUDGET:-3300}
export EXTRA=${EXTRA:-}
export TRIALS=${TRIALS:-8} TUNE_EXTRA=${TUNE_EXTRA:-}
export ROOT=$PWD
export THREADS=${THREADS:-1}
# tune's processes (run_hyper_hdccf.py) take the thread count from these
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS} MKL_NUM_THREADS=${MKL_NUM_THREADS:-$THREADS}
JOBS=${JOBS:-2}
PYTHON=${PYTHON:-python}
export PYTHON

# The published HDCCF configuration (docs/results.md: raw scores, tau 1, negative items only,
# the biased loss) and the baselines, each with properties/model/<Model>.yaml. LightGCN runs at
# learning rate 0.01: at its yaml's 0.001 it did not leave the popularity plateau in 5 of the
# about 18 ML-1M epochs a 3300 s CPU budget held (docs/results.md, "LightGCN's learning rate"),
# with RecBole's sparse product; the plugin's CSR product (since 2026-12-07, docs/speed.md) is
# 3.8x faster, so a rerun of the main step gives LightGCN about 40 epochs under the same budget.
# ENMF runs at dropout 0.3 (its reference code's keep probability 0.7): ML-1M validation 0.4138
# against 0.3955 at the yaml's 0.7 (docs/results.md, "ENMF's settings"); and with a patience of
# 30 epochs: at RecBole's 10 it stopped after 125-182 epochs while its validation still rose, at
# 30 it runs to about 300 epochs and validates higher in every seed. SimpleX runs 512
# positives a step (RecBole counts its 50 negatives in the batch, so the yaml's 512 rows are 10
# positives) at learning rate 0.005: ML-1M validation 0.4148-0.4167 against 0.4007-0.4063 with
# the yaml's (three seeds). NeuMF runs at learning rate 0.0005 (ml-100k's equal-budget tuning
# chose it): ML-1M validation 0.4222-0.4282 against 0.4150-0.4220 at the yaml's 0.001 (three
# seeds; docs/results.md, the main table's "NeuMF's learning rate").
PROPOSED="HDCCF[ui_negatives=items;debias=False;stopping_step=5]"
# The variants step: that configuration without the modulation (eq. 8) and with the debiased
# loss, and the paper's ablation (Fig. 2) over it without the modulation, which costs a fifth
# and changed nothing there ("ablation" holds one name, so the others' switches are spelled out;
# docs/results.md, "ML-1M: the published configuration without its modulation").
UNMODULATED="${PROPOSED%]};ablation=unmodulated"
VARIANTS=("$UNMODULATED]" "${PROPOSED/debias=False/debias=True}"
    "$UNMODULATED;lambda_u=0]" "$UNMODULATED;lambda_i=0]" "$UNMODULATED;lambda_u=0;lambda_i=0]"
    "$UNMODULATED;ui_loss=bpr;lambda_u=0;lambda_i=0]" "${UNMODULATED/debias=False/debias=True}]")
# P (Fig. 4's third panel) over the same unmodulated configuration; in a folder of its own so that
# Fig. 2 keeps its bars, the base (P = 2) merged in from the variants
P_VARIANTS=()
for p in 1 3 4 5 6; do P_VARIANTS+=("$UNMODULATED;neighbor_num=$p]"); done
# w_i+ and w_u+ (Fig. 4's first two panels) need the debiased loss, and w_u+ negative users: the
# paper's defaults (0.05 each), unmodulated (a fifth of the modulated epoch time), one rate moved
# at a time
PAPER_UNMODULATED="HDCCF[ablation=unmodulated"  # open, as UNMODULATED, for more settings
W_VARIANTS=("$PAPER_UNMODULATED]")
for w in 0.0 0.1 0.15 0.2; do
    W_VARIANTS+=("$PAPER_UNMODULATED;w_i_pos=$w]" "$PAPER_UNMODULATED;w_u_pos=$w]")
done
W_VARIANTS+=("$PAPER_UNMODULATED;w_i_pos=0.0;w_u_pos=0.2]")  # the best of each, together
SIMPLEX="SimpleX[train_batch_size=26112;learning_rate=0.005]"
read -r -a BASELINES <<< "${BASELINES:-BPR NeuMF[learning_rate=0.0005] ENMF[dropout_prob=0.3;stopping_step=30] LightGCN[learning_rate=0.01] $SIMPLEX}"

bench() {  # folder protocol models [more args]
    local out=$1 protocol=$2 models=$3
    shift 3
    # shellcheck disable=SC2086  # EXTRA is a list of arguments
    "$PYTHON" -m recbole_hdccf.benchmark --dataset="$DATASET" ${DATA_PATH:+--data_path="$DATA_PATH"} \
        --protocol="$protocol" --seeds="$SEEDS" --set "train_time_budget=$BUDGET" \
        --threads="$THREADS" $EXTRA \
        --out="$out" --models="$models" "$@"
}
export -f bench

# What stopped each model's runs in docs/results.md, for the steps whose runs it fixed per model:
# an epoch count (so that a run does not depend on the day's machine speed; LightGCN and SimpleX
# get the main table's longest run, early stopping ends the others sooner) or a budget of their
# own. BUDGET still applies where a step gives only epochs.
limits() {  # step label -> one key=value for --set, or nothing
    # full: the random step's epoch counts (the split by time of the main table, whose runs had
    # as many epochs or fewer); only the validation that stops the runs differs
    case "${1/#full/random}:${2%%\[*}" in
        random:HDCCF) echo epochs=30 ;; random:BPR) echo epochs=150 ;; random:ENMF) echo epochs=300 ;;
        random:NeuMF | d128:NeuMF) echo epochs=40 ;;
        random:LightGCN | d128:LightGCN) echo epochs=18 ;;
        random:SimpleX | d128:SimpleX) echo epochs=28 ;;
        d128:HDCCF | d128:BPR) echo train_time_budget=1800 ;;
        # ENMF at patience 30 was still creeping up when 175 epochs ended it (2026-12-07)
        d128:ENMF) echo epochs=175 ;;
        # long: caps early stopping stays under (LightGCN stopped after 31-35 epochs, SimpleX
        # after 32-53: a cap of 42 ended two SimpleX runs at their best epoch, 120 let them stop)
        long:LightGCN) echo epochs=40 ;; long:SimpleX) echo epochs=120 ;;
    esac
}
bench_limited() {  # step folder protocol label: bench, with the step's limit for the label
    local step=$1 limit
    shift
    limit=$(limits "$step" "$3")
    bench "$@" ${limit:+--set "$limit"}
}
export -f limits bench_limited

patience30_label() {  # label -> the same with stopping_step=30, in place of its own if it has one
    local label
    label=$(sed -E 's/stopping_step=[0-9]+/stopping_step=30/' <<< "$1")
    if [ "$label" != "$1" ]; then echo "$label"
    elif [[ $1 == *"]" ]]; then echo "${1%]};stopping_step=30]"
    else echo "$1[stopping_step=30]"
    fi
}

patience30_labels() {  # label... -> each with stopping_step=30, one per line
    local label
    for label; do patience30_label "$label"; done
}

d128_label() {  # label -> the same at embedding size 128 (NeuMF has two sizes)
    local size=embedding_size=128
    [ "${1%%\[*}" = NeuMF ] && size="mf_embedding_size=128;mlp_embedding_size=128"
    case $1 in *]) echo "${1%]};$size]" ;; *) echo "$1[$size]" ;; esac
}

in_parallel() {  # folder protocol label...: one benchmark process per label, JOBS at a time
    local out=$1 protocol=$2  # LIMITS: the step whose limits apply (none by default)
    shift 2
    printf '%s\n' "$@" | xargs -P "$JOBS" -I{} bash -c 'bench_limited "$3" "$0" "$1" "$2" > /dev/null' \
        "$out" "$protocol" {} "${LIMITS:-}" || echo "some runs failed: see $out/table.md"
    # Every process rewrote the table with its own runs; this one tables them all.
    bench "$out" "$protocol" "$(IFS=,; echo "$*")" --report_only
}

tune_one() {  # model: its own folder (RecBole writes log/ and saved/ in the working directory)
    local folder=$OUT/tune/$1 yaml=$ROOT/properties/model/$1.yaml
    [ -f "$yaml" ] || yaml=""  # HDCCF reads properties/HDCCF.yaml by itself
    mkdir -p "$folder" && cd "$folder" || return 1
    # shellcheck disable=SC2086  # TUNE_EXTRA is a list of arguments
    "$PYTHON" "$ROOT/run_hyper_hdccf.py" --model="$1" --dataset="$DATASET" \
        ${DATA_PATH:+--data_path="$(cd "$ROOT" && realpath "$DATA_PATH")"} --protocol=paper \
        ${yaml:+--config_files="$yaml"} --algo=random --max_evals="$TRIALS" \
        --early_stop="$TRIALS" --train_time_budget="$BUDGET" \
        --output_file="$folder/trials.result" $TUNE_EXTRA > "$folder/stdout.log" 2>&1 \
        && tail -n 4 "$folder/stdout.log"
}
export -f tune_one

preset() {  # @ablation -> its labels, one per line
    "$PYTHON" -c "from recbole_hdccf.benchmark import PRESETS; print(PRESETS['$1'])" | tr , '\n'
}

main() {
    local step steps=("$@")
    [ ${#steps[@]} -gt 0 ] || steps=(paper paper30 retest long random d128 variants full full30 ablation sensitivity modulation plots)
    for step in "${steps[@]}"; do
        echo "== $step ($(date))"
        case $step in
            paper) in_parallel "$OUT/paper" paper "$PROPOSED" "${BASELINES[@]}" ;;
            paper30)
                mapfile -t labels < <(patience30_labels "$PROPOSED" "${BASELINES[@]}")
                in_parallel "$OUT/paper" paper "${labels[@]}"
                ;;
            full) LIMITS=full in_parallel "$OUT/full" full "$PROPOSED" "$UNMODULATED]" "${BASELINES[@]}" ;;
            full30)
                mapfile -t labels < <(patience30_labels "$PROPOSED" "$UNMODULATED]" "${BASELINES[@]}")
                LIMITS=full in_parallel "$OUT/full" full "${labels[@]}"
                ;;
            retest) "$PYTHON" -m recbole_hdccf.retest --runs="$OUT/paper" --protocol=full ;;
            long)
                # a wall-clock budget buys a slower machine fewer epochs (docs/results.md,
                # "Validation batches built once, and LightGCN's propagation"): epochs instead
                mapfile -t labels < <(printf '%s\n' "${BASELINES[@]}" | grep -E '^(LightGCN|SimpleX)(\[|$)' || true)
                if [ ${#labels[@]} -gt 0 ]; then
                    BUDGET='~' LIMITS=long in_parallel "$OUT/paper-long" paper "${labels[@]}"
                    "$PYTHON" -m recbole_hdccf.retest --runs="$OUT/paper-long" --protocol=full
                fi
                ;;
            random)
                LIMITS=random in_parallel "$OUT/paper-random" paper-random \
                    "$UNMODULATED]" "${BASELINES[@]}"
                # full ranking on the same random split: the preset with every item a candidate
                mkdir -p "$OUT/paper-random"
                sed 's/mode: uni99.*/mode: full/' "$ROOT/properties/protocol/paper-random.yaml" \
                    > "$OUT/paper-random/full-random.yaml"
                "$PYTHON" -m recbole_hdccf.retest --runs="$OUT/paper-random" \
                    --protocol="$OUT/paper-random/full-random.yaml"
                ;;
            d128)
                mapfile -t labels < <(for label in "$UNMODULATED]" "${BASELINES[@]}"; do d128_label "$label"; done)
                LIMITS=d128 in_parallel "$OUT/d128" paper "${labels[@]}"
                "$PYTHON" -m recbole_hdccf.retest --runs="$OUT/d128" --protocol=full
                ;;
            variants)
                in_parallel "$OUT/variants" paper "${VARIANTS[@]}"
                if [ -f "$OUT/paper/runs.json" ]; then  # the published configuration itself
                    bench "$OUT/variants" paper "$PROPOSED,$(IFS=,; echo "${VARIANTS[*]}")" \
                        --report_only --merge_runs="$OUT/paper/runs.json"
                fi
                in_parallel "$OUT/variants-p" paper "${P_VARIANTS[@]}"
                if [ -f "$OUT/variants/runs.json" ]; then
                    bench "$OUT/variants-p" paper "$UNMODULATED],$(IFS=,; echo "${P_VARIANTS[*]}")" \
                        --report_only --merge_runs="$OUT/variants/runs.json"
                fi
                in_parallel "$OUT/variants-w" paper "${W_VARIANTS[@]}"
                "$PYTHON" -m recbole_hdccf.retest --runs="$OUT/variants-w" --protocol=full
                ;;
            ablation | sensitivity | modulation)
                mapfile -t labels < <(preset "@$step")
                in_parallel "$OUT/$step" paper "${labels[@]}"
                ;;
            tune)
                # a label's own settings are the tuner's to choose: tune the bare model
                printf '%s\n' HDCCF "${BASELINES[@]%%\[*}" | xargs -P "$JOBS" -I{} bash -c 'tune_one "$0"' {} \
                    || echo "some tuning failed: see $OUT/tune/<Model>/stdout.log"
                # each model's best trial on validation, and the labels that rerun them over seeds
                "$PYTHON" -m recbole_hdccf.tuning --results="$OUT/tune" | tee "$OUT/tune/best.md"
                ;;
            tuned)
                # the search chose on one seed; the seeds test what it chose, under the same BUDGET
                mapfile -t labels < <("$PYTHON" -m recbole_hdccf.tuning --results="$OUT/tune" --labels | tr , '\n')
                if [ -z "${labels[*]:-}" ]; then
                    echo "tuned: no finished trials in $OUT/tune: run the tune step first" >&2
                    exit 2
                fi
                in_parallel "$OUT/tuned" paper "${labels[@]}"
                ;;
            plots)
                "$PYTHON" -m recbole_hdccf.plots ablation --results="$OUT/ablation"
                "$PYTHON" -m recbole_hdccf.plots ablation --results="$OUT/variants"
                # Fig. 3 on the published configuration: the paper step's checkpoint, merged in
                "$PYTHON" -m recbole_hdccf.plots scores --results="$OUT/variants"
                "$PYTHON" -m recbole_hdccf.plots sensitivity --results="$OUT/sensitivity"
                "$PYTHON" -m recbole_hdccf.plots sensitivity --results="$OUT/variants-p"
                "$PYTHON" -m recbole_hdccf.plots sensitivity --results="$OUT/variants-w"
                "$PYTHON" -m recbole_hdccf.plots scores --results="$OUT/modulation"
                ;;
            *) echo "unknown step $step: use paper, paper30, retest, long, random, d128, variants, full, full30, ablation, sensitivity, modulation, plots, tune or tuned" >&2
               exit 2 ;;
        esac
    done
}

# bash reads a script as it runs it: one line, parsed whole before main starts, so that editing
# this file during a run of hours does not change what the run does after its steps.
main "$@"; exit $?
