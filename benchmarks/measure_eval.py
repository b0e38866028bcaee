"""Measure what a sampled evaluation (``uni99``) costs with its batches built once, in one process.

RecBole builds a sampled-evaluation batch user by user; with fixed candidates the plugin builds
each batch once and hands out copies at later evaluations (``recbole_hdccf/candidates.py``). This
times ``Trainer.evaluate`` on the validation loader both ways, alternating (ABBA) on the same
trained model, reports medians, one training epoch for scale, and whether the results are equal.

    python benchmarks/measure_eval.py --model=ENMF --protocol=paper-random --set dropout_prob=0.3
    python benchmarks/measure_eval.py --model=BPR --protocol=paper
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import types


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ENMF")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--data_path", default="../shared/datasets")
    parser.add_argument("--protocol", default="paper-random")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the tables': 1)")
    parser.add_argument("--rounds", type=int, default=3, help="ABBA rounds (4 evaluations each)")
    parser.add_argument("--set", action="append", default=[], help="key=value (repeatable)")
    args = parser.parse_args()
    data_path = os.path.abspath(args.data_path)
    os.chdir(tempfile.mkdtemp())  # RecBole writes ./log; its Config parses sys.argv
    sys.argv = sys.argv[:1]

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.dataloader.general_dataloader import NegSampleEvalDataLoader
    from recbole.utils import get_model, get_trainer, init_seed

    import recbole_hdccf  # noqa: F401  (installs the cache)
    from recbole_hdccf.benchmark import parse_value
    from recbole_hdccf.paths import model_files, protocol_file

    torch.set_num_threads(args.threads)
    files = [str(protocol_file(args.protocol)), *model_files(args.model)]  # as the benchmark
    config = Config(
        model=args.model,
        dataset=args.dataset,
        config_file_list=files,
        config_dict={
            "data_path": data_path,
            "show_progress": False,
            "seed": 2020,
            **{k: parse_value(v) for k, v in (pair.split("=", 1) for pair in args.set)},
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    start = time.perf_counter()
    trainer._train_epoch(train_data, 0, show_progress=False)
    epoch_seconds = time.perf_counter() - start

    # The loader's collate_fn was bound when it was built; swap the bound method per evaluation.
    ways = {
        "built once": types.MethodType(NegSampleEvalDataLoader.collate_fn, valid_data),
        "RecBole's build": types.MethodType(
            NegSampleEvalDataLoader.collate_fn.__wrapped__, valid_data
        ),
    }
    times = {way: [] for way in ways}
    results = {way: [] for way in ways}
    order = list(ways)
    for _ in range(args.rounds):
        for way in order + order[::-1]:
            valid_data.collate_fn = ways[way]
            start = time.perf_counter()
            results[way].append(trainer.evaluate(valid_data, load_best_model=False))
            times[way].append(time.perf_counter() - start)
    every = [r for way in ways for r in results[way]]
    cached, built = (statistics.median(times[way]) for way in ways)
    print(
        f"{args.model} on {args.dataset} ({args.protocol}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s): one training epoch {epoch_seconds:.2f} s; "
        f"validation (median of {len(times[order[0]])}) built once {cached:.2f} s "
        f"(first, building: {times[order[0]][0]:.2f} s), RecBole's build {built:.2f} s, "
        f"ratio {built / cached:.1f}; results equal: {all(r == every[0] for r in every)}"
    )


if __name__ == "__main__":
    main()
