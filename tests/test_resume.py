"""Resumable training (recbole_hdccf/trainer.py): the end-of-epoch "last" checkpoint, an exact
resume after SIGKILL through the command line, and same-seed determinism."""

from __future__ import annotations

import ast
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, config_yaml, small_config
from model_mixin import build_run, fit_run
from recbole.trainer import Trainer

import recbole_hdccf  # noqa: F401
from recbole_hdccf.compat import load_checkpoint
from recbole_hdccf.trainer import (
    EARLY_STOPPING,
    LAST_FORMAT,
    ResumableTrainer,
    last_checkpoint_path,
)

SCRIPT = REPO_ROOT / "run_recbole_hdccf.py"


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _last_files(folder) -> list[Path]:
    return sorted(Path(folder).glob("*-last.pth"))


# ------------------------------------------------------------------ the last checkpoint
def test_last_checkpoint_after_every_epoch_holds_everything(small_config_dict):
    run = build_run("HDCCF", {**small_config_dict, "epochs": 3})
    trainer = run.trainer
    _, run.best_valid_result = trainer.fit(
        run.train_data, run.valid_data, verbose=False, saved=True, show_progress=False
    )
    # the model after the last epoch (fit_run's evaluate would load the best one back)
    last = Path(trainer.last_checkpoint_file)
    assert last == Path(last_checkpoint_path(trainer.saved_model_file))
    assert last.name.endswith("-last.pth") and _last_files(last.parent) == [last]
    state = load_checkpoint(last)
    assert state["format"] == LAST_FORMAT
    assert state["epoch"] == 2 and state["stopped"] is False and state["stop_reason"] is None
    assert state["best_model_file"] == os.path.abspath(trainer.saved_model_file)
    assert state["best_valid_score"] == trainer.best_valid_score
    assert state["best_valid_result"] == run.best_valid_result
    assert state["cur_step"] == trainer.cur_step
    assert len(state["rank_states"]) == 1
    rank = state["rank_states"][0]
    assert set(rank["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert isinstance(rank["train_generator"], torch.Tensor)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(state["state_dict"][name], value)
    assert state["optimizer"]["state"]  # Adam's moments
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]


def test_epochs_that_do_not_evaluate_are_checkpointed_too(small_config_dict):
    run = fit_run(build_run("HDCCF", {**small_config_dict, "epochs": 3, "eval_step": 2}))
    assert load_checkpoint(run.trainer.last_checkpoint_file)["epoch"] == 2  # evaluated: 1 only


def test_no_last_checkpoint_without_saving(small_config_dict):
    run = fit_run(build_run("HDCCF", {**small_config_dict, "epochs": 1}), saved=False)
    assert not Path(run.trainer.last_checkpoint_file).exists()


def test_resuming_a_finished_run_keeps_the_best_model(small_config_dict, tmp_path):
    """A last checkpoint of a run that had ended (all epochs, or early stopping) trains nothing
    more, and RecBole's 'save the current model as best' at the start of fit is skipped."""
    config = {**small_config_dict, "epochs": 4, "stopping_step": 0, "learning_rate": 0.05}
    done = fit_run(build_run("HDCCF", config))
    last = done.trainer.last_checkpoint_file
    best = done.trainer.saved_model_file
    before = _digest(best)
    state = load_checkpoint(last)
    assert state["epoch"] < 3 and state["stop_reason"] == EARLY_STOPPING  # patience 0 fired
    again = build_run("HDCCF", config)
    again.trainer.resume_checkpoint(last)
    assert again.trainer.saved_model_file == os.path.abspath(best)
    assert again.trainer.stop_reason == EARLY_STOPPING
    with pytest.raises(ValueError, match="early stopping ended this run"):
        again.trainer.reopen()  # what a larger time budget does for a run the budget ended
    fit_run(again)
    assert again.train_losses == {}  # nothing trained
    assert _digest(best) == before
    assert again.best_valid_result == done.best_valid_result
    assert again.test_result == done.test_result

    # a last checkpoint from before stop reasons were kept says only that the run stopped
    del state["stop_reason"]
    older = tmp_path / "older-last.pth"
    torch.save(state, older)
    once_more = build_run("HDCCF", config)
    once_more.trainer.resume_checkpoint(older)
    assert once_more.trainer.stop_reason == "stopped"
    fit_run(once_more)
    assert once_more.train_losses == {}


def test_resume_from_a_best_file_follows_recbole(small_config_dict):
    run = fit_run(build_run("HDCCF", {**small_config_dict, "epochs": 2}))
    best = run.trainer.saved_model_file
    epoch = load_checkpoint(best)["epoch"]
    other = build_run("HDCCF", {**small_config_dict, "epochs": 2})
    other.trainer.resume_checkpoint(best)
    assert other.trainer.start_epoch == epoch + 1
    assert other.trainer.saved_model_file == best
    assert other.trainer.last_checkpoint_file == run.trainer.last_checkpoint_file


def test_the_epoch_log_has_every_epoch_and_survives_a_resume(small_config_dict):
    config = {**small_config_dict, "epochs": 3, "eval_step": 2, "stopping_step": 10}
    run = fit_run(build_run("HDCCF", config))
    log = run.trainer.epoch_log
    assert [e["epoch"] for e in log] == [0, 1, 2]
    assert all(e["seconds"] > 0 for e in log)
    # eval_step=2 validates after epoch 1 only: the score RecBole's fit saw there
    assert [e["valid_score"] is None for e in log] == [True, False, True]
    assert log[1]["valid_score"] == run.trainer.best_valid_score
    assert load_checkpoint(run.trainer.last_checkpoint_file)["epoch_log"] == log
    again = build_run("HDCCF", config)
    again.trainer.resume_checkpoint(run.trainer.last_checkpoint_file)
    assert again.trainer.epoch_log == log


def test_recboles_own_models_get_the_resumable_trainer_with_the_same_numbers(small_config_dict):
    """``run_recbole`` (and ``build_run``) give RecBole's default ``Trainer`` the last
    checkpoints; reading the random states to save them changes no draw."""
    config = {**small_config_dict, "epochs": 3, "learning_rate": 0.01}
    resumable_run = fit_run(build_run("BPR", config))
    assert type(resumable_run.trainer) is ResumableTrainer
    plain = build_run("BPR", config)  # seeds again: each run draws from the same state
    plain.trainer = Trainer(plain.config, plain.model)
    fit_run(plain)
    assert Path(resumable_run.trainer.last_checkpoint_file).is_file()
    assert resumable_run.train_losses == plain.train_losses
    assert resumable_run.test_result == plain.test_result
    for name, value in plain.model.state_dict().items():
        assert torch.equal(resumable_run.model.state_dict()[name], value), name


# ------------------------------------------------------------------ same seed, same numbers
def test_same_seed_same_metrics_and_parameters(small_config_dict):
    config = {**small_config_dict, "epochs": 3, "learning_rate": 0.01}
    first, second = (fit_run(build_run("HDCCF", config)) for _ in range(2))
    assert first.test_result == second.test_result
    assert first.best_valid_result == second.best_valid_result
    assert first.train_losses == second.train_losses
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------ SIGKILL, then --resume
EPOCHS = 30  # an epoch of the tiny data takes ~0.05 s: long enough to kill the run midway


def _cli(config_file: Path, cwd: Path, env: dict, *extra: str, model="HDCCF") -> subprocess.Popen:
    command = [
        sys.executable,
        str(SCRIPT),
        f"--model={model}",
        "--dataset=tiny",
        f"--config_files={config_file}",
        *extra,
    ]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _printed(output: str, label: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(f"{label}: ")]
    assert lines, output[-3000:]
    return lines[-1].split(": ", 1)[1]


def _finish(process: subprocess.Popen, timeout=240) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def _last_epoch(folder: Path) -> int:
    """The epoch of the newest last checkpoint in ``folder`` (-1 if none yet)."""
    files = _last_files(folder)
    return load_checkpoint(files[0])["epoch"] if files else -1


def _kill_after_epoch(process: subprocess.Popen, folder: Path, epoch: int, timeout=180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if _last_epoch(folder) >= epoch:
            process.send_signal(signal.SIGKILL)
            process.communicate()
            return _last_epoch(folder)
        time.sleep(0.01)
    output = process.communicate()[0] if process.poll() is not None else ""
    pytest.fail(f"no last checkpoint of epoch {epoch} appeared in time\n{output[-3000:]}")


@pytest.mark.parametrize("model", ["HDCCF", "BPR"])  # a plugin model and one of RecBole's
def test_killed_run_resumes_to_the_uninterrupted_result(
    model, tiny_data_path, tmp_path, subprocess_env
):
    """The uninterrupted and the killed run go side by side, one thread each (two processes
    with a thread per core each oversubscribe the CPU: OpenMP's spinning slows them 10x). The
    resumed run uses one thread too: float sums depend on the thread count."""
    env = {**subprocess_env, "OMP_NUM_THREADS": "1"}

    def config_file(name: str) -> Path:
        config = small_config(
            tiny_data_path,
            tmp_path / name,
            epochs=EPOCHS,
            stopping_step=EPOCHS,
            learning_rate=0.01,
        )
        path = tmp_path / f"{name}.yaml"
        path.write_text(config_yaml(config), encoding="utf-8")
        return path

    whole = _cli(config_file("whole"), tmp_path, env, model=model)
    killed_dir = tmp_path / "killed"
    killed = _cli(config_file("killed"), tmp_path, env, model=model)
    at = _kill_after_epoch(killed, killed_dir, 2)
    assert killed.returncode == -signal.SIGKILL
    assert 2 <= at < EPOCHS - 1, "the run was killed before it ended"
    for path in killed_dir.glob("*.pth"):  # nothing truncated: every checkpoint loads
        assert "state_dict" in load_checkpoint(path), path
    (best,) = [p for p in killed_dir.glob("*.pth") if not p.name.endswith("-last.pth")]
    (last,) = _last_files(killed_dir)

    resumed = _finish(_cli(config_file("killed"), tmp_path, env, f"--resume={last}", model=model))
    uninterrupted = _finish(whole)
    expected = ast.literal_eval(_printed(uninterrupted, "test result"))
    assert ast.literal_eval(_printed(resumed, "test result")) == expected
    assert ast.literal_eval(_printed(resumed, "best valid")) == ast.literal_eval(
        _printed(uninterrupted, "best valid")
    )
    assert f"resume from epoch {at + 1}" in resumed
    assert Path(_printed(resumed, "checkpoint")) == best  # best models went to the first file
    # the final states agree bit for bit, not only the rounded metrics
    final = load_checkpoint(last)
    reference = load_checkpoint(_last_files(tmp_path / "whole")[0])
    assert final["epoch"] == reference["epoch"] == EPOCHS - 1
    for name, value in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][name], value), name
