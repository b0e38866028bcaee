"""``run_recbole`` as RecBole 1.2.1 has it, plus what the plugin's entry points need.

Differences from ``recbole.quick_start.run_recbole`` (everything else is the same sequence):
- ``resume``: a checkpoint to continue training from (``Trainer.resume_checkpoint``);
- plugin model settings are validated right after the ``Config`` is built (before the dataset is
  loaded, and in the parent process before ``nproc`` processes are spawned), so a bad setting is a
  :class:`~recbole_hdccf.settings.ConfigError` however the run is started;
- RecBole's default ``Trainer`` becomes :class:`~recbole_hdccf.trainer.ResumableTrainer`, so
  RecBole's models (BPR, LightGCN, ...) write end-of-epoch checkpoints and resume exactly, as
  HDCCF does; the numbers are the same (``trainer.resumable``);
- the result also holds ``checkpoint`` (the saved model file), ``last_checkpoint`` (the end of
  epoch checkpoint to ``resume`` from, for trainers that write one), ``epoch_log`` (each epoch's
  seconds and validation score, a resumed run's earlier epochs included; None for trainers
  without one), ``resumed_after_epochs`` (epochs trained before this process) and ``config``;
- a model name neither the plugin nor RecBole knows fails first, with the list of plugin models;
- ``train_time_budget`` (seconds, any model, one process): training stops after the last
  validation that leaves time for another epoch within the budget, and the best model so far is
  tested, as if early stopping had fired (``result["time_budget_reached"]``). For fixed-cost
  comparisons on lent machines; ``epochs`` and ``stopping_step`` still apply. A resumed run
  counts the seconds of the epochs it trained before against the budget; a run the budget
  ended, resumed under a larger budget (or none) that leaves room for another epoch, trains on
  from where it stopped, exactly as if it had run under that budget from the start (as a run
  that its ``epochs`` ended trains on under larger ``epochs``).
Any RecBole model runs through it unchanged. :func:`objective_function` is RecBole's tuning
objective on top of it, so trials get the same checks and the same time budget.
"""

from __future__ import annotations

import numbers
import os
import sys
from logging import getLogger
from time import monotonic

import torch.distributed as dist
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.transform import construct_transform
from recbole.utils import (
    get_environment,
    get_flops,
    get_model,
    get_trainer,
    init_logger,
    init_seed,
    set_color,
)

from recbole_hdccf.registry import check_model_name
from recbole_hdccf.settings import ConfigError, HDCCFSettings
from recbole_hdccf.trainer import StopTraining, resumable

# Plugin models whose settings can be checked from the Config alone.
SETTINGS_CHECKS = {"HDCCF": HDCCFSettings.from_config}


def validate_config(config, world_size=None) -> None:
    """Raise ``ConfigError`` for bad settings of a plugin model (RecBole models: nothing).
    ``world_size``: the run's processes, when ``config`` is not one of theirs."""
    check = SETTINGS_CHECKS.get(config["model"])
    if check is not None:
        check(config, world_size=world_size)
    budget = config["train_time_budget"]
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or budget <= 0:
            hint = ""
            if isinstance(budget, str) and budget.startswith(os.path.expanduser("~")):
                hint = " (a shell turned an unquoted ~ into your home folder: write null or '~')"
            raise ConfigError(
                f"train_time_budget={budget!r}: must be a positive number of seconds, or null "
                f"(also ~) for none{hint}"
            )
        if (world_size or config["nproc"] or 1) > 1:
            raise ConfigError(
                f"train_time_budget={budget!r}: supported in single-process runs only (processes "
                "could stop at different epochs); drop it or use nproc=1"
            )


class TimeBudgetReached(StopTraining):
    """Raised from the validation callback to end ``Trainer.fit`` at the time budget."""

    reason = "time_budget"

    def __init__(self, epoch_idx: int, elapsed: float):
        super().__init__(f"epoch {epoch_idx}, {elapsed:.0f} s")
        self.epoch_idx, self.elapsed = epoch_idx, elapsed


def with_time_budget(callback_fn, budget, spent=()):
    """``callback_fn`` that also raises :class:`TimeBudgetReached` after a validation when the
    next epoch (as long as the longest so far) would end past ``budget`` seconds from the first
    call's start. ``spent``: the seconds of epochs trained before (a resumed run's), which count
    as if they had run just before. ``budget=None`` returns ``callback_fn`` unchanged."""
    if budget is None:
        return callback_fn
    now = monotonic()
    start = now - sum(spent)
    last = [now, max(spent, default=0.0)]  # time of the previous validation, longest epoch

    def callback(epoch_idx, valid_score):
        if callback_fn:
            callback_fn(epoch_idx, valid_score)
        now = monotonic()
        last[1] = max(last[1], now - last[0])
        last[0] = now
        if not next_epoch_fits(budget, now - start, last[1]):
            raise TimeBudgetReached(epoch_idx, now - start)

    return callback


def next_epoch_fits(budget, elapsed: float, longest_epoch: float) -> bool:
    """Whether another epoch, as long as the longest so far, ends within ``budget`` seconds
    (None: no budget) after ``elapsed``: the time budget's one rule."""
    return budget is None or elapsed + longest_epoch <= budget


def budget_was_raised(before, now) -> bool:
    """Whether budget ``now`` is larger than ``before`` (None: no budget, larger than any)."""
    return before is not None and (now is None or now > before)


def run_recbole(
    model=None,
    dataset=None,
    config_file_list=None,
    config_dict=None,
    saved=True,
    queue=None,
    resume=None,
    callback_fn=None,
):
    r"""Train and test one model on one dataset; returns RecBole's result dict plus
    ``checkpoint`` and ``config``. ``callback_fn(epoch_idx, valid_score)`` runs after each
    validation, as in ``Trainer.fit``."""
    check_model_name(model)
    config = Config(
        model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict
    )
    validate_config(config)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)

    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(model)
    transform = construct_transform(config)
    flops = get_flops(model, dataset, config["device"], logger, transform)
    logger.info(set_color("FLOPs", "blue") + f": {flops}")

    trainer = resumable(get_trainer(config["MODEL_TYPE"], config["model"]))(config, model)
    if resume:
        trainer.resume_checkpoint(resume)
    earlier_epochs = list(getattr(trainer, "epoch_log", None) or [])
    if resume and getattr(trainer, "stop_reason", None) == TimeBudgetReached.reason:
        _reopen_under_a_larger_budget(trainer, config["train_time_budget"], earlier_epochs, logger)
    budget_reached = False
    try:
        best_valid_score, best_valid_result = trainer.fit(
            train_data,
            valid_data,
            saved=saved,
            show_progress=config["show_progress"],
            callback_fn=with_time_budget(
                callback_fn,
                config["train_time_budget"],
                spent=[epoch["seconds"] for epoch in earlier_epochs],
            ),
        )
    except TimeBudgetReached as stop:
        budget_reached = True
        logger.info(
            f"train_time_budget={config['train_time_budget']} s reached after epoch "
            f"{stop.epoch_idx} ({stop.elapsed:.0f} s): testing the best model so far"
        )
        best_valid_score, best_valid_result = trainer.best_valid_score, trainer.best_valid_result
    # A run the budget ended, killed before its test and resumed, raises nothing: its last
    # checkpoint kept the reason.
    budget_reached |= getattr(trainer, "stop_reason", None) == TimeBudgetReached.reason
    test_result = trainer.evaluate(
        test_data, load_best_model=saved, show_progress=config["show_progress"]
    )

    logger.info(
        "The running environment of this training is as follows:\n" + get_environment(config).draw()
    )
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    if saved:
        logger.info(set_color("checkpoint", "yellow") + f": {trainer.saved_model_file}")

    result = {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "checkpoint": trainer.saved_model_file if saved else None,
        "last_checkpoint": _last_checkpoint(trainer) if saved else None,
        "epoch_log": list(trainer.epoch_log) if hasattr(trainer, "epoch_log") else None,
        "resumed_after_epochs": trainer.start_epoch if resume else 0,
        "time_budget_reached": budget_reached,
        "config": config,
    }
    if not config["single_spec"]:
        dist.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        result.pop("config")  # the queue pickles; a Config holds a torch.device and loggers
        queue.put(result)
    return result


def _reopen_under_a_larger_budget(trainer, budget, earlier_epochs, logger) -> None:
    """Let a resumed run that its time budget ended train on, if ``budget`` is larger than the
    one it stopped under and leaves room for another epoch. Under the same budget it stays
    ended: the seconds its checkpoint logged are a little less than the budget's clock read, so
    the rule alone could let it train one epoch more."""
    before = trainer.checkpoint_config["train_time_budget"]
    seconds = [epoch["seconds"] for epoch in earlier_epochs]
    if budget_was_raised(before, budget) and next_epoch_fits(
        budget, sum(seconds), max(seconds, default=0.0)
    ):
        trainer.reopen()
        logger.info(
            f"train_time_budget {before} s -> {budget} s: the run that it ended after "
            f"{sum(seconds):.0f} s trains on from epoch {trainer.start_epoch}"
        )


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """RecBole's ``HyperTuning`` objective, run through :func:`run_recbole`: each trial's settings
    are validated, and ``train_time_budget`` holds per trial (the same seconds for every model
    is a fair tuning budget). Returns RecBole's trial record plus ``time_budget_reached``."""
    config_dict = dict(config_dict)
    model, dataset = config_dict.pop("model"), config_dict.pop("dataset")
    logger = getLogger()
    for handler in logger.handlers[:]:  # as RecBole's objective: each trial opens its own log
        logger.removeHandler(handler)
    result = run_recbole(model, dataset, config_file_list, config_dict, saved=saved)
    return {
        "model": model,
        "best_valid_score": result["best_valid_score"],
        "valid_score_bigger": result["valid_score_bigger"],
        "best_valid_result": result["best_valid_result"],
        "test_result": result["test_result"],
        "time_budget_reached": result["time_budget_reached"],
    }


def _last_checkpoint(trainer):
    """The trainer's end-of-epoch checkpoint (``--resume`` from it), if it writes one."""
    path = getattr(trainer, "last_checkpoint_file", None)
    return path if path and os.path.isfile(path) else None


def _run_rank(rank, model, dataset, config_file_list, kwargs):
    kwargs = dict(kwargs)
    kwargs["config_dict"] = {**kwargs.get("config_dict", {}), "local_rank": rank}
    import recbole_hdccf  # noqa: F401  (spawned processes start bare: register the plugin)

    run_recbole(model, dataset, config_file_list, **kwargs)


def _parent_config(model, dataset, config_file_list, config_dict):
    """The Config the spawned processes will build, minus the distributed keys (building it
    with ``local_rank`` would join the process group)."""
    config_dict = {k: v for k, v in config_dict.items() if k != "local_rank"}
    return Config(
        model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict
    )


def run(
    model,
    dataset,
    config_file_list=None,
    config_dict=None,
    saved=True,
    nproc=1,
    world_size=-1,
    ip="localhost",
    port="5678",
    group_offset=0,
    resume=None,
):
    r"""RecBole's ``run``: one process, or ``nproc`` processes on this node of a
    ``world_size``-process job (gloo on CPU, NCCL on GPUs)."""
    if nproc == 1 and world_size <= 0:
        return run_recbole(
            model, dataset, config_file_list, config_dict, saved=saved, resume=resume
        )
    import torch.multiprocessing as mp

    check_model_name(model)
    world_size = nproc if world_size == -1 else world_size
    validate_config(
        _parent_config(model, dataset, config_file_list, {**(config_dict or {}), "nproc": nproc}),
        world_size=world_size,
    )
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = {
        **(config_dict or {}),
        "world_size": world_size,
        "ip": ip,
        "port": port,
        "nproc": nproc,
        "offset": group_offset,
    }
    kwargs = {"config_dict": config_dict, "queue": queue, "saved": saved, "resume": resume}
    mp.spawn(_run_rank, args=(model, dataset, config_file_list, kwargs), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()
