"""``run_recbole`` as RecBole 1.2.1 has it, plus what the plugin's entry points need.

Differences from ``recbole.quick_start.run_recbole`` (everything else is the same sequence):
- ``resume``: a checkpoint to continue training from (``Trainer.resume_checkpoint``);
- plugin model settings are validated right after the ``Config`` is built (before the dataset is
  loaded, and in the parent process before ``nproc`` processes are spawned), so a bad setting is a
  :class:`~recbole_hdccf.settings.ConfigError` however the run is started;
- the result also holds ``checkpoint`` (the saved model file), ``last_checkpoint`` (the end of
  epoch checkpoint to ``resume`` from, for trainers that write one, e.g. HDCCF's) and ``config``;
- a model name neither the plugin nor RecBole knows fails first, with the list of plugin models.
Any RecBole model runs through it unchanged.
"""

from __future__ import annotations

import os
import sys
from logging import getLogger

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
from recbole_hdccf.settings import HDCCFSettings

# Plugin models whose settings can be checked from the Config alone.
SETTINGS_CHECKS = {"HDCCF": HDCCFSettings.from_config}


def validate_config(config, world_size=None) -> None:
    """Raise ``ConfigError`` for bad settings of a plugin model (RecBole models: nothing).
    ``world_size``: the run's processes, when ``config`` is not one of theirs."""
    check = SETTINGS_CHECKS.get(config["model"])
    if check is not None:
        check(config, world_size=world_size)


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

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    if resume:
        trainer.resume_checkpoint(resume)
    best_valid_score, best_valid_result = trainer.fit(
        train_data,
        valid_data,
        saved=saved,
        show_progress=config["show_progress"],
        callback_fn=callback_fn,
    )
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
        "config": config,
    }
    if not config["single_spec"]:
        dist.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        result.pop("config")  # the queue pickles; a Config holds a torch.device and loggers
        queue.put(result)
    return result


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
