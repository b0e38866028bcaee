"""The paper's figures from benchmark results: ablation (Fig. 2), sensitivity (Fig. 4) and score
distributions with and without modulation (Fig. 3). Each PNG is written with the CSV behind it.

    python -m recbole_hdccf.benchmark ... --models=@ablation --out=results/ml-1m-ablation
    python -m recbole_hdccf.plots ablation --results=results/ml-1m-ablation

    An ablation over another configuration lists it and its variants; each bar is named by
    what it changes (``debiased``, ``w/o-U``), the configuration itself ``HDCCF``:
    --models='HDCCF[debias=False],HDCCF[debias=True],HDCCF[debias=False;ablation=wo_u]'

    python -m recbole_hdccf.benchmark ... --models=@sensitivity --out=results/ml-1m-sensitivity
    python -m recbole_hdccf.plots sensitivity --results=results/ml-1m-sensitivity

    A sensitivity study around another configuration lists it and its one-setting variants:
    --models='HDCCF[debias=False],HDCCF[debias=False;neighbor_num=1],...'

    python -m recbole_hdccf.benchmark ... --models=HDCCF,HDCCF[ablation=unmodulated] --out=R
    python -m recbole_hdccf.plots scores --results=R
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import sys
from pathlib import Path

import numpy as np

from recbole_hdccf.benchmark import SENSITIVITY_GRID, RunSpec, best_checkpoint, parse_models
from recbole_hdccf.paths import model_files, properties_dir
from recbole_hdccf.settings import ABLATIONS

ABLATION_NAMES = {
    "wo_u": "w/o-U",
    "wo_i": "w/o-I",
    "wo_ui": "w/o-U&I",
    "bpr_plus": "BPR+",
    "biased": "biased",
    "unmodulated": "unmodulated",
}
# A setting that names a variant on its own (an ablation run over the biased loss: "debiased").
SETTING_NAMES = {("debias", True): "debiased", ("debias", False): "biased"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _records(results: Path) -> list[dict]:
    return [r for r in json.loads((results / "runs.json").read_text()) if r["status"] == "ok"]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _by_label(records, metric):
    grouped: dict[str, list[float]] = {}
    for r in records:
        grouped.setdefault(r["label"], []).append(r["test"][metric])
    return grouped


def ablation_plot(results: Path, metrics=("hit@10", "ndcg@10")) -> Path:
    """Fig. 2: bars of each variant's mean test metric, error bars = std over seeds."""
    records = _records(results)
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6))
    rows = []
    for ax, metric in zip(np.atleast_1d(axes), metrics, strict=True):
        grouped = _by_label(records, metric)
        names, means, stds = [], [], []
        short = variant_names(list(grouped))
        for label, values in grouped.items():
            names.append(short[label])
            means.append(float(np.mean(values)))
            stds.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
            rows.append([label, metric, means[-1], stds[-1], len(values)])
        ax.bar(names, means, yerr=stds, color="#4c72b0", capsize=3)
        ax.set_ylim(*_y_range(means, stds))
        ax.set_title(metric.upper().replace("HIT", "HR"))
        # anchored at the right end, each rotated name ends under its own bar
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    fig.tight_layout()
    png = results / "ablation.png"
    fig.savefig(png, dpi=120)
    _write_csv(results / "ablation.csv", ["label", "metric", "mean", "std", "seeds"], rows)
    return png


def _y_range(means: list[float], stds: list[float]) -> tuple[float, float]:
    """A y range padded by three error bars, at least 0.005 each side, from 0 at the lowest: one
    seed's noise (about 0.002 NDCG@10 on ML-1M) must not fill the axis and look like a trend."""
    pad = 3 * max(max(stds), 0.005)
    return max(0.0, min(means) - pad), max(means) + pad


def _model_settings(label: str) -> tuple[str, dict]:
    """``"HDCCF[debias=False]"`` -> ``("HDCCF", {"debias": False})``."""
    _, model, settings = parse_models(label)[0]
    return model, settings


def ablation_base(labels: list[str]) -> str:
    """The label the variants are built on: the first one without an ``ablation`` whose
    settings the most other labels include (``HDCCF`` for ``@ablation``; the published
    configuration for ablations run over it)."""
    parsed = {label: _model_settings(label) for label in labels}
    candidates = [label for label in labels if "ablation" not in parsed[label][1]] or labels

    def included_in(label):
        model, base = parsed[label]
        return sum(
            parsed[other][0] == model and base.items() <= parsed[other][1].items()
            for other in labels
            if other != label
        )

    return max(candidates, key=included_in)  # max keeps the first of equals


def variant_names(labels: list[str]) -> dict[str, str]:
    """Short bar names: what each label changes from the base (``w/o-U``, ``debiased``,
    ``tau=0.5``), the base itself ``HDCCF``. A label of another model, or one that leaves a base
    setting at its default (which the label does not say), keeps its whole label."""
    model, base = _model_settings(ablation_base(labels))
    names = {}
    for label in labels:
        label_model, settings = _model_settings(label)
        if label_model != model or base.keys() - settings.keys():
            names[label] = label
            continue
        changed = {k: v for k, v in settings.items() if base.get(k, object()) != v}
        parts = []
        if "ablation" in changed:
            value = changed.pop("ablation")
            parts.append(ABLATION_NAMES.get(value, value))
        spelled_out = _ablation_spelled_out(changed)
        if spelled_out:
            parts.append(ABLATION_NAMES[spelled_out])
            changed = {}
        for key, value in changed.items():
            hashable = isinstance(value, (bool, int, float, str))
            named = SETTING_NAMES.get((key, value)) if hashable else None
            parts.append(named or f"{key}={value}")
        names[label] = ", ".join(parts) or model
    return names


def _ablation_spelled_out(changed: dict) -> str | None:
    """The ablation whose switches ``changed`` sets, and nothing else (``lambda_u=0`` is w/o-U).
    An ablation over an ablation spells its switches out: ``ablation`` holds only one name."""
    for name, switches in ABLATIONS.items():
        if changed and changed == switches:
            return name
    return None


@functools.cache  # read once per model, not once per record and setting
def _file_defaults(model: str) -> dict:
    """The settings a run of ``model`` reads from the plugin's yaml when its label and ``--set``
    leave them out (``properties/HDCCF.yaml``; ``properties/model/<model>.yaml`` for a baseline)."""
    import yaml

    paths = [properties_dir() / "HDCCF.yaml"] if model == "HDCCF" else model_files(model)
    defaults = {}
    for path in paths:
        defaults.update(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    return defaults


def sensitivity_curves(records: list[dict], notes: list[str] | None = None) -> dict[str, dict]:
    """Fig. 4's curves, ``{param: {value: [records]}}``, for each setting of the sensitivity grid:
    runs of one model whose labels differ only in it. A run whose label leaves the setting out
    sits at its configured value (the base of ``neighbor_num=1`` and ``neighbor_num=3`` is a point
    at P = 2): its record's ``config``, or, for a record without one (a ``runs.csv`` row merged
    with ``--merge_runs``), the value in the plugin's yaml, which ``notes`` then names. Of the
    groups with two values or more, the one with the most values is drawn, and it keeps only the
    seeds every one of its points ran: a base run over three seeds is compared with one-seed
    variants on their seed."""
    parsed = [(record, *_model_settings(record["label"])) for record in records]
    curves = {}
    for param in SENSITIVITY_GRID:
        groups: dict[tuple, dict] = {}
        assumed = set()  # (model, value, label) placed at the yaml's value
        for record, model, settings in parsed:
            if param in settings:
                value = settings[param]
            elif "config" in record:
                value = record["config"].get(param)
            else:
                value = _file_defaults(model).get(param)
                if value is not None:
                    assumed.add((model, value, record["label"]))
            if value is None:
                continue
            others = tuple(sorted((k, repr(v)) for k, v in settings.items() if k != param))
            groups.setdefault((model, others), {}).setdefault(value, []).append(record)
        curve = max((g for g in groups.values() if len(g) > 1), key=len, default=None)
        if curve is None:
            continue
        seeds = set.intersection(*({r["seed"] for r in runs} for runs in curve.values()))
        if seeds:
            curves[param] = {
                value: [r for r in curve[value] if r["seed"] in seeds] for value in sorted(curve)
            }
            drawn = {r["label"] for runs in curves[param].values() for r in runs}
            for model, value, label in sorted(assumed, key=str):
                if label in drawn and notes is not None:
                    notes.append(
                        f"{label}: its records carry no config (a runs.csv), so it is drawn at "
                        f"{param}={value}, {model}'s value in the plugin's yaml; merge its "
                        f"runs.json instead if it ran with --set {param}=..."
                    )
    return curves


def sensitivity_plot(results: Path, metrics=("hit@10", "ndcg@10")) -> Path:
    """Fig. 4: each metric against w_i+, w_u+ and P, the other settings unchanged."""
    notes: list[str] = []
    curves = sensitivity_curves(_records(results), notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not curves:
        raise FileNotFoundError(
            f"sensitivity plot needs runs in {results} that differ only in one of "
            f"{', '.join(SENSITIVITY_GRID)}, at two values or more (e.g. --models=@sensitivity, "
            f"or a configuration and its variants 'HDCCF[...;neighbor_num=1]')"
        )
    plt = _plt()
    params = list(curves)
    fig, axes = plt.subplots(len(metrics), len(params), figsize=(4 * len(params), 3 * len(metrics)))
    axes = np.atleast_2d(axes).reshape(len(metrics), len(params))
    rows = []
    for col, param in enumerate(params):
        for row, metric in enumerate(metrics):
            points = {x: [r["test"][metric] for r in runs] for x, runs in curves[param].items()}
            xs = list(points)
            ys = [float(np.mean(points[x])) for x in xs]
            errs = [float(np.std(points[x], ddof=1)) if len(points[x]) > 1 else 0 for x in xs]
            ax = axes[row, col]
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3)
            ax.set_ylim(*_y_range(ys, errs))
            best = xs[int(np.argmax(ys))]
            ax.axvline(best, linestyle=":", color="gray")
            ax.set_xticks(xs)
            ax.set_xlabel(param)
            ax.set_ylabel(metric.upper().replace("HIT", "HR"))
            rows += [
                [param, x, metric, y, e, len(points[x])]
                for x, y, e in zip(xs, ys, errs, strict=True)
            ]
    fig.tight_layout()
    png = results / "sensitivity.png"
    fig.savefig(png, dpi=120)
    header = ["param", "value", "metric", "mean", "std", "seeds"]
    _write_csv(results / "sensitivity.csv", header, rows)
    return png


def pair_score_samples(checkpoint: str, max_users: int = 2000, negatives_per_user: int = 99):
    """Scores of test positives and of negatives from a saved run: the evaluation candidates
    under sampled evaluation, ``negatives_per_user`` unobserved items under full ranking."""
    import torch
    from recbole.data.dataloader import FullSortEvalDataLoader
    from recbole.quick_start import load_data_and_model

    import recbole_hdccf  # noqa: F401

    sys.argv = sys.argv[:1]
    _, model, _, _, _, test_data = load_data_and_model(checkpoint)
    model.eval()
    rng = np.random.default_rng(0)
    positives, negatives, users_seen = [], [], 0
    with torch.no_grad():
        for interaction, extra, positive_u, positive_i in test_data:
            interaction = interaction.to(model.device)
            if isinstance(test_data, FullSortEvalDataLoader):
                scores = model.full_sort_predict(interaction).view(len(interaction), -1).cpu()
                known = torch.zeros_like(scores, dtype=torch.bool)
                known[:, 0] = True  # the padding id
                if extra is not None:
                    known[extra[0], extra[1]] = True  # training history
                known[positive_u, positive_i] = True
                positives.append(scores[positive_u, positive_i].numpy())
                for row in range(len(scores)):
                    pool = scores[row][~known[row]].numpy()
                    negatives.append(rng.choice(pool, size=min(negatives_per_user, len(pool))))
                users_seen += len(scores)
            else:
                scores = model.predict(interaction).cpu().numpy()
                items = interaction[model.ITEM_ID].cpu().numpy()
                true = set(zip(positive_u.tolist(), positive_i.tolist(), strict=True))
                rows = zip(extra.tolist(), items.tolist(), strict=True)
                is_pos = np.array([(k, i) in true for k, i in rows])
                positives.append(scores[is_pos])
                negatives.append(scores[~is_pos])
                users_seen += int(positive_u.max()) + 1
            if users_seen >= max_users:
                break
    return np.concatenate(positives), np.concatenate(negatives)


def modulation_pair(labels: list[str]) -> tuple[str, ...]:
    """(modulated, unmodulated): the first label with ``ablation=unmodulated`` and the label
    with the same other settings (``HDCCF`` for ``HDCCF[ablation=unmodulated]``); () if none."""
    for label in labels:
        model, settings = _model_settings(label)
        if settings.pop("ablation", None) != "unmodulated":
            continue
        for other in labels:
            if _model_settings(other) == (model, settings):
                return other, label
    return ()


def scores_plot(results: Path) -> Path:
    """Fig. 3: positive and negative score distributions of HDCCF and its unmodulated variant,
    scores normalised to 0-100 per model, the overlap of the two ranges shaded."""
    plt = _plt()
    found = {}
    records = _records(results)
    for label in modulation_pair([r["label"] for r in records]):
        seeds = sorted(r["seed"] for r in records if r["label"] == label)
        if seeds:
            run_dir = results / "runs" / RunSpec(label, "HDCCF", {}, seeds[0]).key
            record = next(r for r in records if r["label"] == label and r["seed"] == seeds[0])
            checkpoint = best_checkpoint(run_dir, record)
            if checkpoint is not None:
                found[label] = str(checkpoint.resolve())
    if len(found) < 2:
        raise FileNotFoundError(
            f"scores plot needs checkpoints of a model and its ablation=unmodulated variant in "
            f"{results} (e.g. --models=@modulation); found {sorted(found) or 'none'}"
        )
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    rows, histogram, summary = [], [], []
    bins = np.linspace(0, 100, 41)
    # found keeps modulation_pair's order: (modulated, unmodulated)
    titles = ("modulated", "unmodulated")
    for ax, title, (label, checkpoint) in zip(axes, titles, found.items(), strict=True):
        pos, neg = pair_score_samples(checkpoint)
        low, high = min(pos.min(), neg.min()), max(pos.max(), neg.max())
        pos_n, neg_n = (pos - low) / (high - low) * 100, (neg - low) / (high - low) * 100
        for kind, scores in (("negative", neg_n), ("positive", pos_n)):
            density, _, _ = ax.hist(scores, bins=bins, density=True, alpha=0.6, label=kind)
            histogram += [
                [label, kind, float(a), float(b), float(h)]
                for a, b, h in zip(bins[:-1], bins[1:], density, strict=True)
            ]
        ax.axvspan(pos_n.min(), neg_n.max(), color="red", alpha=0.1)
        ax.set_title(title)
        ax.set_xlabel("relevance score (normalised)")
        ax.legend()
        rows += [[label, "positive", float(v)] for v in pos_n]
        rows += [[label, "negative", float(v)] for v in neg_n]
        overlap = (float(pos_n.min()), float(neg_n.max()))
        summary.append([label, len(pos), len(neg), pairs_ranked_right(pos, neg), *overlap])
    fig.tight_layout()
    png = results / "scores.png"
    fig.savefig(png, dpi=120)
    _write_csv(results / "scores.csv", ["model", "kind", "normalised_score"], rows)
    # the drawn bars and the figures quoted with them: small enough to publish beside the PNG
    header = ["model", "kind", "bin_low", "bin_high", "density"]
    _write_csv(results / "scores-histogram.csv", header, histogram)
    header = [
        "model",
        "positives",
        "negatives",
        "pairs_ranked_right",
        "overlap_low",
        "overlap_high",
    ]
    _write_csv(results / "scores-summary.csv", header, summary)
    return png


def pairs_ranked_right(positive: np.ndarray, negative: np.ndarray) -> float:
    """The share of (positive, negative) pairs, pooled over users, whose positive scores higher
    (ties count half): the area under the ROC curve of the pooled scores."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positive, negative]))[: len(positive)]
    above = ranks.sum() - len(positive) * (len(positive) + 1) / 2
    return float(above / (len(positive) * len(negative)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_hdccf.plots", description=__doc__)
    parser.add_argument("figure", choices=["ablation", "sensitivity", "scores"])
    parser.add_argument("--results", required=True, help="a benchmark --out folder")
    args = parser.parse_args(argv)
    results = Path(args.results)
    if not (results / "runs.json").is_file():
        print(f"error: {results / 'runs.json'} not found: run the benchmark first", file=sys.stderr)
        return 2
    cwd = os.getcwd()
    os.chdir(results)  # RecBole's loader writes ./log
    results = Path(".")
    try:
        png = {"ablation": ablation_plot, "sensitivity": sensitivity_plot, "scores": scores_plot}[
            args.figure
        ](results)
        written = sorted(
            p.name for p in results.glob(f"{png.stem}*") if p.suffix in (".png", ".csv")
        )
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        os.chdir(cwd)
    print(f"written in {args.results}: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
