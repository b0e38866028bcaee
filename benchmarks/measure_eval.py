"""Measure what a sampled validation (``uni99``) costs with the plugin and with RecBole alone.

RecBole builds a sampled-evaluation batch user by user; with fixed candidates the plugin builds
each validation batch once and hands out copies at later validations (``candidates.py``). And
LightGCN's and NGCF's ``predict`` propagate over the whole graph for every batch; the plugin
propagates once per evaluation (``compat.py``, ``propagate_once_per_evaluation``). This times
``Trainer.evaluate`` on the validation loader both ways, alternating (ABBA) on the same model
after ``--epochs`` training epochs (timed, for scale), and reports medians and whether the
results are equal.

    python benchmarks/measure_eval.py --model=ENMF --protocol=paper-random --set dropout_prob=0.3
    python benchmarks/measure_eval.py --model=LightGCN --protocol=paper --set learning_rate=0.01
"""

from __future__ import annotations

import argparse
import statistics
import time
import types


def main() -> None:
    from measure_common import add_model_arguments, build_from_arguments

    parser = argparse.ArgumentParser()
    add_model_arguments(parser, model="ENMF", protocol="paper-random")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the tables': 1)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs first (0: none)")
    parser.add_argument("--rounds", type=int, default=3, help="ABBA rounds (4 evaluations each)")
    args = parser.parse_args()
    import torch
    from recbole.data.dataloader.general_dataloader import NegSampleEvalDataLoader

    torch.set_num_threads(args.threads)
    config, train_data, valid_data, model, trainer = build_from_arguments(args)
    epoch_seconds = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        trainer._train_epoch(train_data, epoch, show_progress=False)
        epoch_seconds.append(time.perf_counter() - start)

    # The loader's collate_fn was bound when it was built; swap the bound method per evaluation.
    model_class = type(model)
    wrapped_predict = model_class.__dict__.get("predict")
    ways = {
        "plugin": (
            types.MethodType(NegSampleEvalDataLoader.collate_fn, valid_data),
            wrapped_predict,
        ),
        "RecBole": (
            types.MethodType(NegSampleEvalDataLoader.collate_fn.__wrapped__, valid_data),
            getattr(wrapped_predict, "__wrapped__", wrapped_predict),
        ),
    }
    times = {way: [] for way in ways}
    results = {way: [] for way in ways}
    order = list(ways)
    for _ in range(args.rounds):
        for way in order + order[::-1]:
            valid_data.collate_fn, predict = ways[way]
            if predict is not None:
                model_class.predict = predict
            start = time.perf_counter()
            results[way].append(trainer.evaluate(valid_data, load_best_model=False))
            times[way].append(time.perf_counter() - start)
    if wrapped_predict is not None:
        model_class.predict = wrapped_predict
    every = [r for way in ways for r in results[way]]
    plugin, recbole = (statistics.median(times[way]) for way in ways)
    print(
        f"{args.model} on {args.dataset} ({args.protocol}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s): training epochs "
        f"{', '.join(f'{t:.2f}' for t in epoch_seconds) or 'none'} s; "
        f"validation (median of {len(times['plugin'])}) plugin {plugin:.2f} s (its first, "
        f"building the batches: {times['plugin'][0]:.2f} s), RecBole {recbole:.2f} s, "
        f"ratio {recbole / plugin:.1f}; results equal: {all(r == every[0] for r in every)}"
    )


if __name__ == "__main__":
    main()
