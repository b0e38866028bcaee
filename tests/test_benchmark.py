"""The benchmark tool end to end on a tiny synthetic dataset: two models, two seeds, a failing
model, the table's cells and significance column, and resume after an interruption."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import benchmark_args, write_benchmark_config

from recbole_hdccf import allocator, benchmark, machine_speed


def _args(tiny_data_path, tmp_path, out, models):
    """Benchmark arguments, with a fresh ``tmp_path/bench.yaml`` as the config file."""
    return benchmark_args(write_benchmark_config(tiny_data_path, tmp_path), out, models)


def test_benchmark_end_to_end_table_failures_and_resume(finished_benchmark, tmp_path, capsys):
    # BPR and HDCCF, seeds 1 and 2, ran; a model that fails is added to a copy of that folder.
    assert "[1/4] BPR seed=1: running" in finished_benchmark.printed
    out = tmp_path / "out"
    shutil.copytree(finished_benchmark.out, out)
    models = "HDCCF,BPR,HDCCF[tau=-1]"
    args = benchmark_args(finished_benchmark.config_file, out, models)
    assert benchmark.main(args) == 0
    printed = capsys.readouterr().out
    assert "[1/6] HDCCF seed=1: skipped, finished earlier" in printed
    assert printed.count("skipped, finished earlier") == 4
    assert "[3/6] HDCCF[tau=-1] seed=1: running" in printed
    assert "HDCCF[tau=-1] seed=1: FAILED" in printed

    records = json.loads((out / "runs.json").read_text())
    ok = [r for r in records if r["status"] == "ok"]
    assert {(r["label"], r["seed"]) for r in ok} == {
        ("HDCCF", 1),
        ("HDCCF", 2),
        ("BPR", 1),
        ("BPR", 2),
    }
    for r in ok:
        assert set(benchmark.METRICS) <= set(r["test"])
        assert r["epochs_run"] == 2 and r["total_seconds"] > 0 and r["peak_memory_mb"] > 0
        assert r["config"]["model"] == r["model"] and r["config"]["seed"] == r["seed"]
        assert r["reference_seconds_before"] > 0 and r["reference_seconds_after"] > 0
        assert r["torch_threads"] >= 1
        # the run's process inherited this one's environment, so its allocator setting too
        assert r["freed_memory_kept"] is allocator.freed_memory_kept()
        assert r["code_version"] == benchmark.code_version()
        assert r["cpu"] == machine_speed.cpu_description()
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 2 and all("tau" in r["error"] for r in failed)

    table = (out / "table.md").read_text()
    rows = {
        line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")
    }
    cells = [c.strip() for c in rows["NDCG@10"].split("|")[2:-1]]
    hd = [
        r["test"]["ndcg@10"] for r in sorted(ok, key=lambda r: r["seed"]) if r["label"] == "HDCCF"
    ]
    bp = [r["test"]["ndcg@10"] for r in sorted(ok, key=lambda r: r["seed"]) if r["label"] == "BPR"]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    assert f"{mean(hd):.4f}" in cells[0] and f"{mean(bp):.4f}" in cells[1]
    assert cells[2] == "failed"
    assert "<u>" in cells[1]  # BPR is the only (hence best) baseline
    assert ("**" in cells[0]) == (mean(hd) >= mean(bp))
    assert cells[3] == f"{(mean(hd) - mean(bp)) / mean(bp) * 100:+.2f}%"
    p = benchmark.paired_p_value(hd, bp)
    assert cells[4] == ("n/a" if p is None else f"{p:.3g}")
    assert "HDCCF[tau=-1] seed 1 failed" in table
    csv_lines = (out / "runs.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 6
    assert (
        "torch_threads,reference_seconds_before,reference_seconds_after,freed_memory_kept"
        in csv_lines[0]
    )
    assert csv_lines[0].endswith(",error,code_version,cpu")
    read_back = benchmark.read_runs(out / "runs.csv")
    assert read_back[("BPR", 1)]["code_version"] == benchmark.code_version()

    # Started again: every finished run, failed ones too, is skipped; nothing is retrained.
    assert benchmark.main(args) == 0
    again = capsys.readouterr().out
    assert again.count("skipped, finished earlier") == 6 and "running" not in again
    # --retry_failed runs the failed ones again, and only them.
    assert benchmark.main(args + ["--retry_failed"]) == 0
    retried = capsys.readouterr().out
    assert retried.count("skipped, finished earlier (ok)") == 4
    assert retried.count(": running") == 2 and retried.count(": FAILED") == 2


def test_report_only_over_changed_settings_warns_once_per_change(
    finished_benchmark, tmp_path, capsys
):
    out = tmp_path / "out"
    shutil.copytree(finished_benchmark.out, out)
    args = benchmark_args(finished_benchmark.config_file, out, "BPR,HDCCF")
    # A report with a setting the runs did not have: not refused (nothing runs), but said once
    # for the four runs that share the change, and the table keeps them as they ran.
    assert benchmark.main(args + ["--report_only", "--set", "learning_rate=0.5"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "finished with other settings" in line]
    assert len(warnings) == 1, err
    assert warnings[0].startswith("warning: 4 runs (") and "BPR-seed2" in warnings[0]
    assert warnings[0].endswith("(learning_rate: <unset> -> 0.5)")
    assert "reports these runs as they ran" in err
    records = json.loads((out / "runs.json").read_text())
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    # Without --report_only the same settings are refused, with the same one line.
    assert benchmark.main(args + ["--set", "learning_rate=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("finished with other settings") == 1 and "error: 4 runs (" in err
    assert "new --out" in err and "reports these runs" not in err
    # The settings they ran with: no warning.
    assert benchmark.main(args + ["--report_only"]) == 0
    captured = capsys.readouterr()
    assert "other settings" not in captured.err and "other seeds" not in captured.out


def test_a_report_over_some_seeds_names_the_other_seeds_finished_in_its_folder(
    finished_benchmark, tmp_path, capsys
):
    # As a process given one seed of a --seed_list split over processes ends: its table has its
    # own seed, and it names the others' finished runs and the command that tables them all.
    out = tmp_path / "out"
    shutil.copytree(finished_benchmark.out, out)
    (out / "runs" / "BPR-seed2.json").unlink()
    one_seed = benchmark_args(finished_benchmark.config_file, out, "HDCCF,BPR", seeds="1")
    assert benchmark.main(one_seed + ["--report_only"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: {out} also holds finished runs under other seeds (HDCCF seed 2), left out of "
        "this table; a table over them all: the same command with --report_only --seed_list=1,2"
    ]
    records = json.loads((out / "runs.json").read_text())
    assert [(r["label"], r["seed"]) for r in records] == [("HDCCF", 1), ("BPR", 1)]


def test_paired_p_value():
    assert benchmark.paired_p_value([0.5], [0.4]) is None
    p = benchmark.paired_p_value([0.50, 0.52, 0.51], [0.40, 0.43, 0.41])
    assert 0 < p < 0.01
    assert benchmark.paired_p_value([0.5, 0.6, 0.4], [0.6, 0.4, 0.5]) > 0.5


def test_best_valid_epoch_is_the_one_recboles_early_stopping_keeps():
    from recbole.utils import early_stopping

    # a tie with the earlier best (validation is rounded to 4 places): RecBole keeps the later
    scores = [0.30, 0.4366, 0.4351, 0.4366, 0.4339]
    best, step, kept = -float("inf"), 0, None
    for epoch, score in enumerate(scores):
        best, step, _, update = early_stopping(score, best, step, max_step=10)
        kept = epoch + 1 if update else kept
    assert benchmark.best_valid_epoch(list(range(5)), scores) == kept == 4
    # with eval_step 2 the callback sees epochs 1, 3, 5: the epoch, not the validation's index
    assert benchmark.best_valid_epoch([1, 3, 5], [0.1, 0.3, 0.2]) == 4
    assert benchmark.best_valid_epoch([], []) is None


def test_parse_models_with_settings():
    parsed = benchmark.parse_models("HDCCF[ablation=wo_u],BPR,HDCCF[tau=0.2;neighbor_num=3]")
    assert parsed == [
        ("HDCCF[ablation=wo_u]", "HDCCF", {"ablation": "wo_u"}),
        ("BPR", "BPR", {}),
        ("HDCCF[tau=0.2;neighbor_num=3]", "HDCCF", {"tau": 0.2, "neighbor_num": 3}),
    ]
    with pytest.raises(
        ValueError, match=r"'HDCCF\[tau\]': setting 'tau': use key=value, e.g. HDCCF\["
    ):
        benchmark.parse_models("HDCCF[tau]")
    with pytest.raises(ValueError, match=r"'BPR\[epochs=2;lr\]': setting 'lr'"):
        benchmark.parse_models("HDCCF,BPR[epochs=2;lr]")


def test_parse_settings_parses_values_and_names_a_pair_without_a_value():
    settings = benchmark.parse_settings(["epochs=40", "train_time_budget=null", " tau = 0.1"])
    assert settings == {"epochs": 40, "train_time_budget": None, "tau": 0.1}
    assert benchmark.parse_settings(None) == {}
    with pytest.raises(ValueError, match=r"--set 'epochs': use key=value, e.g. --set epochs=40"):
        benchmark.parse_settings(["epochs"])


def test_a_setting_without_a_value_is_a_clear_error(tmp_path, capsys):
    code = benchmark.main(
        ["--dataset=x", "--models=BPR", "--set", "epochs", f"--out={tmp_path / 'out'}"]
    )
    assert code == 2
    assert "--set 'epochs': use key=value" in capsys.readouterr().err


def test_interrupted_benchmark_resumes(tiny_data_path, tmp_path, subprocess_env):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "recbole_hdccf.benchmark"]
    args = _args(tiny_data_path, tmp_path, out, models="BPR")  # seeds 1 and 2
    process = subprocess.Popen(
        command + args, env=subprocess_env, stdout=subprocess.DEVNULL, start_new_session=True
    )
    first = out / "runs" / "BPR-seed1.json"
    deadline = time.time() + 240
    while not first.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert first.exists(), "the first run never finished"
    os.killpg(process.pid, signal.SIGKILL)  # the parent and the run in progress
    process.wait()
    done_before = {p.name for p in (out / "runs").glob("*.json")}
    assert len(done_before) < 2  # killed while seed 2 ran

    result = subprocess.run(
        command + args, env=subprocess_env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    skipped = result.stdout.count("skipped, finished earlier")
    assert skipped == len(done_before)
    records = json.loads((out / "runs.json").read_text())
    assert sorted((r["label"], r["seed"]) for r in records if r["status"] == "ok") == [
        ("BPR", 1),
        ("BPR", 2),
    ]


class _Interrupted(Exception):
    pass


def test_a_run_interrupted_mid_training_resumes_to_the_uninterrupted_record(
    tiny_data_path, tmp_path, monkeypatch
):
    """``run_one`` (a run's child process) stopped in epoch 3 by an exception, then started
    again: it resumes from the end of epoch 2 and records what the uninterrupted run records."""
    from conftest import isolated, restored_root_logger
    from recbole.trainer import Trainer

    from recbole_hdccf.compat import load_checkpoint

    config_file = write_benchmark_config(tiny_data_path, tmp_path)
    base = {"dataset": "tiny", "config": {}, "config_files": {"BPR": [str(config_file)]}}
    spec = benchmark.RunSpec("BPR", "BPR", {"epochs": 6, "stopping_step": 6}, seed=1)

    def run(folder):  # in the same folder again: the next attempt of that run
        (tmp_path / folder).mkdir(exist_ok=True)
        with restored_root_logger(), isolated(tmp_path):
            return benchmark.run_one(spec, base, tmp_path / folder)

    whole = run("whole")
    train_epoch = Trainer._train_epoch

    def interrupt_in_epoch_3(self, train_data, epoch_idx, *args, **kwargs):
        if epoch_idx == 3:
            raise _Interrupted
        return train_epoch(self, train_data, epoch_idx, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_epoch", interrupt_in_epoch_3)
    with pytest.raises(_Interrupted):
        run("killed")
    monkeypatch.undo()
    assert benchmark.resume_checkpoint(tmp_path / "killed") is not None
    resumed = run("killed")

    assert whole["resumed_after_epochs"] == 0 and resumed["resumed_after_epochs"] == 3
    for key in ("test", "valid", "epochs_run", "epochs_to_best", "valid_curve"):
        assert resumed[key] == whole[key], key
    assert resumed["epochs_run"] == 6
    # one validation an epoch, counted from 1, with the best where epochs_to_best says
    curve = dict(whole["valid_curve"])
    assert list(curve) == [1, 2, 3, 4, 5, 6]
    assert curve[whole["epochs_to_best"]] == max(curve.values())
    assert resumed["total_seconds"] > 0 and resumed["seconds_per_epoch"] > 0
    best, reference = (load_checkpoint(r["checkpoint"])["state_dict"] for r in (resumed, whole))
    for name, value in reference.items():
        assert torch.equal(best[name], value), name


def test_an_interrupted_run_is_not_resumed_under_other_settings(tiny_data_path, tmp_path, capsys):
    """Its checkpoint would go on under the settings it began with: refused, with the way out."""
    out = tmp_path / "out"
    args = _args(tiny_data_path, tmp_path, out, models="BPR")
    spec = benchmark.RunSpec("BPR", "BPR", {}, seed=1)  # the first run of ``args``
    run_dir = out / "runs" / spec.key
    (run_dir / "saved").mkdir(parents=True)
    request = {"spec": spec.__dict__, "base": {"dataset": "tiny", "config": {}, "config_files": {}}}
    (run_dir / "request.json").write_text(json.dumps(request))
    (run_dir / "saved" / "BPR-x-last.pth").write_bytes(b"")
    assert benchmark.main(args) == 2
    error = capsys.readouterr().err
    assert f"run {spec.key}" in error and "interrupted under other settings" in error
    assert "config_files:" in error and "delete OUT/runs/<run>/saved" in error
    assert not (out / "runs" / f"{spec.key}.json").exists()  # nothing ran


def _record(label, seed, ndcg):
    return {
        "label": label,
        "model": benchmark.model_of(label),
        "seed": seed,
        "status": "ok",
        "test": {"hit@10": ndcg, "ndcg@10": ndcg, "ndcg@50": ndcg},
    }


def test_table_proposed_is_the_first_hdccf_label_and_variants_are_not_baselines():
    variant = "HDCCF[ui_negatives=items]"
    records = [
        _record(variant, 1, 0.50),
        _record(variant, 2, 0.52),
        _record("HDCCF", 1, 0.60),  # better than everything, but a variant: never the baseline
        _record("HDCCF", 2, 0.62),
        _record("BPR", 1, 0.40),
        _record("BPR", 2, 0.44),
        _record("NeuMF", 1, 0.45),  # one seed only
    ]
    labels = [variant, "HDCCF", "BPR", "NeuMF"]
    assert benchmark.default_proposed(labels) == variant
    table = benchmark.markdown_table(records, labels)
    row = next(line for line in table.splitlines() if line.startswith("| NDCG@10"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[3] == "0.4200 ± 0.0283" and cells[4] == "<u>0.4500</u>"  # one seed: no ±
    assert cells[2] == "**0.6100 ± 0.0141**"
    assert cells[5] == f"{(0.51 - 0.45) / 0.45 * 100:+.2f}%"  # the variant over NeuMF
    assert cells[6] == "n/a"  # one common seed: no paired test
    assert "- NeuMF: seeds [1] only" in table

    other = benchmark.markdown_table(records, labels, proposed="HDCCF")
    row = next(line for line in other.splitlines() if line.startswith("| NDCG@10"))
    assert row.split("|")[6].strip() == f"{(0.61 - 0.45) / 0.45 * 100:+.2f}%"


@pytest.mark.parametrize("labels", [["BPR", "NeuMF"], ["HDCCF", "HDCCF[neighbor_num=4]"]])
def test_table_without_a_proposed_model_and_a_baseline_has_no_improvement_column(labels):
    records = [_record(labels[0], 1, 0.40), _record(labels[1], 1, 0.45)]
    table = benchmark.markdown_table(records, labels)
    header, rule, *rows = table.split("\n\n")[0].splitlines()
    assert header == f"| Metric | {labels[0]} | {labels[1]} |" and rule == "|---|---|---|"
    assert all(row.count("|") == 4 for row in rows)
    assert "Imp." not in table and "paired t-test" not in table
    assert "- mean ± std over seeds [1] (one seed: its value)." in table


def test_changed_settings_are_refused_and_report_only_merges(
    tiny_data_path, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    args = _args(tiny_data_path, tmp_path, "out", models="BPR")  # a relative --out
    args[-2] = "--seed_list=1"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what the run would get without --threads
    assert benchmark.main(args + ["--threads=2"]) == 0
    record = json.loads((tmp_path / "out" / "runs" / "BPR-seed1.json").read_text())
    assert record["torch_threads"] == 2
    capsys.readouterr()
    assert benchmark.main(args + ["--threads=0"]) == 2
    assert "--threads=0: give 1 or more" in capsys.readouterr().err

    assert benchmark.main(args + ["--set", "learning_rate=0.5"]) == 2
    error = capsys.readouterr().err
    assert "BPR-seed1" in error and "learning_rate: <unset> -> 0.5" in error
    assert "new --out" in error

    config_file = tmp_path / "bench.yaml"  # the same path, other contents
    original = config_file.read_text()
    config_file.write_text("# a comment changes no setting\n" + original)
    assert benchmark.main(args) == 0  # nor does another thread count
    assert "skipped, finished earlier" in capsys.readouterr().out
    config_file.write_text(original + "learning_rate: 0.5\n")
    assert benchmark.main(args) == 2
    assert f"config file edited since the run: {config_file}" in capsys.readouterr().err
    _args(tiny_data_path, tmp_path, "out", models="BPR")  # writes the original file back

    # A protocol is a yaml file by content: the same file given as --protocol, or a copy of it
    # elsewhere, is the same run; a copy that differs is not.
    def with_protocol(protocol):
        return [
            f"--protocol={protocol}" if a == "--protocol=none" else a
            for a in args
            if not a.startswith("--config_files")
        ]

    assert benchmark.main(with_protocol(config_file)) == 0
    assert "skipped, finished earlier" in capsys.readouterr().out
    copy = tmp_path / "copy" / "protocol.yml"
    copy.parent.mkdir()
    copy.write_text(original)
    assert benchmark.main(with_protocol(copy)) == 0
    assert "skipped, finished earlier" in capsys.readouterr().out
    copy.write_text(original + "learning_rate: 0.5\n")
    assert benchmark.main(with_protocol(copy)) == 2
    error = capsys.readouterr().err
    assert f"config_files: ['{config_file}', " in error and f"-> ['{copy}', " in error
    assert benchmark.main(with_protocol("copy/missing.yaml")) == 2
    assert "protocol file 'copy/missing.yaml' does not exist" in capsys.readouterr().err

    # --report_only runs nothing: it lists what is missing and tables what finished.
    report = _args(tiny_data_path, tmp_path, "out", models="BPR,HDCCF") + ["--report_only"]
    assert benchmark.main(report) == 0
    printed = capsys.readouterr().out
    assert "running" not in printed and "not run yet" in printed
    assert "HDCCF seed=1" in printed and "HDCCF seed=2" in printed
    records = json.loads((tmp_path / "out" / "runs.json").read_text())
    assert [(r["label"], r["seed"]) for r in records] == [("BPR", 1)]

    assert benchmark.main(args + ["--proposed=NeuMF"]) == 2
    assert "--proposed='NeuMF' is not one of --models" in capsys.readouterr().err

    # --merge_runs: a run --out lacks comes from another benchmark's runs.csv or runs.json.
    other = tmp_path / "other"
    other.mkdir()
    written = [
        {
            "label": "HDCCF",
            "model": "HDCCF",
            "seed": seed,
            "status": "ok",
            "test": {"hit@10": 0.9, "ndcg@10": 0.8 + seed / 100, "ndcg@50": 0.85},
            "epochs_run": 4,
            "seconds_per_epoch": 12.5,
        }
        for seed in (1, 2)
    ]
    benchmark.write_outputs(other, written, ["HDCCF"])
    for name in ("runs.csv", "runs.json"):
        assert benchmark.main(report + [f"--merge_runs={other / name}"]) == 0
        printed = capsys.readouterr().out
        assert "HDCCF seed=1: from --merge_runs" in printed
        assert "not run yet (left out of the table): BPR seed=2\n" in printed
        records = json.loads((tmp_path / "out" / "runs.json").read_text())
        assert [(r["label"], r["seed"]) for r in records] == [
            ("BPR", 1),
            ("HDCCF", 1),
            ("HDCCF", 2),
        ]
        assert records[2]["test"]["ndcg@10"] == pytest.approx(0.82)
        # counts come back as counts (a CSV holds text: "4", not 4.0), seconds as seconds
        assert records[2]["epochs_run"] == 4 and isinstance(records[2]["epochs_run"], int)
        assert records[2]["seconds_per_epoch"] == 12.5
        ndcg_row = next(
            line
            for line in (tmp_path / "out" / "table.md").read_text().splitlines()
            if line.startswith("| NDCG@10")
        )
        assert "**0.8150 ± 0.0071**" in ndcg_row.split("|")[3]
    assert benchmark.main(args + [f"--merge_runs={other / 'runs.csv'}"]) == 2
    assert "add --report_only" in capsys.readouterr().err
    assert benchmark.main(report + [f"--merge_runs={other / 'table.md'}"]) == 2
    assert "neither a runs.json nor a runs.csv" in capsys.readouterr().err
    assert benchmark.main(report + [f"--merge_runs={other / 'nothing.csv'}"]) == 2
    assert "no file" in capsys.readouterr().err


def test_the_tests_run_a_source_checkout_whose_runs_import_it():
    from pathlib import Path

    from recbole_hdccf.paths import source_checkout

    assert source_checkout() == Path(__file__).resolve().parents[1]


def test_code_version_names_the_commit_and_local_changes(tmp_path):
    from recbole_hdccf import __version__

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    assert benchmark.code_version(tmp_path) == __version__  # not a checkout
    git("init", "-q")
    git("config", "user.email", "ci@example.org")
    git("config", "user.name", "ci")
    (tmp_path / "recbole_hdccf").mkdir()
    (tmp_path / "recbole_hdccf" / "model.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("a\n")
    git("add", "-A")
    git("commit", "-qm", "first")
    commit = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert benchmark.code_version(tmp_path) == f"{__version__}+g{commit}"
    (tmp_path / "notes.txt").write_text("b\n")  # outside the code and settings: still clean
    assert benchmark.code_version(tmp_path) == f"{__version__}+g{commit}"
    (tmp_path / "recbole_hdccf" / "model.py").write_text("x = 2\n")
    assert benchmark.code_version(tmp_path) == f"{__version__}+g{commit}.dirty"
    # A folder inside a checkout that is not its top (an installed copy in a project's venv).
    (tmp_path / "venv").mkdir()
    assert benchmark.code_version(tmp_path / "venv") == __version__


def test_extend_trains_finished_runs_on_to_the_records_of_runs_with_the_larger_settings(
    finished_benchmark, tmp_path, capsys
):
    """A run its time budget ended (0.001 s: after its first epoch) and a run its epochs ended
    go on from their last checkpoints to the records of runs that had the larger settings from
    the start; --extend refuses anything else, naming why."""
    config = finished_benchmark.config_file
    out = tmp_path / "out"
    budget_args = benchmark_args(config, out, "HDCCF", seeds="1")
    assert benchmark.main(budget_args + ["--set", "train_time_budget=0.001"]) == 0
    stopped = json.loads((out / "runs" / "HDCCF-seed1.json").read_text())
    assert stopped["time_budget_reached"] and stopped["epochs_run"] == 1
    capsys.readouterr()
    assert benchmark.main(budget_args + ["--set", "train_time_budget=1000"]) == 2  # not asked
    assert "train_time_budget: 0.001 -> 1000" in capsys.readouterr().err
    assert benchmark.main(budget_args + ["--set", "train_time_budget=1000", "--extend"]) == 0
    assert (
        "HDCCF seed=1: extending (train_time_budget 0.001 -> 1000; the earlier record is "
        "before-extend-1.json)" in capsys.readouterr().out
    )
    extended = json.loads((out / "runs" / "HDCCF-seed1.json").read_text())
    uninterrupted = json.loads((finished_benchmark.out / "runs" / "HDCCF-seed1.json").read_text())
    assert extended["epochs_run"] == 2 and not extended["time_budget_reached"]
    assert extended["resumed_after_epochs"] == 1
    assert extended["extended_from"] == {"train_time_budget": 0.001}
    assert extended["test"] == uninterrupted["test"]
    assert extended["valid_curve"] == uninterrupted["valid_curve"]
    kept = json.loads((out / "runs" / "HDCCF-seed1" / "before-extend-1.json").read_text())
    assert kept["test"] == stopped["test"] and kept["time_budget_reached"]

    # epochs 2 -> 3 for a run its epochs ended, against a run of 3 epochs from the start
    out = tmp_path / "copy"
    shutil.copytree(finished_benchmark.out, out)
    epochs_args = benchmark_args(config, out, "BPR", seeds="1") + ["--set", "epochs=3"]
    assert benchmark.main(epochs_args + ["--extend"]) == 0
    extended = json.loads((out / "runs" / "BPR-seed1.json").read_text())
    assert extended["extended_from"] == {"epochs": 2} and extended["epochs_run"] == 3
    reference_args = benchmark_args(config, tmp_path / "three", "BPR", seeds="1")
    assert benchmark.main(reference_args + ["--set", "epochs=3"]) == 0
    reference = json.loads((tmp_path / "three" / "runs" / "BPR-seed1.json").read_text())
    assert extended["test"] == reference["test"]
    assert extended["valid_curve"] == reference["valid_curve"]
    capsys.readouterr()

    refused = {
        "train_time_budget=500": "train_time_budget 1000 -> 500: an extension only raises it",
        "learning_rate=0.5": "not only train_time_budget and epochs changed (learning_rate: "
        "<unset> -> 0.5)",
    }
    for setting, reason in refused.items():
        extra = ["--set", "train_time_budget=1000", "--set", setting, "--extend"]
        assert benchmark.main(budget_args + extra) == 2
        assert f"--extend cannot go on from it: {reason}" in capsys.readouterr().err
    assert benchmark.main(epochs_args[:-2] + ["--extend"]) == 2  # epochs back to the yaml's
    assert "give epochs explicitly (--set epochs=N)" in capsys.readouterr().err
    assert benchmark.main(epochs_args + ["--extend", "--report_only"]) == 2
    assert "--extend trains runs on; --report_only runs nothing" in capsys.readouterr().err


def test_an_extension_that_did_not_finish_goes_on_and_its_record_says_it_was_extended(
    finished_benchmark, tmp_path, capsys
):
    """An extension killed after its run's record was moved aside: started again, the run goes
    on from its last checkpoint and its record names what it was extended from."""
    out = tmp_path / "out"
    args = benchmark_args(finished_benchmark.config_file, out, "HDCCF", seeds="1")
    assert benchmark.main(args + ["--set", "train_time_budget=0.001"]) == 0  # 1 epoch
    run_dir = out / "runs" / "HDCCF-seed1"
    # what `--set train_time_budget=1000 --extend` does before its child trains, then a kill
    benchmark._archive_record(out / "runs" / "HDCCF-seed1.json", run_dir)
    request = json.loads((run_dir / "request.json").read_text())
    request["base"]["config"]["train_time_budget"] = 1000
    (run_dir / "request.json").write_text(json.dumps(request))
    capsys.readouterr()

    assert benchmark.main(args + ["--set", "train_time_budget=1000"]) == 0
    assert "HDCCF seed=1: running (an unfinished extension) ..." in capsys.readouterr().out
    extended = json.loads((out / "runs" / "HDCCF-seed1.json").read_text())
    uninterrupted = json.loads((finished_benchmark.out / "runs" / "HDCCF-seed1.json").read_text())
    assert extended["extended_from"] == {"train_time_budget": 0.001}
    assert extended["epochs_run"] == 2 and extended["resumed_after_epochs"] == 1
    assert extended["test"] == uninterrupted["test"]
    assert (
        benchmark.unfinished_extension(
            benchmark.RunSpec("HDCCF", "HDCCF", {}, 1), {"config": {}, "config_files": {}}, tmp_path
        )
        is None
    )  # no extension began in a folder without kept records


def test_a_run_another_process_holds_is_left_to_it_and_the_others_go_on(
    finished_benchmark, tmp_path, capsys, monkeypatch
):
    """A run locked by another process is not trained beside it: the benchmark names the
    holder, runs the rest, leaves the held run out of the table, and runs it once it is free."""
    from recbole_hdccf.run_lock import run_lock

    monkeypatch.setattr(benchmark, "LOCK_WAIT_SECONDS", 0.2)
    out = tmp_path / "out"
    args = benchmark_args(finished_benchmark.config_file, out, "BPR")  # seeds 1 and 2
    with run_lock(out / "runs" / "BPR-seed1"):  # as another benchmark training it would
        assert benchmark.main(args) == 0
    printed = capsys.readouterr().out
    assert f"[1/2] BPR seed=1: skipped, BPR-seed1 is in use by pid {os.getpid()} " in printed
    assert "[2/2] BPR seed=2: running" in printed and "BPR seed=2: done" in printed
    assert "in use by other processes (left out of the table; run this command again" in printed
    assert not (out / "runs" / "BPR-seed1.json").exists()
    assert [r["seed"] for r in json.loads((out / "runs.json").read_text())] == [2]

    assert benchmark.main(args) == 0  # free now
    printed = capsys.readouterr().out
    assert "[1/2] BPR seed=1: running" in printed
    assert "[2/2] BPR seed=2: skipped, finished earlier" in printed
    assert sorted(r["seed"] for r in json.loads((out / "runs.json").read_text())) == [1, 2]


def test_a_run_finished_by_another_process_while_waiting_for_its_lock_is_not_trained_again(
    finished_benchmark, tmp_path, capsys, monkeypatch
):
    """The first look finds the run unfinished; by the time its lock is taken the other process
    has written its record: the benchmark takes that record and trains nothing."""
    out = tmp_path / "out"
    shutil.copytree(finished_benchmark.out, out)
    done = out / "runs" / "BPR-seed1.json"
    record = done.read_text()
    done.unlink()
    real_lock = benchmark.run_lock

    @contextlib.contextmanager
    def lock_after_the_other_process_finished(run_dir, **kwargs):
        done.write_text(record)
        with real_lock(run_dir, **kwargs) as fd:
            yield fd

    monkeypatch.setattr(benchmark, "run_lock", lock_after_the_other_process_finished)
    monkeypatch.setattr(benchmark, "run_in_child", None)  # training anything fails the test
    args = benchmark_args(finished_benchmark.config_file, out, "BPR")
    assert benchmark.main(args) == 0
    printed = capsys.readouterr().out
    assert "[1/2] BPR seed=1: skipped, finished meanwhile (ok)" in printed
    assert "[2/2] BPR seed=2: skipped, finished earlier (ok)" in printed
    assert json.loads(done.read_text()) == json.loads(record)


def test_a_training_child_keeps_its_run_locked_after_its_benchmark_is_killed(
    tiny_data_path, tmp_path, subprocess_env, capsys, monkeypatch
):
    """Killing a benchmark (not its process group) leaves its run's child training: a second
    benchmark must not resume that run beside it, and says which process holds it."""
    monkeypatch.setattr(benchmark, "LOCK_WAIT_SECONDS", 0.2)
    out = tmp_path / "out"
    args = _args(tiny_data_path, tmp_path, out, models="BPR") + [
        "--seed_list=1",
        "--set",
        "epochs=100000",  # trains until killed
        "--set",
        "stopping_step=100000",
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "recbole_hdccf.benchmark", *args],
        env=subprocess_env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        run_dir = out / "runs" / "BPR-seed1"
        deadline = time.time() + 240
        while benchmark.resume_checkpoint(run_dir) is None and time.time() < deadline:
            time.sleep(0.2)  # until the child has trained an epoch
        assert benchmark.resume_checkpoint(run_dir) is not None, "the run never trained"
        os.kill(first.pid, signal.SIGKILL)  # the benchmark only
        first.wait()
        capsys.readouterr()
        # --timeout: were the run resumed here, the test would fail, not train for ever
        assert benchmark.main(args + ["--timeout=30"]) == 0
        printed = capsys.readouterr().out
        assert (
            f"BPR seed=1: skipped, BPR-seed1 is in use by a training process that pid {first.pid} "
            in printed
        )
        assert "outlived it" in printed and "running" not in printed
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the child, still in the first one's group
