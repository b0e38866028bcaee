"""The tuning records and their report: the best trial on validation, named as a benchmark label
that the benchmark parses back to the same settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recbole_hdccf import tuning
from recbole_hdccf.benchmark import parse_models

ROOT = Path(__file__).resolve().parents[1]


def result(valid: float, test: float, *, bigger: bool = True, budget: bool = False) -> dict:
    return {
        "best_valid_score": np.float64(valid),
        "valid_score_bigger": bigger,
        "best_valid_result": {"ndcg@10": np.float64(valid)},
        "test_result": {"hit@10": 0.6, "ndcg@10": np.float64(test), "ndcg@50": 0.4},
        "time_budget_reached": budget,
    }


def test_trial_record_is_plain_json():
    record = tuning.trial_record(
        {"learning_rate": np.float64(0.002), "n_layers": np.int64(3)}, result(0.31, 0.29), 12.345
    )
    text = json.dumps(record)  # numpy scalars would raise here
    assert json.loads(text)["params"] == {"learning_rate": 0.002, "n_layers": 3}
    assert record["seconds"] == 12.3 and record["test_result"]["ndcg@10"] == 0.29


def test_best_trial_follows_the_direction_of_the_validation_metric():
    trials = [
        tuning.trial_record({"a": 1}, result(0.30, 0.10), 1),
        tuning.trial_record({"a": 2}, result(0.35, 0.05), 1),
        tuning.trial_record({"a": 3}, result(0.35, 0.20), 1),
    ]
    # the best validation wins, not the best test; of equals the first, as RecBole's tuner
    assert tuning.best_trial(trials)["params"] == {"a": 2}
    losses = [
        tuning.trial_record({"a": a}, result(v, 0, bigger=False), 1)
        for a, v in [(1, 2.0), (2, 1.5)]
    ]
    assert tuning.best_trial(losses)["params"] == {"a": 2}
    with pytest.raises(ValueError, match="no finished trial"):
        tuning.best_trial([])


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"learning_rate": 0.0012345678901234},
        {"debias": False, "ui_negatives": "items", "tau": 0.2, "learner": "adagrad"},
    ],
)
def test_label_round_trips_through_the_benchmark_parser(params):
    text = tuning.label("HDCCF", params)
    [(label, model, overrides)] = parse_models(text)
    assert (label, model, overrides) == (text, "HDCCF", params)


def test_label_refuses_a_value_the_benchmark_cannot_parse():
    with pytest.raises(ValueError, match="modulation_hidden|cannot be written"):
        tuning.label("HDCCF", {"modulation_hidden": [64, 32]})


def write_search(folder, model, trials):
    (folder / model).mkdir(parents=True)
    tuning.write_trials(
        tuning.trials_file_for(str(folder / model / "trials.result")),
        {"model": model, "dataset": "tiny", "algo": "random"},
        trials,
    )


def test_report_tables_each_models_best_trial(tmp_path, capsys):
    write_search(
        tmp_path,
        "BPR",
        [
            tuning.trial_record({"learning_rate": 0.001}, result(0.30, 0.28), 5),
            tuning.trial_record({"learning_rate": 0.005}, result(0.33, 0.25, budget=True), 5),
        ],
    )
    write_search(tmp_path, "NeuMF", [])  # a search that finished no trial
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "other.json").write_text("[1, 2]", encoding="utf-8")  # ignored

    assert tuning.main([f"--results={tmp_path}"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")
    }
    assert set(rows) == {"model", "BPR", "NeuMF"}
    cells = [cell.strip() for cell in rows["BPR"].strip("|").split("|")]
    assert cells == [
        "BPR",
        "2",
        "1",
        "0.3300",
        "0.6000",
        "0.2500",
        "0.4000",
        "`BPR[learning_rate=0.005]`",
    ]
    assert "no finished trial" in rows["NeuMF"]
    assert '--models="BPR[learning_rate=0.005]"' in out
    assert tuning.main([f"--results={tmp_path}", "--labels"]) == 0
    assert capsys.readouterr().out == "BPR[learning_rate=0.005]\n"  # for results.sh tuned


def test_report_names_the_trials_tied_with_the_best(tmp_path, capsys):
    """RecBole rounds validation to 4 places, so two settings can tie; the report says so."""
    write_search(
        tmp_path,
        "BPR",
        [
            tuning.trial_record({"learning_rate": 0.002}, result(0.3767, 0.34), 5),
            tuning.trial_record({"learning_rate": 0.0005}, result(0.3701, 0.33), 5),
            tuning.trial_record({"learning_rate": 0.001}, result(0.3767, 0.35), 5),
            # tied too, with a value no label can hold: named by its settings, not a crash
            tuning.trial_record({"mlp_hidden_size": [64, 32]}, result(0.3767, 0.30), 5),
        ],
    )
    write_search(
        tmp_path, "NeuMF", [tuning.trial_record({"learning_rate": 0.001}, result(0.3, 0.3), 5)]
    )
    assert tuning.main([f"--results={tmp_path}"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("- ")]
    assert notes == [
        "- BPR: the best validation score (0.3767) is tied with `BPR[learning_rate=0.001]`, "
        '`BPR` with {"mlp_hidden_size": [64, 32]}; the '
        "first drawn is taken, as RecBole's tuner does. RecBole rounds validation to 4 places: "
        "compare the tied settings over seeds to choose."
    ]
    assert tuning.main([f"--results={tmp_path}", "--labels"]) == 0
    assert capsys.readouterr().out == "BPR[learning_rate=0.002],NeuMF[learning_rate=0.001]\n"


def test_report_without_records_says_what_writes_them(tmp_path, capsys):
    assert tuning.main([f"--results={tmp_path / 'missing'}"]) == 2
    assert "results.sh tune" in capsys.readouterr().err


def test_trials_file_sits_beside_the_result_file():
    assert tuning.trials_file_for("out/tune/BPR/trials.result") == "out/tune/BPR/trials.json"
    assert tuning.trials_file_for("hyper_result.result") == "hyper_result.json"


def test_grid_size_counts_choices_and_gives_up_on_continuous_settings():
    from hyperopt import hp

    assert (
        tuning.grid_size({"a": hp.choice("a", [1, 2, 3]), "b": hp.choice("b", [True, False])}) == 6
    )
    assert (
        tuning.grid_size({"a": hp.choice("a", [1, 2]), "lr": hp.loguniform("lr", -8, -4)}) is None
    )


def test_every_draw_of_hdccfs_search_space_is_a_valid_setting():
    """HDCCF refuses settings that do nothing (w_u_pos with ui_negatives=items, ...): a search
    space that can draw such a pair fails mid-search. Every combination of its choices (and of
    its learning rate's two ends) must pass."""
    from recbole.trainer.hyper_tuning import HyperTuning

    from recbole_hdccf.settings import HDCCFSettings

    space = HyperTuning._build_space_from_file(str(ROOT / "properties" / "hyper" / "HDCCF.hyper"))
    assert tuning.corner_values(space["ui_negatives"]) == ["both", "items"]
    assert tuning.corner_values(space["debias"]) == [True, False]
    assert tuning.first_refused(space, HDCCFSettings.from_config) is None


def test_corner_values_are_every_choice_and_both_ends_of_a_range(tmp_path):
    from recbole.trainer.hyper_tuning import HyperTuning

    params_file = tmp_path / "space.hyper"
    params_file.write_text(
        "a choice [0.1,'x',True]\nb uniform -0.5,2.0\nc loguniform -8.0,-4.0\nd quniform 1,10,2\n",
        encoding="utf-8",
    )
    space = HyperTuning._build_space_from_file(str(params_file))
    assert tuning.corner_values(space["a"]) == [0.1, "x", True]
    assert tuning.corner_values(space["b"]) == [-0.5, 2.0]
    assert tuning.corner_values(space["c"]) == pytest.approx([np.exp(-8.0), np.exp(-4.0)])
    # quniform rounds its draws to multiples of q: 1 can come out as 0
    assert tuning.corner_values(space["d"]) == [0.0, 10.0]
    # a distribution without ends (a space given as a dict): a few draws of it
    from hyperopt import hp

    draws = tuning.corner_values(hp.normal("e", 0.0, 1.0))
    assert len(draws) == 5 and len(set(draws)) == 5
    corners = list(tuning.corners(space))
    assert len(corners) == 3 * 2 * 2 * 2
    assert {"a": "x", "b": 2.0, "c": pytest.approx(np.exp(-8.0)), "d": 0.0} in corners


def test_first_refused_finds_the_one_bad_combination_of_two_choices():
    from hyperopt import hp

    from recbole_hdccf.settings import HDCCFSettings

    space = {
        "ui_negatives": hp.choice("ui_negatives", ["both", "items"]),
        "w_u_pos": hp.choice("w_u_pos", [0.1]),
        "tau": hp.uniform("tau", 0.05, 1.0),
    }
    drawn, error = tuning.first_refused(space, HDCCFSettings.from_config)
    assert drawn == {"ui_negatives": "items", "w_u_pos": 0.1, "tau": 0.05}
    assert "w_u_pos=0.1: has no effect with ui_negatives='items'" in str(error)
    fixed = {**space, "ui_negatives": hp.choice("ui_negatives", ["both"])}
    assert tuning.first_refused(fixed, HDCCFSettings.from_config) is None
