"""Retesting finished benchmark runs under another protocol: the same protocol reproduces the
runs' own figures, a sampled one ranks each positive among a subset of the full ranking's items,
resume skips what was retested, and a protocol or an edited config that changes the training
data is refused by name."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from conftest import config_yaml

from recbole_hdccf import retest
from recbole_hdccf.benchmark import code_version


def _protocol(tmp_path, name, mode="full", split=None, **more):
    """A protocol yaml: the tiny runs' split, metrics and top-k, with ``mode`` (and ``more``)."""
    eval_args = {
        "split": split or {"LS": "valid_and_test"},
        "order": "TO",
        "group_by": "user",
        "mode": mode,
    }
    settings = {"eval_args": eval_args, "metrics": ["Hit", "NDCG"], "topk": [10, 50], **more}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


@pytest.fixture
def finished_runs(finished_benchmark):
    """The shared benchmark folder (BPR and HDCCF, seeds 1 and 2, trained under full ranking)
    and its config file."""
    return finished_benchmark.out, finished_benchmark.config_file


def _records(folder):
    return {(r["label"], r["seed"]): r for r in json.loads((folder / "runs.json").read_text())}


def test_same_protocol_reproduces_the_runs_and_sampled_ranks_a_subset(
    finished_runs, tmp_path, capsys
):
    out, _ = finished_runs
    trained = _records(out)
    assert all(r["status"] == "ok" and r["checkpoint"] for r in trained.values())

    same = tmp_path / "same"
    full = _protocol(tmp_path, "full")
    assert retest.main([f"--runs={out}", f"--protocol={full}", f"--out={same}"]) == 0
    again = _records(same)
    assert again.keys() == trained.keys()
    for key, record in again.items():
        assert record["status"] == "ok"
        # The best checkpoint, evaluated again: the figures the run itself reported.
        for phase in ("valid", "test"):
            for metric, value in trained[key][phase].items():
                assert record[phase][metric] == pytest.approx(value, abs=1e-9), (key, phase)
        assert record["retest"]["checkpoint"] == trained[key]["checkpoint"]
        assert record["retest"]["code_version"] == code_version()
        assert record["epochs_run"] == trained[key]["epochs_run"]  # the training cost is kept
    table = (same / "table.md").read_text()
    assert table.startswith("Test under `full.yaml`") and "| NDCG@10 |" in table

    sampled = tmp_path / "sampled"
    uni = _protocol(tmp_path, "uni20", mode="uni20")
    assert retest.main([f"--runs={out}", f"--protocol={uni}", f"--out={sampled}"]) == 0
    ranked = _records(sampled)
    differs = False
    for key, record in ranked.items():
        assert record["config"]["eval_args"]["mode"] == {"valid": "uni20", "test": "uni20"}
        for metric in ("hit@10", "ndcg@10", "hit@50", "ndcg@50"):
            # 20 sampled negatives are a subset of every unseen item: no rank can get worse.
            assert record["test"][metric] >= trained[key]["test"][metric] - 1e-9
            differs |= record["test"][metric] > trained[key]["test"][metric] + 1e-9
    assert differs

    capsys.readouterr()
    assert retest.main([f"--runs={out}", f"--protocol={uni}", f"--out={sampled}"]) == 0
    assert capsys.readouterr().out.count("skipped, retested earlier") == 4
    assert _records(sampled) == ranked

    # A run extended without a better epoch keeps its checkpoint, not its record: retested.
    extended = tmp_path / "extended"
    shutil.copytree(out, extended)  # the records still name the original checkpoints
    record_file = extended / "runs" / "BPR-seed1.json"
    record = json.loads(record_file.read_text())
    record["epochs_run"] += 3
    record_file.write_text(json.dumps(record))
    assert retest.main([f"--runs={extended}", f"--protocol={uni}", f"--out={sampled}"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped, retested earlier") == 3
    assert "BPR seed=1: testing under" in printed
    assert _records(sampled)["BPR", 1]["epochs_run"] == ranked["BPR", 1]["epochs_run"] + 3


def test_changed_training_data_or_settings_are_refused(finished_runs, tmp_path, capsys):
    out, config_file = finished_runs
    random_split = _protocol(tmp_path, "rs", split={"RS": [0.8, 0.1, 0.1]})
    folder = tmp_path / "rs"
    assert retest.main([f"--runs={out}", f"--protocol={random_split}", f"--out={folder}"]) == 0
    records = _records(folder)
    assert all(r["status"] == "failed" for r in records.values())
    assert all("eval_args" in r["error"] and "RS" in r["error"] for r in records.values())
    assert all("test" not in r for r in records.values())  # no stale figures in runs.csv
    assert "failed" in (folder / "table.md").read_text()

    filtered = _protocol(tmp_path, "filtered", item_inter_num_interval="[5,inf)")
    folder = tmp_path / "filtered"
    assert retest.main([f"--runs={out}", f"--protocol={filtered}", f"--out={folder}"]) == 0
    assert all("item_inter_num_interval" in r["error"] for r in _records(folder).values())

    original = config_file.read_text()
    edited = yaml.safe_load(original)
    edited["learner"] = "sgd"
    try:
        config_file.write_text(config_yaml(edited))
        folder = tmp_path / "edited"
        full = _protocol(tmp_path, "full")
        args = [f"--runs={out}", f"--protocol={full}", f"--out={folder}", "--models=BPR"]
        assert retest.main(args) == 0
    finally:
        config_file.write_text(original)
    records = _records(folder)
    assert {label for label, _ in records} == {"BPR"}
    assert all("learner: adam -> sgd" in r["error"] for r in records.values())


def test_bad_arguments_are_clear_errors(finished_runs, tmp_path, capsys):
    out, _ = finished_runs
    assert retest.main([f"--runs={tmp_path}", "--protocol=full"]) == 2
    assert "no runs/ folder" in capsys.readouterr().err
    assert retest.main([f"--runs={out}", "--protocol=nonesuch"]) == 2
    assert "unknown protocol preset 'nonesuch'" in capsys.readouterr().err
    assert retest.main([f"--runs={out}", "--protocol=full", "--models=NeuMF"]) == 2
    assert "no runs of ['NeuMF']" in capsys.readouterr().err


def test_training_changes_ignores_evaluation_and_length_keys():
    before = {
        "eval_args": {"split": {"LS": "valid_and_test"}, "mode": {"test": "uni99"}},
        "topk": [10],
        "epochs": 40,
        "embedding_size": 64,
    }
    after = {**before, "eval_args": {**before["eval_args"], "mode": {"test": "full"}}}
    after.update(topk=[10, 50], epochs=300)
    assert retest.training_changes(before, after) == []
    assert retest.training_changes(before, after, keys=retest.LENGTH_KEYS) == ["epochs: 40 -> 300"]
    after["eval_args"] = {"split": {"RS": [0.8, 0.1, 0.1]}, "mode": {"test": "full"}}
    after["embedding_size"] = 32
    assert retest.training_changes(before, after) == [
        "embedding_size: 64 -> 32",
        "eval_args: {'split': {'LS': 'valid_and_test'}} -> {'split': {'RS': [0.8, 0.1, 0.1]}}",
    ]


def test_a_run_a_benchmark_holds_is_not_retested_and_the_others_are(
    finished_runs, tmp_path, capsys, monkeypatch
):
    """While a benchmark holds a run (extending it, say), its checkpoints may change under a
    retest: the retest names the holder, retests the others, and gets to it when it is free."""
    from recbole_hdccf.run_lock import run_lock

    monkeypatch.setattr(retest, "LOCK_WAIT_SECONDS", 0.2)
    out, _ = finished_runs
    target = tmp_path / "retested"
    args = [f"--runs={out}", f"--protocol={_protocol(tmp_path, 'full')}", f"--out={target}"]
    args.append("--models=BPR")
    with run_lock(out / "runs" / "BPR-seed1"):
        assert retest.main(args) == 0
    printed = capsys.readouterr().out
    assert "BPR seed=1: skipped, BPR-seed1 is in use by pid" in printed
    assert "in use by a benchmark (left out of the table; retest again when it finishes)" in printed
    assert [r["seed"] for r in _records(target).values()] == [2]
    # Readers share: a retest holding the run does not stop another from reading it.
    with run_lock(out / "runs" / "BPR-seed1", shared=True):
        assert retest.main(args) == 0
    printed = capsys.readouterr().out
    assert "BPR seed=1: testing under" in printed and "seed=2: skipped, retested earlier" in printed
    assert sorted(r["seed"] for r in _records(target).values()) == [1, 2]
