"""What the ``measure_*.py`` scripts share: a model, its data and its trainer, built as a benchmark
run builds them (the protocol's yaml, then the plugin's yaml for the model, then the settings), in
a scratch working folder."""

from __future__ import annotations

import os
import sys
import tempfile


def add_model_arguments(parser, model: str, protocol: str) -> None:
    """The arguments that choose what :func:`build_from_arguments` builds."""
    parser.add_argument("--model", default=model)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data_path", default="../shared/datasets")
    parser.add_argument("--protocol", default=protocol)
    parser.add_argument("--set", action="append", default=[], help="key=value (repeatable)")


def build_from_arguments(args, **settings):
    """:func:`build_like_benchmark` for :func:`add_model_arguments`' arguments, ``settings``
    over ``--set``."""
    from recbole_hdccf.benchmark import parse_settings

    return build_like_benchmark(
        args.model,
        args.dataset,
        args.data_path,
        args.protocol,
        {**parse_settings(args.set), **settings},
    )


def build_like_benchmark(
    model_name: str, dataset: str, data_path: str, protocol: str, settings=None, seed: int = 2020
):
    """``(config, train_data, valid_data, model, trainer)``. Leaves the process in a scratch
    folder: RecBole writes ``./log``, and its ``Config`` parses ``sys.argv``."""
    from recbole_hdccf.paths import model_files, protocol_file

    files = [str(protocol_file(protocol)), *model_files(model_name)]  # resolved before chdir
    data_path = os.path.abspath(data_path)
    os.chdir(tempfile.mkdtemp())
    sys.argv = sys.argv[:1]

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    import recbole_hdccf  # noqa: F401  (the plugin's models, shims and allocator setting)
    from recbole_hdccf.trainer import resumable

    config_dict = {"data_path": data_path, "show_progress": False, "seed": seed}
    config = Config(
        model=model_name,
        dataset=dataset,
        config_file_list=files,
        config_dict={**config_dict, **(settings or {})},
    )
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    trainer = resumable(get_trainer(config["MODEL_TYPE"], model_name))(config, model)
    return config, train_data, valid_data, model, trainer
