"""``benchmarks/results.sh`` with a stand-in python that records what it is asked to run: the
labels each step passes on, and the bare model names ``tune`` gets for labelled baselines."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# results.sh reads these from the environment; a caller's own values must not leak in
SCRIPT_SETTINGS = {"BASELINES", "SEEDS", "BUDGET", "JOBS", "EXTRA", "TRIALS", "TUNE_EXTRA"}
SCRIPT_SETTINGS |= {"TUNED_LABELS"}  # the stand-in's answer to the tuning report

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

FAKE_PYTHON = """#!/bin/bash
# Records each call, one line of arguments; answers the preset lookup like the real module.
echo "$*" >> "$CALLS"
if [ "$1" = -c ]; then echo 'HDCCF,HDCCF[ablation=wo_u]'; fi
if [ -n "${EDIT_SCRIPT:-}" ] && [ ! -e "$CALLS.edited" ]; then  # edit the script mid-run, once
    touch "$CALLS.edited"; printf '\necho "read the edited script" >&2; exit 7\n' >> "$EDIT_SCRIPT"
fi
case "$*" in *--labels*) echo "${TUNED_LABELS-HDCCF[tau=0.5;ui_negatives=items],BPR[learning_rate=0.002]}" ;; esac
"""


def _run(tmp_path, *steps, expect_rc=0, script="benchmarks/results.sh", **env):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON, encoding="utf-8")
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    environ = {
        **{k: v for k, v in os.environ.items() if k not in SCRIPT_SETTINGS},
        "PYTHON": str(fake),
        "CALLS": str(calls),
        "OUT": str(tmp_path / "out"),
        "DATASET": "ml-100k",
        **env,
    }
    result = subprocess.run(
        ["bash", str(script), *steps],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == expect_rc, result.stderr
    if expect_rc:
        return result.stderr
    return calls.read_text(encoding="utf-8").splitlines()


def _labels_and_limits(calls):
    """(label, the --set that follows it or "") of each benchmark run, the report left out."""
    runs = [c for c in calls if "recbole_hdccf.benchmark" in c and "--report_only" not in c]
    return sorted(c.split("--models=")[1].partition(" --set ")[::2] for c in runs)


def _step_benchmarks(calls, out, protocol, runs):
    """The benchmark calls of a step: ``runs`` runs, then the report, all into ``out``."""
    benchmarks = [c for c in calls if "recbole_hdccf.benchmark" in c]
    assert len(benchmarks) == runs + 1 and calls[-1] == benchmarks[-1]  # the report ends it
    assert "--report_only" in benchmarks[-1]
    assert all(f"--protocol={protocol} " in c and f"--out={out} " in c for c in benchmarks)
    return benchmarks


def test_paper_step_runs_each_label_then_tables_them_all(tmp_path):
    calls = _run(tmp_path, "paper")
    runs = [c for c in calls if "--report_only" not in c]
    report = [c for c in calls if "--report_only" in c]
    labels = sorted(c.split("--models=")[1] for c in runs)
    assert labels == sorted(
        [
            "HDCCF[ui_negatives=items;debias=False;stopping_step=5]",
            "BPR",
            "NeuMF[learning_rate=0.0005]",
            "ENMF[dropout_prob=0.3;stopping_step=30]",
            "LightGCN[learning_rate=0.01]",
            "SimpleX[train_batch_size=26112;learning_rate=0.005]",
        ]
    )
    assert all("--set train_time_budget=3300" in c and "--seeds=3" in c for c in calls)
    assert len(report) == 1
    assert report[0].split("--models=")[1].split(" ")[0] == (
        "HDCCF[ui_negatives=items;debias=False;stopping_step=5],"
        "BPR,NeuMF[learning_rate=0.0005],ENMF[dropout_prob=0.3;stopping_step=30],"
        "LightGCN[learning_rate=0.01],"
        "SimpleX[train_batch_size=26112;learning_rate=0.005]"
    )


def test_paper30_step_gives_the_paper_steps_models_a_patience_of_30_into_its_folder(tmp_path):
    calls = _run(tmp_path, "paper30", BASELINES="BPR ENMF[dropout_prob=0.3;stopping_step=10]")
    benchmarks = _step_benchmarks(calls, tmp_path / "out" / "paper", "paper", runs=3)
    assert all("--set train_time_budget=3300" in c for c in benchmarks)
    assert _labels_and_limits(calls) == [  # the budget only: no per-model limit
        ("BPR[stopping_step=30]", ""),
        ("ENMF[dropout_prob=0.3;stopping_step=30]", ""),
        ("HDCCF[ui_negatives=items;debias=False;stopping_step=30]", ""),
    ]


def test_tune_gets_bare_model_names_and_their_yaml(tmp_path):
    calls = _run(tmp_path, "tune", BASELINES="BPR LightGCN[learning_rate=0.01]", JOBS="1")
    searches = [c for c in calls if "--model=" in c]
    models = sorted(c.split("--model=")[1].split(" ")[0] for c in searches)
    assert models == ["BPR", "HDCCF", "LightGCN"]
    lightgcn = next(c for c in calls if "--model=LightGCN " in c)
    assert f"--config_files={ROOT}/properties/model/LightGCN.yaml" in lightgcn
    assert (tmp_path / "out" / "tune" / "LightGCN").is_dir()
    # then, after every search, the report of the best trials
    assert calls[-1] == f"-m recbole_hdccf.tuning --results={tmp_path}/out/tune"
    assert (tmp_path / "out" / "tune" / "best.md").is_file()


def test_tuned_benchmarks_each_models_best_trial_over_the_seeds(tmp_path):
    calls = _run(tmp_path, "tuned", JOBS="1")
    assert calls[0] == f"-m recbole_hdccf.tuning --results={tmp_path}/out/tune --labels"
    runs = [c for c in calls[1:] if "--report_only" not in c]
    assert sorted(c.split("--models=")[1] for c in runs) == [
        "BPR[learning_rate=0.002]",
        "HDCCF[tau=0.5;ui_negatives=items]",
    ]
    assert all(f"--out={tmp_path}/out/tuned" in c and "--seeds=3" in c for c in calls[1:])
    assert calls[-1].endswith(
        "--models=HDCCF[tau=0.5;ui_negatives=items],BPR[learning_rate=0.002] --report_only"
    )


def test_tuned_without_tuning_records_stops_and_says_so(tmp_path):
    err = _run(tmp_path, "tuned", expect_rc=2, TUNED_LABELS="")
    assert "run the tune step first" in err
    calls = (tmp_path / "calls.txt").read_text(encoding="utf-8").splitlines()
    assert not [c for c in calls if "recbole_hdccf.benchmark" in c]  # nothing ran


def test_retest_tests_the_paper_runs_under_full_ranking(tmp_path):
    calls = _run(tmp_path, "retest")
    assert calls == [f"-m recbole_hdccf.retest --runs={tmp_path}/out/paper --protocol=full"]


def test_random_step_runs_the_table_held_out_at_random_then_full_ranking_on_that_split(tmp_path):
    calls = _run(tmp_path, "random", BASELINES="BPR NeuMF[learning_rate=0.0005] ItemKNN")
    out = f"{tmp_path}/out/paper-random"
    unmodulated = "HDCCF[ui_negatives=items;debias=False;stopping_step=5;ablation=unmodulated]"
    # each model capped at the epochs its documented run at random had; a model without a
    # documented run gets none; the budget applies to all
    assert _labels_and_limits(calls) == [
        ("BPR", "epochs=150"),
        (unmodulated, "epochs=30"),
        ("ItemKNN", ""),
        ("NeuMF[learning_rate=0.0005]", "epochs=40"),
    ]
    benchmarks = [c for c in calls if "recbole_hdccf.benchmark" in c]
    assert all("--set train_time_budget=3300" in c for c in benchmarks)
    assert all("--protocol=paper-random" in c and f"--out={out}" in c for c in benchmarks)
    full = Path(out) / "full-random.yaml"
    assert calls[-1] == f"-m recbole_hdccf.retest --runs={out} --protocol={full}"
    preset = (ROOT / "properties" / "protocol" / "paper-random.yaml").read_text(encoding="utf-8")
    # the same split and candidates' file with one change: every item a candidate
    assert "mode: uni99" in preset and "mode: full" in full.read_text(encoding="utf-8")
    changed = [
        (a, b)
        for a, b in zip(
            preset.splitlines(), full.read_text(encoding="utf-8").splitlines(), strict=True
        )
        if a != b
    ]
    assert len(changed) == 1 and changed[0][1].strip() == "mode: full"


def test_long_step_runs_the_budget_bound_baselines_by_epochs_without_a_budget(tmp_path):
    simplex = "SimpleX[train_batch_size=26112;learning_rate=0.005]"
    calls = _run(tmp_path, "long", BASELINES=f"BPR LightGCN[learning_rate=0.01] {simplex} NeuMF")
    out = tmp_path / "out" / "paper-long"
    assert _labels_and_limits(calls) == [
        ("LightGCN[learning_rate=0.01]", "epochs=40"),
        (simplex, "epochs=120"),
    ]
    benchmarks = [c for c in calls if "recbole_hdccf.benchmark" in c]
    assert len(benchmarks) == 3 and "--report_only" in benchmarks[-1]
    assert all("--protocol=paper --seeds=3 --set train_time_budget=~ " in c for c in benchmarks)
    assert all(f"--out={out} " in c for c in benchmarks)
    assert calls[-1] == f"-m recbole_hdccf.retest --runs={out} --protocol=full"
    # Without LightGCN or SimpleX among the baselines there is nothing to run.
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "calls.txt").touch()
    assert _run(tmp_path / "none", "long", BASELINES="BPR NeuMF") == []


def test_d128_step_runs_every_model_at_embedding_size_128_with_its_documented_limit(tmp_path):
    calls = _run(
        tmp_path,
        "d128",
        BASELINES="BPR NeuMF[learning_rate=0.0005] ENMF[dropout_prob=0.3;stopping_step=30] "
        "LightGCN[learning_rate=0.01]",
    )
    out = f"{tmp_path}/out/d128"
    unmodulated = "HDCCF[ui_negatives=items;debias=False;stopping_step=5;ablation=unmodulated"
    # NeuMF's two sizes; a budget of its own overrides BUDGET, an epoch count keeps it
    assert _labels_and_limits(calls) == [
        ("BPR[embedding_size=128]", "train_time_budget=1800"),
        ("ENMF[dropout_prob=0.3;stopping_step=30;embedding_size=128]", "epochs=175"),
        (f"{unmodulated};embedding_size=128]", "train_time_budget=1800"),
        ("LightGCN[learning_rate=0.01;embedding_size=128]", "epochs=18"),
        ("NeuMF[learning_rate=0.0005;mf_embedding_size=128;mlp_embedding_size=128]", "epochs=40"),
    ]
    benchmarks = [c for c in calls if "recbole_hdccf.benchmark" in c]
    assert all("--protocol=paper " in c and f"--out={out}" in c for c in benchmarks)
    report = [c for c in calls if "--report_only" in c]
    assert len(report) == 1 and "NeuMF[learning_rate=0.0005;mf_embedding_size=128" in report[0]
    assert calls[-1] == f"-m recbole_hdccf.retest --runs={out} --protocol=full"


def test_full_step_trains_both_hdccfs_and_the_baselines_under_full_ranking_with_the_random_caps(
    tmp_path,
):
    calls = _run(tmp_path, "full", BASELINES="BPR LightGCN[learning_rate=0.01] ItemKNN")
    proposed = "HDCCF[ui_negatives=items;debias=False;stopping_step=5"
    # every HDCCF gets the random step's 30 epochs (the budget stops the modulated one sooner)
    assert _labels_and_limits(calls) == [
        ("BPR", "epochs=150"),
        (f"{proposed};ablation=unmodulated]", "epochs=30"),
        (f"{proposed}]", "epochs=30"),
        ("ItemKNN", ""),
        ("LightGCN[learning_rate=0.01]", "epochs=18"),
    ]
    benchmarks = _step_benchmarks(calls, tmp_path / "out" / "full", "full", runs=5)
    assert all("--set train_time_budget=3300" in c for c in benchmarks)


def test_full30_step_gives_every_model_a_patience_of_30_with_the_full_steps_limits(tmp_path):
    calls = _run(
        tmp_path, "full30", BASELINES="BPR NeuMF[learning_rate=0.0005] LightGCN[learning_rate=0.01]"
    )
    hdccf = "HDCCF[ui_negatives=items;debias=False;stopping_step=30"  # its own 5, replaced
    assert _labels_and_limits(calls) == [
        ("BPR[stopping_step=30]", "epochs=150"),
        (f"{hdccf};ablation=unmodulated]", "epochs=30"),
        (f"{hdccf}]", "epochs=30"),
        ("LightGCN[learning_rate=0.01;stopping_step=30]", "epochs=18"),
        ("NeuMF[learning_rate=0.0005;stopping_step=30]", "epochs=40"),
    ]
    _step_benchmarks(calls, tmp_path / "out" / "full", "full", runs=5)


def test_variants_step_runs_the_published_configurations_variants_and_tables_them_with_it(
    tmp_path,
):
    proposed = "HDCCF[ui_negatives=items;debias=False;stopping_step=5]"
    unmodulated = "HDCCF[ui_negatives=items;debias=False;stopping_step=5;ablation=unmodulated"
    variants = [
        unmodulated + "]",
        "HDCCF[ui_negatives=items;debias=True;stopping_step=5]",
        unmodulated + ";lambda_u=0]",
        unmodulated + ";lambda_i=0]",
        unmodulated + ";lambda_u=0;lambda_i=0]",
        unmodulated + ";ui_loss=bpr;lambda_u=0;lambda_i=0]",
        "HDCCF[ui_negatives=items;debias=True;stopping_step=5;ablation=unmodulated]",
    ]
    p_variants = [f"{unmodulated};neighbor_num={p}]" for p in (1, 3, 4, 5, 6)]
    # the false-negative rates around the paper's defaults (debiased, negative users and items)
    w_variants = ["HDCCF[ablation=unmodulated]"]
    for w in ("0.0", "0.1", "0.15", "0.2"):
        w_variants += [f"HDCCF[ablation=unmodulated;{rate}={w}]" for rate in ("w_i_pos", "w_u_pos")]
    w_variants.append("HDCCF[ablation=unmodulated;w_i_pos=0.0;w_u_pos=0.2]")
    out = tmp_path / "out"
    calls = _run(tmp_path, "variants")
    benchmarks = [c for c in calls if "recbole_hdccf.benchmark" in c]
    runs = [c for c in benchmarks if "--report_only" not in c]
    labels = [c.split("--models=")[1] for c in runs]
    assert sorted(labels) == sorted(variants + p_variants + w_variants)
    folders = {
        label: c.split("--out=")[1].split(" ")[0] for label, c in zip(labels, runs, strict=True)
    }
    assert {folders[label] for label in variants} == {str(out / "variants")}
    assert {folders[label] for label in p_variants} == {str(out / "variants-p")}
    assert {folders[label] for label in w_variants} == {str(out / "variants-w")}
    reports = [c for c in benchmarks if "--report_only" in c]
    assert (
        f"--out={out / 'variants-w'} --models={','.join(w_variants)} --report_only" in reports[-1]
    )
    # then their checkpoints under full ranking, as the d128 step does
    assert calls[-1] == f"-m recbole_hdccf.retest --runs={out / 'variants-w'} --protocol=full"
    # without the paper step's (or the variants') runs there is nothing to merge
    assert not any("--merge_runs" in c for c in calls)
    (out / "paper").mkdir(parents=True)
    (out / "paper" / "runs.json").write_text("[]")
    (out / "variants").mkdir(parents=True)
    (out / "variants" / "runs.json").write_text("[]")
    merged = [c for c in _run(tmp_path, "variants") if "--merge_runs" in c]
    assert len(merged) == 2 and all("--report_only" in c for c in merged)
    assert merged[0].split("--models=")[1].split(" ")[0] == ",".join([proposed, *variants])
    assert f"--merge_runs={out / 'paper' / 'runs.json'}" in merged[0]
    # P's curve: its base, the unmodulated configuration (P = 2), comes from the variants
    assert merged[1].split("--models=")[1].split(" ")[0] == ",".join([variants[0], *p_variants])
    assert f"--out={out / 'variants-p'} " in merged[1]
    assert f"--merge_runs={out / 'variants' / 'runs.json'}" in merged[1]


def test_plots_step_draws_every_figure_from_its_steps_folder(tmp_path):
    out = tmp_path / "out"
    calls = [c.split("-m recbole_hdccf.plots ")[1] for c in _run(tmp_path, "plots")]
    assert calls == [
        f"ablation --results={out / 'ablation'}",
        f"ablation --results={out / 'variants'}",
        f"scores --results={out / 'variants'}",
        f"sensitivity --results={out / 'sensitivity'}",
        f"sensitivity --results={out / 'variants-p'}",
        f"sensitivity --results={out / 'variants-w'}",
        f"scores --results={out / 'modulation'}",
    ]


def test_editing_the_script_during_a_run_does_not_change_the_run(tmp_path):
    """bash reads a script as it goes: lines appended while a step runs would run after it."""
    script = tmp_path / "results.sh"
    shutil.copy(ROOT / "benchmarks" / "results.sh", script)
    calls = _run(tmp_path, "paper", script=script, EDIT_SCRIPT=str(script))
    assert (tmp_path / "calls.txt.edited").exists()  # the stand-in did edit it
    assert any("--report_only" in call for call in calls)
