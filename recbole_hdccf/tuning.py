"""Tuning records: every trial of ``run_hyper_hdccf.py`` as JSON, and the report that picks each
model's best trial on validation and names it as a benchmark label.

``run_hyper_hdccf.py`` writes ``<output_file stem>.json`` beside RecBole's text result, after every
trial. ``python -m recbole_hdccf.tuning --results=results/ml-100k/tune`` then reads
``<Model>/*.json`` under that folder (what ``benchmarks/results.sh tune`` writes) and prints a
table of the best trials, with the ``--models`` argument that reruns them over seeds with the
benchmark: a search on one seed chooses the settings; the seeds test them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recbole_hdccf.benchmark import METRIC_LABELS, METRICS, _write_json


def grid_size(space: dict) -> int | None:
    """How many distinct settings a hyperopt space holds: the product of its choices' lengths,
    or None when a setting is continuous (``uniform``, ``loguniform``, ``quniform``)."""
    size = 1
    for node in space.values():
        options = _choice_options(node)
        if options is None:
            return None
        size *= len(options)
    return size


def _choice_options(node) -> list | None:
    """The option nodes of an ``hp.choice`` setting (``switch(index, *options)``), else None."""
    from hyperopt.pyll.base import as_apply

    node = as_apply(node)
    return list(node.pos_args[1:]) if node.name == "switch" else None


def without_repeats(tuner, max_evals: int) -> None:
    """Random search on a finite grid, drawn without replacement: hyperopt's ``rand`` draws with
    replacement, so 6 trials on BPR's 4 learning rates trained one rate three times and never
    drew another. RecBole's ``exhaustive_search`` is that sampler (random order, no repeats);
    at most ``max_evals`` trials, and no more than the grid holds."""
    from functools import partial

    from recbole.trainer.hyper_tuning import exhaustive_search

    size = grid_size(tuner.space)
    if size is None:  # a continuous setting: repeats have probability zero
        return
    tuner.algo = partial(exhaustive_search, nbMaxSucessiveFailures=1000)
    tuner.max_evals = min(max_evals, size)


# How many corner settings the check before a search tries, at most (HDCCF's space has 576).
MAX_CORNERS = 100_000


def corner_values(node) -> list:
    """The values a space's setting is checked at before a search: every option of a ``choice``,
    the two ends of a ``uniform``, ``quniform`` or ``loguniform`` range (as drawn, so
    ``loguniform -8,-4`` gives exp(-8) and exp(-4)); a few draws of anything else."""
    import math

    import numpy as np
    from hyperopt import pyll
    from hyperopt.pyll.base import as_apply

    options = _choice_options(node)
    if options is not None:
        return [pyll.rec_eval(option) for option in options]
    node = as_apply(node)
    distribution = next((n for n in pyll.dfs(node) if n.name in _RANGES), None)
    if distribution is not None:
        low, high, *q = (pyll.rec_eval(arg) for arg in distribution.pos_args)
        ends = [low, high]
        if "log" in distribution.name:
            ends = [math.exp(end) for end in ends]
        if q:
            ends = [round(end / q[0]) * q[0] for end in ends]
        return [float(end) for end in ends]
    rng = np.random.RandomState(0)  # what hyperopt 0.2.5 draws with
    return [pyll.stochastic.sample(node, rng=rng) for _ in range(5)]


_RANGES = ("uniform", "quniform", "loguniform", "qloguniform")


def corners(space: dict):
    """Every combination of the settings' :func:`corner_values`, as ``{setting: value}`` dicts
    (at most :data:`MAX_CORNERS`)."""
    import itertools

    values = {key: corner_values(node) for key, node in space.items()}
    combinations = itertools.product(*values.values())
    for drawn in itertools.islice(combinations, MAX_CORNERS):
        yield dict(zip(values, drawn, strict=True))


def first_refused(space: dict, check) -> tuple[dict, Exception] | None:
    """The first corner of ``space`` that ``check`` (a settings dict -> None, raising
    ``ValueError`` for a refused setting) refuses, with its error; None when every corner passes.
    Run before a search so that a space which can draw a refused pair fails at once, not at the
    trial that draws it, hours in."""
    for drawn in corners(space):
        try:
            check(drawn)
        except ValueError as error:
            return drawn, error
    return None


def trials_file_for(output_file: str) -> str:
    """``trials.result`` -> ``trials.json``: the JSON record beside RecBole's result file."""
    return str(Path(output_file).with_suffix(".json"))


def trial_record(params: dict, result: dict, seconds: float) -> dict:
    """One trial: the settings drawn, RecBole's validation and test results, and what it cost."""
    return {
        "params": {key: _plain(value) for key, value in params.items()},
        "best_valid_score": _plain(result["best_valid_score"]),
        "valid_score_bigger": bool(result["valid_score_bigger"]),
        "best_valid_result": {k: _plain(v) for k, v in (result["best_valid_result"] or {}).items()},
        "test_result": {k: _plain(v) for k, v in (result["test_result"] or {}).items()},
        "time_budget_reached": bool(result.get("time_budget_reached", False)),
        "seconds": round(float(seconds), 1),
    }


def write_trials(path: str, search: dict, trials: list[dict]) -> None:
    _write_json(Path(path), {**{k: _plain(v) for k, v in search.items()}, "trials": trials})


def best_trial(trials: list[dict]) -> dict:
    """The trial with the best validation score (the first of equals, as RecBole's tuner)."""
    if not trials:
        raise ValueError("no finished trial to choose from")
    sign = 1 if trials[0]["valid_score_bigger"] else -1
    return max(trials, key=lambda trial: sign * trial["best_valid_score"])


def label(model: str, params: dict) -> str:
    """``BPR``, ``{"learning_rate": 0.002}`` -> ``BPR[learning_rate=0.002]`` (a benchmark label)."""
    if not params:
        return model
    return f"{model}[{';'.join(f'{key}={_label_value(params[key])}' for key in sorted(params))}]"


def read_searches(folder: Path) -> list[dict]:
    """Every search record under ``folder`` (``<Model>/<name>.json``), sorted by model."""
    searches = []
    for path in sorted(folder.glob("*/*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "trials" in data and "model" in data:
            searches.append(data)
    return sorted(searches, key=lambda search: search["model"])


def report(searches: list[dict]) -> tuple[str, list[str]]:
    """A markdown table of each model's best trial, and the benchmark labels of those trials."""
    header = ["model", "trials", "at budget", "best valid NDCG@10"]
    header += [f"its test {METRIC_LABELS[name]}" for name in METRICS]
    header += ["its settings"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    labels, ties = [], []
    for search in searches:
        trials = search["trials"]
        if not trials:
            cells = [search["model"], "0", *[""] * (len(header) - 3), "no finished trial"]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        best = best_trial(trials)
        labels.append(label(search["model"], best["params"]))
        at_budget = sum(trial["time_budget_reached"] for trial in trials)
        cells = [search["model"], str(len(trials)), str(at_budget)]
        cells.append(_metric(best["best_valid_result"], "ndcg@10"))
        cells += [_metric(best["test_result"], name) for name in METRICS]
        cells.append(f"`{labels[-1]}`")
        lines.append("| " + " | ".join(cells) + " |")
        tied = [
            t for t in trials if t is not best and t["best_valid_score"] == best["best_valid_score"]
        ]
        if tied:
            others = ", ".join(_tied_text(search["model"], t["params"]) for t in tied)
            ties.append(
                f"- {search['model']}: the best validation score ({best['best_valid_score']}) is "
                f"tied with {others}; the first drawn is taken, as RecBole's tuner does. RecBole "
                "rounds validation to 4 places: compare the tied settings over seeds to choose."
            )
    return "\n".join(lines + ([""] + ties if ties else [])), labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Each model's best tuning trial (on validation), as a table and as labels."
    )
    parser.add_argument(
        "--results", required=True, help="folder with <Model>/<name>.json (results.sh tune)"
    )
    parser.add_argument(
        "--labels",
        action="store_true",
        help="print only the best trials' labels, comma-separated (for benchmark --models)",
    )
    args = parser.parse_args(argv)
    folder = Path(args.results)
    searches = read_searches(folder) if folder.is_dir() else []
    if not searches:
        print(
            f"error: no tuning records under {folder}: run benchmarks/results.sh tune, or "
            "run_hyper_hdccf.py, which writes <output_file stem>.json beside its result file",
            file=sys.stderr,
        )
        return 2
    table, labels = report(searches)
    if args.labels:
        print(",".join(labels))
        return 0
    print(table)
    print(f'\nbenchmark the chosen settings over seeds: --models="{",".join(labels)}"')
    return 0


def _label_value(value) -> str:
    text = json.dumps(value) if isinstance(value, list) else str(value)
    if any(char in text for char in ";[]"):
        raise ValueError(f"setting value {value!r} cannot be written into a benchmark label")
    return text


def _tied_text(model: str, params: dict) -> str:
    """A tied trial as its label, or as its settings where a value cannot be written in one (the
    note must not fail the report; only the chosen trial has to rerun as a label)."""
    try:
        return f"`{label(model, params)}`"
    except ValueError:
        return f"`{model}` with {json.dumps(params)}"


def _metric(result: dict, name: str) -> str:
    value = result.get(name)
    return "" if value is None else f"{value:.4f}"


def _plain(value):
    """numpy scalars (hyperopt's draws, RecBole's results) as JSON numbers."""
    return value.item() if hasattr(value, "item") else value


if __name__ == "__main__":
    sys.exit(main())
