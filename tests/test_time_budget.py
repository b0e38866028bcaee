"""``train_time_budget``: training ends at the budget and the best model so far is tested."""

from __future__ import annotations

import itertools
import os

import pytest

import recbole_hdccf  # noqa: F401
from recbole_hdccf import quick_start
from recbole_hdccf.compat import load_checkpoint
from recbole_hdccf.quick_start import run_recbole
from recbole_hdccf.settings import ConfigError


def _run(config_dict, resume=None, **overrides):
    epochs = []
    result = run_recbole(
        model="HDCCF",
        dataset="tiny",
        resume=resume,
        config_dict={**config_dict, "stopping_step": 100, **overrides},
        callback_fn=lambda epoch_idx, score: epochs.append(epoch_idx),
    )
    return result, epochs


def test_budget_stops_before_an_epoch_would_overrun_and_tests_the_best_model(
    small_config_dict, monkeypatch
):
    """A fake clock advancing 10 s per reading: after epoch 1 (20 s), another 10 s epoch would
    end at 30 s > 25 s, so training stops there. The result equals a 2-epoch run's."""
    clock = itertools.count(0, 10)
    monkeypatch.setattr(quick_start, "monotonic", lambda: float(next(clock)))
    stopped, epochs = _run(small_config_dict, epochs=50, train_time_budget=25)
    assert epochs == [0, 1]
    assert stopped["time_budget_reached"]

    monkeypatch.undo()
    reference, reference_epochs = _run(small_config_dict, epochs=2)
    assert reference_epochs == [0, 1] and not reference["time_budget_reached"]
    assert stopped["test_result"] == reference["test_result"]
    assert stopped["best_valid_result"] == reference["best_valid_result"]


@pytest.mark.parametrize("budget,stops", [(51.5, True), (52.5, False)])
def test_a_resumed_runs_earlier_epochs_count_against_the_budget(monkeypatch, budget, stops):
    """Epochs of 12 s and 15 s before the resume, then one of 10 s: 37 s spent, and the next
    epoch may take as long as the longest, 15 s: 52 s."""
    clock = iter([100.0, 110.0])  # when the callback is made, then the first validation
    monkeypatch.setattr(quick_start, "monotonic", lambda: next(clock))
    callback = quick_start.with_time_budget(None, budget, spent=[12.0, 15.0])
    if stops:
        with pytest.raises(quick_start.TimeBudgetReached, match="epoch 2, 37 s"):
            callback(2, 0.5)
    else:
        callback(2, 0.5)


def test_a_run_the_budget_ended_resumes_to_nothing_more(small_config_dict, monkeypatch):
    """Its last checkpoint says it ended (as early stopping would) and why, with the epochs'
    seconds: a run killed between the budget's stop and its test resumes to the same record."""
    clock = itertools.count(0, 10)
    monkeypatch.setattr(quick_start, "monotonic", lambda: float(next(clock)))
    stopped, _ = _run(small_config_dict, epochs=50, train_time_budget=25)
    monkeypatch.undo()
    last = load_checkpoint(stopped["last_checkpoint"])
    assert last["epoch"] == 1 and last["stopped"] is True
    assert last["stop_reason"] == quick_start.TimeBudgetReached.reason
    assert (
        [e["epoch"] for e in last["epoch_log"]]
        == [0, 1]
        == [e["epoch"] for e in stopped["epoch_log"]]
    )
    resumed, epochs = _run(
        small_config_dict, epochs=50, train_time_budget=25, resume=stopped["last_checkpoint"]
    )
    assert epochs == [] and resumed["resumed_after_epochs"] == 2
    assert resumed["time_budget_reached"] is True
    assert resumed["test_result"] == stopped["test_result"]
    assert resumed["best_valid_result"] == stopped["best_valid_result"]


def test_no_budget_runs_every_epoch(small_config_dict):
    result, epochs = _run(small_config_dict, epochs=3, train_time_budget=None)
    assert epochs == [0, 1, 2] and not result["time_budget_reached"]


@pytest.mark.parametrize(
    "value,message",
    [
        (0, "train_time_budget=0: must be a positive number"),
        (-5, "train_time_budget=-5: must be a positive number"),
        ("soon", "train_time_budget='soon': must be a positive number"),
        (True, "train_time_budget=True: must be a positive number"),
        # bash's tilde expansion of an unquoted `--set train_time_budget=~`
        (os.path.expanduser("~"), r"a shell turned an unquoted ~ into your home folder"),
    ],
)
def test_bad_budget_is_a_config_error(small_config_dict, value, message):
    with pytest.raises(ConfigError, match=message):
        run_recbole(
            model="BPR",
            dataset="tiny",
            config_dict={**small_config_dict, "train_time_budget": value},
        )


def test_budget_in_a_distributed_run_is_refused(small_config_dict):
    from recbole.config import Config

    config = Config(
        model="BPR", dataset="tiny", config_dict={**small_config_dict, "train_time_budget": 60}
    )
    with pytest.raises(ConfigError, match="single-process runs only"):
        quick_start.validate_config(config, world_size=2)


def test_tuning_objective_validates_and_keeps_the_budget_per_trial(small_config_dict, monkeypatch):
    """run_hyper_hdccf.py's trials go through ``objective_function``: a trial stops at its budget
    (the fake clock of the first test) and ends like a 2-epoch run; a bad setting is refused."""
    trial = {**small_config_dict, "model": "HDCCF", "dataset": "tiny", "stopping_step": 100}
    clock = itertools.count(0, 10)
    monkeypatch.setattr(quick_start, "monotonic", lambda: float(next(clock)))
    stopped = quick_start.objective_function({**trial, "epochs": 50, "train_time_budget": 25})
    monkeypatch.undo()
    reference = quick_start.objective_function({**trial, "epochs": 2})
    assert stopped["time_budget_reached"] and not reference["time_budget_reached"]
    assert stopped["model"] == "HDCCF" and stopped["valid_score_bigger"] is True
    assert stopped["best_valid_result"] == reference["best_valid_result"]
    assert stopped["test_result"] == reference["test_result"]
    assert stopped["best_valid_score"] == reference["best_valid_score"]

    with pytest.raises(ConfigError, match="tau"):
        quick_start.objective_function({**trial, "tau": -1.0})


class _StoppedTrainer:
    """What ``_reopen_under_a_larger_budget`` reads of a resumed trainer."""

    def __init__(self, budget):
        self.checkpoint_config = {"train_time_budget": budget}
        self.start_epoch, self.reopened = 2, False

    def reopen(self):
        self.reopened = True


@pytest.mark.parametrize(
    "before,now,reopens",
    [
        (25, 25, False),  # the budget it stopped under: it stays ended, whatever its seconds
        (25, 20, False),
        (25, 40, True),  # 10 + 15 s spent, and the next epoch may take 15 s: 40 s
        (25, 39, False),
        (25, None, True),  # no budget now
        (None, 40, False),  # it had no budget: a budget did not end it
    ],
)
def test_a_run_the_budget_ended_reopens_only_under_a_larger_budget_with_room(before, now, reopens):
    trainer = _StoppedTrainer(before)
    earlier = [{"epoch": 0, "seconds": 10.0}, {"epoch": 1, "seconds": 15.0}]
    quick_start._reopen_under_a_larger_budget(trainer, now, earlier, quick_start.getLogger())
    assert trainer.reopened is reopens


def test_a_run_the_budget_ended_trains_on_under_a_larger_budget_exactly(
    small_config_dict, monkeypatch
):
    """Stopped at 25 s after 2 epochs (the fake clock), resumed without a budget up to 4 epochs:
    the record of a 4-epoch run."""
    clock = itertools.count(0, 10)
    monkeypatch.setattr(quick_start, "monotonic", lambda: float(next(clock)))
    stopped, _ = _run(small_config_dict, epochs=4, train_time_budget=25)
    monkeypatch.undo()
    resumed, epochs = _run(
        small_config_dict, epochs=4, train_time_budget=None, resume=stopped["last_checkpoint"]
    )
    assert epochs == [2, 3] and not resumed["time_budget_reached"]
    reference, _ = _run(
        {**small_config_dict, "checkpoint_dir": small_config_dict["checkpoint_dir"] + "-reference"},
        epochs=4,
    )
    assert resumed["test_result"] == reference["test_result"]
    assert resumed["best_valid_result"] == reference["best_valid_result"]
