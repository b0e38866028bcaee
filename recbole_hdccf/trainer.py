"""HDCCF's trainer: RecBole's ``Trainer`` with the neighbour-sampling training dataloader, and
resumable training that loses nothing.

``recbole.utils.get_trainer`` finds it as ``recbole.trainer.HDCCFTrainer`` (see registry.py).
Evaluation, early stopping, best-model checkpoints and logging are RecBole's own.

Resuming. RecBole saves a checkpoint only when validation improves, and its
``resume_checkpoint`` restores the model, optimizer, epoch, ``cur_step`` and best score but
neither ``best_valid_result`` nor any random state. :class:`ResumableTrainerMixin` (reusable with
any RecBole ``Trainer``) also writes, at the end of every epoch, a "last" checkpoint
``<best file without .pth>-last.pth`` (atomically, through :func:`compat.atomic_torch_save`)
with everything needed to continue exactly: model, optimizer, epoch, ``cur_step``, best score and
result, the best model's file, whether early stopping had fired, the train loader's torch
generator, the torch / numpy / python (and CUDA) random states of every rank, and the epoch
log (each epoch's seconds and validation score, so a time budget and a benchmark's costs carry
over). ``resume_checkpoint`` accepts that file (or a best file) and restores all of it; best models
keep going to the original best file, so ``evaluate(load_best_model=True)`` reads the right one.

RecBole's own models get the same through :func:`resumable`, which the plugin's ``run_recbole``
applies to RecBole's default ``Trainer``.
"""

from __future__ import annotations

import os
import random
from time import monotonic

import numpy as np
import torch
from recbole.trainer import Trainer

from recbole_hdccf import compat
from recbole_hdccf.sampler import NeighborTrainDataLoader

LAST_SUFFIX = "-last"
LAST_FORMAT = "recbole_hdccf.last/1"


class StopTraining(Exception):  # noqa: N818 (a signal, as StopIteration, not an error)
    """Raised from ``fit``'s callback to end training as early stopping would: the last
    checkpoint of that epoch says the run has ended, and why (``reason``), so resuming it trains
    nothing more and still knows what ended it."""

    reason = "stopped"


EARLY_STOPPING = "early_stopping"  # the stop reason RecBole's own early stopping leaves


def last_checkpoint_path(best_file: str) -> str:
    """``saved/HDCCF-...-1a2b3c.pth`` -> ``saved/HDCCF-...-1a2b3c-last.pth``."""
    root, ext = os.path.splitext(best_file)
    return f"{root}{LAST_SUFFIX}{ext or '.pth'}"


def random_states() -> dict:
    """The process's torch, CUDA, numpy and python random states."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_random_states(states: dict) -> None:
    """Restore what :func:`random_states` returned."""
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


class ResumableTrainerMixin:
    """Put before RecBole's ``Trainer`` in the bases: end-of-epoch "last" checkpoints and an exact
    ``resume_checkpoint`` (module docstring). Epoch ends: right after training when the epoch
    does not evaluate, otherwise after evaluation, the best-model save and ``fit``'s callback."""

    _in_fit = False
    _saving = False
    _has_valid_data = False
    _finished = False  # resumed from a run that had already ended
    stop_reason: str | None = None  # why training ended: a StopTraining reason, EARLY_STOPPING
    _pending_generator = None  # train loader generator state to apply at the next epoch
    _train_loader = None
    _resumed_rank_states = None
    _epoch_clock = 0.0
    checkpoint_config = None  # the Config of the run a resumed last checkpoint came from
    epoch_log: list[dict]  # {"epoch", "seconds", "valid_score" (None: not evaluated)} per epoch

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch_log = []

    @property
    def last_checkpoint_file(self) -> str:
        return last_checkpoint_path(self.saved_model_file)

    # ------------------------------------------------------------------ writing
    def _rank(self) -> int:
        config = self.config
        return 0 if config["single_spec"] else config["local_rank"] + (config["offset"] or 0)

    def _rank_state(self) -> dict:
        loader = self._train_loader
        generator = getattr(loader, "generator", None)
        return {
            "rng": random_states(),
            "train_generator": generator.get_state() if generator is not None else None,
        }

    def _all_rank_states(self) -> list[dict]:
        """Every rank's random states, rank order (a collective in a distributed run)."""
        mine = self._rank_state()
        if not compat.is_distributed(self.config):
            return [mine]
        states = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(states, mine)
        return states

    def last_checkpoint_state(
        self, epoch: int, stop_reason: str | None, rank_states: list[dict]
    ) -> dict:
        """RecBole's checkpoint fields plus what an exact resume needs."""
        return {
            "format": LAST_FORMAT,
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "best_valid_result": self.best_valid_result,
            "best_model_file": os.path.abspath(self.saved_model_file),
            "stopped": stop_reason is not None,
            "stop_reason": stop_reason,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
            "rank_states": rank_states,
            "epoch_log": list(self.epoch_log),
        }

    def save_last_checkpoint(self, epoch: int, stop_reason: str | None = None) -> None:
        """Write the last checkpoint of ``epoch`` (every rank takes part; the first rank of each
        node writes, as RecBole does for best models)."""
        rank_states = self._all_rank_states()
        if not self.config["single_spec"] and self.config["local_rank"] != 0:
            return
        state = self.last_checkpoint_state(epoch, stop_reason, rank_states)
        compat.atomic_torch_save(state, self.last_checkpoint_file)

    def _log_epoch(self, epoch_idx: int, valid_score=None) -> None:
        """Add the epoch's seconds (training and validation) to :attr:`epoch_log`."""
        if not self._in_fit:
            return
        now = monotonic()
        score = None if valid_score is None else float(valid_score)
        self.epoch_log.append(
            {"epoch": epoch_idx, "seconds": now - self._epoch_clock, "valid_score": score}
        )
        self._epoch_clock = now

    def _end_of_epoch(self, epoch_idx: int, stop_reason: str | None = None) -> None:
        if not self._in_fit:
            return
        if stop_reason is None and self.cur_step > self.stopping_step:
            stop_reason = EARLY_STOPPING
        self.stop_reason = stop_reason
        if self._saving:
            self.save_last_checkpoint(epoch_idx, stop_reason=stop_reason)

    def _evaluates_after(self, epoch_idx: int) -> bool:
        """Whether RecBole's ``fit`` evaluates after training epoch ``epoch_idx``."""
        return self.eval_step > 0 and self._has_valid_data and (epoch_idx + 1) % self.eval_step == 0

    # ------------------------------------------------------------------ the training loop
    def fit(
        self,
        train_data,
        valid_data=None,
        verbose=True,
        saved=True,
        show_progress=False,
        callback_fn=None,
    ):
        if self._finished:  # RecBole would save the current (last, not best) model as the best
            return self.best_valid_score, self.best_valid_result

        def end_of_evaluated_epoch(epoch_idx, valid_score):
            # The callback first: a kill between it and the save repeats the epoch on resume,
            # never skips what the callback records. StopTraining (a time budget) ends the run.
            self._log_epoch(epoch_idx, valid_score)
            stop_reason = None
            try:
                if callback_fn:
                    callback_fn(epoch_idx, valid_score)
            except StopTraining as stop:
                stop_reason = stop.reason
                raise
            finally:
                self._end_of_epoch(epoch_idx, stop_reason=stop_reason)

        self._in_fit, self._saving, self._has_valid_data = True, saved, bool(valid_data)
        self._epoch_clock = monotonic()
        try:
            return super().fit(
                train_data,
                valid_data,
                verbose=verbose,
                saved=saved,
                show_progress=show_progress,
                callback_fn=end_of_evaluated_epoch,
            )
        finally:
            self._in_fit = False

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._train_loader = train_data
        if self._pending_generator is not None and hasattr(train_data, "generator"):
            train_data.generator.set_state(self._pending_generator)
            self._pending_generator = None
        result = super()._train_epoch(
            train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress
        )
        if not self._evaluates_after(epoch_idx):
            self._log_epoch(epoch_idx)
            self._end_of_epoch(epoch_idx)
        return result

    # ------------------------------------------------------------------ resuming
    def resume_checkpoint(self, resume_file):
        """Continue from a last checkpoint (exactly) or from a best one (RecBole's fields only)."""
        resume_file = str(resume_file)
        checkpoint = compat.load_checkpoint(resume_file, map_location=self.device)
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                f"{resume_file} holds a {checkpoint['config']['model']} model, not "
                f"{self.config['model']}: loading its parameters may fail"
            )
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.best_valid_result = checkpoint.get("best_valid_result")
        self.saved_model_file = checkpoint.get("best_model_file") or resume_file
        self._restore_rank_state(checkpoint.get("rank_states"))
        self.epoch_log = list(checkpoint.get("epoch_log") or [])  # a best file has none
        self.checkpoint_config = checkpoint["config"]
        # Last checkpoints written before stop reasons existed say only "stopped".
        stopped = checkpoint.get("stopped", False)
        self.stop_reason = checkpoint.get("stop_reason") or ("stopped" if stopped else None)
        self._finished = checkpoint.get("format") == LAST_FORMAT and (
            stopped or self.start_epoch >= self.epochs
        )
        ended = f"training had ended ({self.stop_reason or 'its epochs were done'})"
        self.logger.info(
            f"Checkpoint {resume_file} loaded: "
            + (ended if self._finished else f"resume from epoch {self.start_epoch}")
            + f"; best models go to {self.saved_model_file}"
        )

    def reopen(self) -> None:
        """Train on after a resumed run that a :class:`StopTraining` reason ended, because that
        reason no longer holds (a larger time budget): up to ``epochs``, with early stopping as
        it stood. The checkpoint is exact, so the epochs that follow are those the run would
        have trained had it never stopped."""
        if self.stop_reason == EARLY_STOPPING:
            raise ValueError("early stopping ended this run: reopening it would change its result")
        self.stop_reason = None
        self._finished = self.start_epoch >= self.epochs

    def _restore_rank_state(self, rank_states) -> None:
        if not rank_states:
            return
        rank = self._rank()
        state = rank_states[rank] if rank < len(rank_states) else rank_states[0]
        set_random_states(state["rng"])
        self._pending_generator = state["train_generator"]


class ResumableTrainer(ResumableTrainerMixin, Trainer):
    """RecBole's default ``Trainer`` with last checkpoints and an exact resume."""


def resumable(trainer_class: type) -> type:
    """The trainer a plugin run uses: ``trainer_class`` itself when it is resumable already, or
    :class:`ResumableTrainer` for RecBole's default ``Trainer``. RecBole's special trainers
    (pre-training, knowledge graphs, decision trees, ...) train in phases or override ``fit``,
    so they keep their own; their runs resume from a best file, as in RecBole."""
    return ResumableTrainer if trainer_class is Trainer else trainer_class


class HDCCFTrainer(ResumableTrainerMixin, Trainer):
    def __init__(self, config, model):
        super().__init__(config, model)

    def neighbor_loader(self, train_data):
        """RecBole's train loader, rebuilt as a :class:`NeighborTrainDataLoader` over the same
        training split (idempotent)."""
        if isinstance(train_data, NeighborTrainDataLoader):
            return train_data
        return NeighborTrainDataLoader(
            self.config,
            train_data._dataset,
            train_data._sampler,
            self.model.train_graph,
            shuffle=train_data.shuffle,
        )

    def fit(
        self,
        train_data,
        valid_data=None,
        verbose=True,
        saved=True,
        show_progress=False,
        callback_fn=None,
    ):
        return super().fit(
            self.neighbor_loader(train_data),
            valid_data,
            verbose=verbose,
            saved=saved,
            show_progress=show_progress,
            callback_fn=callback_fn,
        )

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        train_data = self.neighbor_loader(train_data)
        train_data.set_epoch(epoch_idx)
        return super()._train_epoch(
            train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress
        )
