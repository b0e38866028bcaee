"""Command-line entry points, following RecBole's ``run_recbole.py`` and ``run_hyper.py``.

Flags the scripts read are listed in ``--help``; every other ``--key=value`` is a RecBole config
key, parsed by RecBole's ``Config`` from ``sys.argv`` exactly as RecBole's own scripts do.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from recbole_hdccf.paths import protocol_file
from recbole_hdccf.registry import UnknownModelError, check_model_name, check_setting_names
from recbole_hdccf.tuning import (
    first_refused,
    trial_record,
    trials_file_for,
    without_repeats,
    write_trials,
)


def _config_files(args) -> list[str] | None:
    files = []
    if getattr(args, "protocol", None):
        files.append(str(protocol_file(args.protocol)))
    if args.config_files:
        files += args.config_files.strip().split(" ")
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} (from --config_files) does not exist")
    return files or None


def _command_line_settings(extra: list[str]) -> list[str]:
    """The RecBole config keys of the ``--key=value`` arguments the script itself does not read."""
    return [arg[2:].split("=", 1)[0] for arg in extra if arg.startswith("--")]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config_files", type=str, default=None, help="space-separated yaml files")
    parser.add_argument(
        "--protocol",
        type=str,
        default=None,
        help="evaluation preset from properties/protocol (paper, paper-random, full, "
        "recbole-benchmark) or a yaml file's path",
    )


def run_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Train and test a model (HDCCF or any RecBole model)."
    )
    parser.add_argument("--model", "-m", type=str, default="HDCCF", help="model name")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name")
    _common(parser)
    parser.add_argument(
        "--resume",
        type=str,
        default=None,
        help="checkpoint to resume training from: the <best>-last.pth file written after every "
        "epoch (HDCCF, and RecBole models with RecBole's default trainer) continues exactly "
        "(see docs/robustness.md), a best file as RecBole does",
    )
    parser.add_argument("--nproc", type=int, default=1, help="processes on this node")
    parser.add_argument("--ip", type=str, default="localhost", help="address of the rank-0 node")
    parser.add_argument("--port", type=str, default="5678", help="port of the rank-0 node")
    parser.add_argument("--world_size", type=int, default=-1, help="processes over all nodes")
    parser.add_argument(
        "--group_offset", type=int, default=0, help="rank of this node's first process"
    )
    args, extra = parser.parse_known_args(argv)
    try:
        check_model_name(args.model)
        config_files = _config_files(args)
        check_setting_names(args.model, _command_line_settings(extra), config_files or [])
        if args.resume and not os.path.isfile(args.resume):
            raise FileNotFoundError(f"checkpoint {args.resume!r} (from --resume) does not exist")
    except (UnknownModelError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    from recbole_hdccf.compat import DatasetNotFoundError
    from recbole_hdccf.quick_start import run
    from recbole_hdccf.settings import ConfigError

    try:
        result = run(
            args.model,
            args.dataset,
            config_file_list=config_files,
            nproc=args.nproc,
            world_size=args.world_size,
            ip=args.ip,
            port=args.port,
            group_offset=args.group_offset,
            resume=args.resume,
        )
    except (DatasetNotFoundError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if result is not None:
        print(f"best valid: {dict(result['best_valid_result'] or {})}")
        print(f"test result: {dict(result['test_result'] or {})}")
        if result.get("checkpoint"):
            print(f"checkpoint: {result['checkpoint']}")
        if result.get("last_checkpoint"):
            print(f"last checkpoint: {result['last_checkpoint']}")
    return 0


def hyper_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Tune a model with RecBole's HyperTuning (hyperopt)."
    )
    parser.add_argument("--model", "-m", type=str, default="HDCCF", help="model name")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name")
    _common(parser)
    parser.add_argument(
        "--params_file", type=str, default=None, help="search space (RecBole .hyper format)"
    )
    parser.add_argument(
        "--output_file", type=str, default="hyper_result.result", help="RecBole's result file"
    )
    parser.add_argument(
        "--display_file", type=str, default=None, help="HTML plot of the search (needs plotly)"
    )
    parser.add_argument(
        "--tool", type=str, default="Hyperopt", choices=["Hyperopt"], help="tuning tool"
    )
    parser.add_argument(
        "--algo", type=str, default="exhaustive", choices=["exhaustive", "random", "bayes"]
    )
    parser.add_argument("--max_evals", type=int, default=100, help="trials for random and bayes")
    parser.add_argument(
        "--early_stop", type=int, default=10, help="stop after this many trials without gain"
    )
    args, extra = parser.parse_known_args(argv)
    try:
        check_model_name(args.model)
        config_files = _config_files(args) or []
        check_setting_names(args.model, _command_line_settings(extra), config_files)
    except (UnknownModelError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    params_file = args.params_file or _default_params_file(args.model)
    if params_file is None or not os.path.isfile(params_file):
        print(
            f"error: no search space: give --params_file (e.g. properties/hyper/HDCCF.hyper); "
            f"{params_file!r} does not exist",
            file=sys.stderr,
        )
        return 2

    from recbole.trainer import HyperTuning

    from recbole_hdccf.quick_start import objective_function

    # hyperopt's random and TPE draws follow this seed, so a search can be repeated.
    os.environ.setdefault("HYPEROPT_FMIN_SEED", "2020")
    fixed = {"model": args.model, "dataset": args.dataset}

    trials_file = trials_file_for(args.output_file)
    trials = []
    search = {  # what the search was, beside its trials: the space as it was then
        **fixed,
        "algo": args.algo,
        "arguments": list(sys.argv[1:] if argv is None else argv),
        "params_file": params_file,
        "space": Path(params_file).read_text(encoding="utf-8").splitlines(),
    }

    def objective(params, fixed_config_file_list):
        started = time.perf_counter()
        result = objective_function({**fixed, **params}, fixed_config_file_list)
        trials.append(trial_record(params, result, time.perf_counter() - started))
        # after every trial, so an interrupted search keeps the trials it finished
        write_trials(trials_file, search, trials)
        return result

    tuner = HyperTuning(
        objective,
        algo=args.algo,
        early_stop=args.early_stop,
        max_evals=args.max_evals,
        params_file=params_file,
        fixed_config_file_list=config_files,
        display_file=args.display_file,
    )
    try:
        check_setting_names(args.model, list(tuner.space), config_files)
    except ValueError as error:
        print(f"error: the search space {params_file}: {error}", file=sys.stderr)
        return 2
    if args.algo == "random":
        without_repeats(tuner, args.max_evals)
    search["max_evals"] = int(tuner.max_evals)
    from recbole_hdccf.compat import DatasetNotFoundError
    from recbole_hdccf.settings import ConfigError

    refused = _refused_draw(args.model, args.dataset, config_files, tuner.space)
    if refused is not None:
        drawn, error = refused
        print(
            f"error: the search space {params_file} can draw settings {args.model} refuses "
            f"({_settings_text(drawn)}): {error}. Change the space so that no draw combines "
            "these values; no trial was run",
            file=sys.stderr,
        )
        return 2
    try:
        tuner.run()
    except (DatasetNotFoundError, ConfigError) as error:  # a bad trial names its setting
        print(f"error: {error}", file=sys.stderr)
        return 2
    tuner.export_result(output_file=args.output_file)
    print("best params: ", tuner.best_params)
    print("best result: ")
    print(tuner.params2result[tuner.params2str(tuner.best_params)])
    print(f"results written to {args.output_file} and {trials_file}")
    return 0


def _refused_draw(model, dataset, config_files, space):
    """A corner of the search space (:func:`tuning.first_refused`) whose trial would stop the
    search at its settings check, with the error; None when every corner passes. Each corner is
    checked as its trial would be: the drawn values over the config files, and the command line
    over both (RecBole's order)."""
    from recbole.config import Config

    from recbole_hdccf.quick_start import validate_config

    base = Config(model=model, dataset=dataset, config_file_list=config_files or None)
    fixed = dict(base.final_config_dict)

    def check(drawn):
        validate_config(_AsConfig({**fixed, **drawn, **base.cmd_config_dict}), world_size=1)

    return first_refused(space, check)


class _AsConfig(dict):
    """A config dict read as RecBole's ``Config`` is: a missing key reads None."""

    def __missing__(self, key):
        return None


def _settings_text(drawn: dict) -> str:
    return ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value!r}"
        for key, value in drawn.items()
    )


def _default_params_file(model: str) -> str | None:
    from recbole_hdccf.paths import properties_dir

    path = properties_dir() / "hyper" / f"{model}.hyper"
    return str(path) if path.is_file() else None
