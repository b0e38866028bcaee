"""Side-by-side benchmark: HDCCF and RecBole baselines on one protocol, seeds, significance, cost.

    python -m recbole_hdccf.benchmark --dataset=ml-1m --data_path=../shared/datasets \\
        --models=HDCCF,BPR,NeuMF,ENMF,LightGCN,SimpleX --protocol=paper --seeds=3 \\
        --out=results/ml-1m

Every model runs with its documented settings (``properties/HDCCF.yaml`` for HDCCF,
``properties/model/<Model>.yaml`` for a baseline where the plugin has one), the same split, the
same evaluation candidates (fixed per seed, see ``recbole_hdccf/candidates.py``) and the same
seeds. A model may carry settings of its own: ``HDCCF[ablation=wo_u]``, ``BPR[embedding_size=128]``.

Each (model, seed) runs in its own process, in ``OUT/runs/<run>/``; its result is
``OUT/runs/<run>.json``. A failed run is reported and the others go on; a benchmark started again
skips the runs that finished, and refuses to reuse one that ran with other settings. A run that
was interrupted (a kill, a crash, ``--timeout``; rerun a failed one with ``--retry_failed``)
resumes from its last end-of-epoch checkpoint, exactly (``trainer.py``): its record counts the
epochs, seconds and time budget of every attempt, and says after how many epochs it resumed.
``--extend`` lets finished runs train on under a larger ``train_time_budget`` or ``epochs``
(given with ``--set`` or in the label; every other setting as they ran): each resumes from its
last checkpoint, and a run that its budget or its epochs ended trains on exactly as if it had
run under the larger ones from the start (one that early stopping ended is only tested again).
Its earlier record is kept as ``OUT/runs/<run>/before-extend-<n>.json``, and the new one names
the values it was extended from (``extended_from``, JSON only).
A run trains only in the process that holds its lock (``run_lock.py``): benchmarks sharing an
``--out`` leave a run another one is training to it, say which process holds it, and go on.
``OUT/table.md``, ``OUT/runs.csv`` and ``OUT/runs.json`` are rewritten after every run;
``--report_only`` rewrites them from the finished runs without running anything (to merge runs
that several benchmark processes wrote into one folder; runs made with other settings are kept
as they ran, with one warning per distinct change); with ``--merge_runs=OTHER/runs.csv`` (or
``runs.json``) it also takes, for a run missing from ``OUT``, the record another benchmark wrote.

``--threads=N`` gives every run N torch threads. Each record keeps ``torch_threads`` and the
seconds of a fixed reference workload timed just before and after training
(``machine_speed.py``), and ``freed_memory_kept`` (``allocator.py``): a ``train_time_budget`` is
wall-clock, and the table notes when the runs it stopped saw different machine speeds or
allocator settings. ``code_version`` names the code a run ran (:func:`code_version`), and
``cpu`` the processor (``machine_speed.cpu_description``): runs replay exactly only on the same
kind. ``valid_curve`` lists every validation as ``[epoch, score]`` (JSON only), so a record
shows whether a run was still rising when it stopped.

The proposed model, whose improvement over the best baseline and p-value the table gives, is the
first HDCCF label in ``--models`` (``--proposed`` picks another); every other HDCCF label is a
variant, not a baseline.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recbole_hdccf.machine_speed import speed_note
from recbole_hdccf.paths import source_checkout
from recbole_hdccf.quick_start import budget_was_raised
from recbole_hdccf.run_lock import RunInUse, in_use, run_lock

METRICS = ("hit@10", "ndcg@10", "ndcg@50")
METRIC_LABELS = {"hit@10": "HR@10", "ndcg@10": "NDCG@10", "ndcg@50": "NDCG@50"}
# A run's cost and machine, as runs.csv writes them and --merge_runs reads them back (numbers).
COST_COLUMNS = (
    "seconds_per_epoch",
    "epochs_run",
    "epochs_to_best",
    "total_seconds",
    "resumed_after_epochs",
    "time_budget_reached",
    "peak_memory_mb",
    "peak_gpu_memory_mb",
    "torch_threads",
    "reference_seconds_before",
    "reference_seconds_after",
    "freed_memory_kept",
)
# The settings --extend may raise: a run they ended trains on from its last checkpoint.
EXTENDABLE = ("train_time_budget", "epochs")
# How long a benchmark waits for a run's lock before it leaves the run to its holder: long
# enough for a retest's or another benchmark's brief look, far shorter than a training run.
LOCK_WAIT_SECONDS = 10.0
PROPOSED = "HDCCF"
ABLATION_MODELS = ",".join(
    ["HDCCF"] + [f"HDCCF[ablation={a}]" for a in ("wo_u", "wo_i", "wo_ui", "bpr_plus", "biased")]
)
SENSITIVITY_GRID = {
    "w_i_pos": [0.0, 0.05, 0.1, 0.15, 0.2],
    "w_u_pos": [0.0, 0.05, 0.1, 0.15, 0.2],
    "neighbor_num": [1, 2, 3, 4, 5, 6],
}
SENSITIVITY_MODELS = ",".join(
    f"HDCCF[{key}={value}]" for key, values in SENSITIVITY_GRID.items() for value in values
)
# --models=@ablation etc.: the runs behind the paper's Fig. 2, 3 and 4
PRESETS = {
    "@ablation": ABLATION_MODELS,
    "@sensitivity": SENSITIVITY_MODELS,
    "@modulation": "HDCCF,HDCCF[ablation=unmodulated]",
}


@dataclass(frozen=True)
class RunSpec:
    """One model (with its own settings) under one seed."""

    label: str  # e.g. "HDCCF", "HDCCF[ablation=wo_u]"
    model: str
    overrides: dict = field(default_factory=dict)
    seed: int = 2020

    @property
    def key(self) -> str:
        return f"{run_prefix(self.label)}{self.seed}"


def run_prefix(label: str) -> str:
    """What every run of ``label`` is named by, before its seed: ``OUT/runs/<prefix><seed>``."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label) + "-seed"


def parse_value(text: str):
    """``"0.1"`` -> 0.1, ``"[1,2]"`` -> [1, 2], ``"True"`` -> True, else the string (as RecBole)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_pairs(pairs, where: str, example: str) -> dict:
    """``["key=value", ...]`` as a config dict, each value parsed as :func:`parse_value` does.
    A pair without ``=`` raises ValueError: ``"<where> '<pair>': use key=value, e.g. <example>"``."""
    settings = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"{where} {pair!r}: use key=value, e.g. {example}")
        key, value = pair.split("=", 1)
        settings[key.strip()] = parse_value(value.strip())
    return settings


def parse_settings(pairs) -> dict:
    """``--set key=value`` (repeatable) as a config dict."""
    return parse_pairs(pairs or [], "--set", "--set epochs=40")


def parse_models(text: str) -> list[tuple[str, str, dict]]:
    """``"HDCCF,BPR[embedding_size=128,learning_rate=0.01]"`` -> [(label, model, overrides)]."""
    text = ",".join(PRESETS.get(part, part) for part in text.split(",") if part)
    out = []
    for match in re.finditer(r"([A-Za-z0-9_]+)(\[[^\]]*\])?", text):
        model, bracket = match.group(1), match.group(2)
        pairs = filter(None, bracket[1:-1].split(";" if ";" in bracket else ",")) if bracket else []
        label = match.group(0)
        overrides = parse_pairs(pairs, f"--models {label!r}: setting", f"{model}[epochs=40]")
        out.append((label, model, overrides))
    if not out:
        raise ValueError(f"--models={text!r}: give a comma-separated list, e.g. HDCCF,BPR")
    return out


# ------------------------------------------------------------------------------------ running
def code_version(root: Path | None = None) -> str:
    """The plugin's version and, in a git checkout of it, its commit: ``0.1.0+g<12 hex>``, with
    ``.dirty`` when the package's code or settings (``recbole_hdccf/``, ``properties/``) differ
    from that commit. Only the version for an installed copy, or where git is missing."""
    from recbole_hdccf import __version__

    root = Path(root) if root else source_checkout()
    if root is None:
        return __version__

    def git(*args) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        # An installed copy may sit inside some other repository (a venv in a project).
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return __version__
        commit = git("rev-parse", "--short=12", "HEAD")
        changed = git("status", "--porcelain", "--", "recbole_hdccf", "properties")
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}" + (".dirty" if changed else "")


def run_one(spec: RunSpec, base: dict, workdir: Path) -> dict:
    """Train and test one run in this process (called in a child). Returns the result record.
    An earlier attempt's end-of-epoch checkpoint in ``workdir/saved`` is resumed from."""
    import resource

    import torch

    import recbole_hdccf  # noqa: F401
    from recbole_hdccf.allocator import freed_memory_kept
    from recbole_hdccf.machine_speed import cpu_description, reference_seconds
    from recbole_hdccf.quick_start import run_recbole

    version = code_version()  # before training: the code may change on disk while it runs
    os.chdir(workdir)
    sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv
    marks: list[tuple[float, int, float]] = []
    speed_before = reference_seconds()
    start = time.time()

    def on_epoch(epoch_idx, valid_score):
        marks.append((time.time(), epoch_idx, float(valid_score)))

    config_dict = {
        **base["config"],
        **spec.overrides,
        "seed": spec.seed,
        "checkpoint_dir": str(workdir / "saved"),
        "show_progress": False,
    }
    resume = resume_checkpoint(workdir)
    result = run_recbole(
        model=spec.model,
        dataset=base["dataset"],
        config_file_list=base["config_files"].get(spec.model) or None,
        config_dict=config_dict,
        callback_fn=on_epoch,
        resume=str(resume) if resume else None,
    )
    total = time.time() - start
    speed_after = reference_seconds()
    epoch_log = result.get("epoch_log")
    if epoch_log is not None:  # the trainer's own: every epoch, earlier attempts' included
        validated = [e for e in epoch_log if e["valid_score"] is not None]
        epochs = [e["epoch"] for e in validated]
        scores = [e["valid_score"] for e in validated]
        epoch_times = np.array([e["seconds"] for e in epoch_log])
        resumed_after = result["resumed_after_epochs"]
        total += sum(e["seconds"] for e in epoch_log if e["epoch"] < resumed_after)
    else:  # a trainer without a log (RecBole's special ones): this attempt's validations
        epochs = [e for _, e, _ in marks]
        scores = [s for _, _, s in marks]
        epoch_times = np.diff([start] + [t for t, _, _ in marks]) if marks else np.array([])
        resumed_after = 0
    config = result["config"]
    return {
        "label": spec.label,
        "model": spec.model,
        "seed": spec.seed,
        "status": "ok",
        "test": {k: float(v) for k, v in (result["test_result"] or {}).items()},
        "valid": {k: float(v) for k, v in (result["best_valid_result"] or {}).items()},
        "seconds_per_epoch": float(np.median(epoch_times)) if len(epoch_times) else None,
        "epochs_run": len(scores),
        "epochs_to_best": best_valid_epoch(epochs, scores),
        # every validation, so that a record shows whether a run was still rising (JSON only)
        "valid_curve": [[e + 1, s] for e, s in zip(epochs, scores, strict=True)],
        "total_seconds": total,
        "resumed_after_epochs": resumed_after,
        "time_budget_reached": bool(result.get("time_budget_reached")),
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_memory_mb": _peak_gpu_memory_mb(),
        "torch_threads": torch.get_num_threads(),
        "reference_seconds_before": speed_before,
        "reference_seconds_after": speed_after,
        "freed_memory_kept": freed_memory_kept(),
        "code_version": version,
        "cpu": cpu_description(),
        "checkpoint": result["checkpoint"],
        "config": {k: _jsonable(v) for k, v in config.final_config_dict.items()},
    }


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The end-of-epoch checkpoint an interrupted attempt of a run left (the newest), if any."""
    from recbole_hdccf.trainer import LAST_SUFFIX

    last = list((run_dir / "saved").glob(f"*{LAST_SUFFIX}.pth"))
    return max(last, key=lambda p: p.stat().st_mtime_ns) if last else None


def best_valid_epoch(epochs: list[int], scores: list[float]) -> int | None:
    """The epoch (counted from 1) whose model RecBole keeps as best: the last of equal best
    validation scores, as its ``early_stopping`` takes a tie (``>=``); scores are rounded to
    ``metric_decimal_place``, so ties happen. None without a validation."""
    if not scores:
        return None
    best = max(scores)
    return max(e for e, s in zip(epochs, scores, strict=True) if s == best) + 1


def best_checkpoint(run_dir: Path, record: dict | None = None) -> Path | None:
    """A run's best-validation model: the file its record names, else (records written before
    they named it) the newest saved model that is not an end-of-epoch ``-last.pth`` resume file;
    None if the run saved none."""
    from recbole_hdccf.trainer import LAST_SUFFIX

    named = (record or {}).get("checkpoint")
    if named and Path(named).is_file():
        return Path(named)
    saved = [p for p in (run_dir / "saved").glob("*.pth") if not p.stem.endswith(LAST_SUFFIX)]
    return max(saved, key=lambda p: p.stat().st_mtime_ns) if saved else None


def _peak_gpu_memory_mb():
    """Peak memory torch allocated on the GPU, or None on a CPU run."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def _write_json(path: Path, data) -> None:
    # One temporary name per process: two benchmarks may share an output folder.
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def run_in_child(
    spec: RunSpec, base: dict, out: Path, timeout: float | None, lock_fd: int | None = None
) -> dict:
    """Run ``spec`` in a fresh process; a crash or a timeout becomes a ``failed`` record.
    ``lock_fd``, the run's lock (``run_lock.py``), is handed to the child, so that the run stays
    locked while it trains even if this process is killed first."""
    workdir = out / "runs" / spec.key
    workdir.mkdir(parents=True, exist_ok=True)
    request = workdir / "request.json"
    _write_json(request, {"spec": spec.__dict__, "base": base})
    result_file = workdir / "result.json"
    result_file.unlink(missing_ok=True)
    log = workdir / "stdout.log"
    resume = resume_checkpoint(workdir)
    env = dict(os.environ)
    if source := source_checkout():  # the child runs this code too, not an installed copy
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(source), env.get("PYTHONPATH"))))
    if base.get("threads"):  # torch's and numpy's thread pools both take these at start
        env.update(OMP_NUM_THREADS=str(base["threads"]), MKL_NUM_THREADS=str(base["threads"]))
    with open(log, "a" if resume else "w", encoding="utf-8") as handle:
        if resume:  # keep the earlier attempts' output
            handle.write(f"\n=== resuming from {resume.name} ===\n")
            handle.flush()
        try:
            code = subprocess.run(
                [sys.executable, "-m", "recbole_hdccf.benchmark", "_child", str(request)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                cwd=workdir,
                env=env,
                pass_fds=() if lock_fd is None else (lock_fd,),
            ).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    if code == 0 and result_file.exists():
        return json.loads(result_file.read_text(encoding="utf-8"))
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] or [""]
    return {
        "label": spec.label,
        "model": spec.model,
        "seed": spec.seed,
        "status": "failed",
        "error": f"exit {code}: {tail[0][:300]}",
        "log": str(log),
    }


def _child(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    spec = RunSpec(**request["spec"])
    workdir = Path(request_path).parent
    record = run_one(spec, request["base"], workdir)
    _write_json(workdir / "result.json", record)
    return 0


# ------------------------------------------------------------------------------------ tables
def summarize(records: list[dict], labels: list[str]) -> dict:
    """Per label and metric: values over seeds (ordered by seed), mean, std."""
    table = {}
    for label in labels:
        runs = sorted(
            (r for r in records if r["label"] == label and r["status"] == "ok"),
            key=lambda r: r["seed"],
        )
        failed = [r for r in records if r["label"] == label and r["status"] != "ok"]
        table[label] = {
            "failed": failed,
            "seeds": [r["seed"] for r in runs],
            "metrics": {m: [r["test"].get(m, math.nan) for r in runs] for m in METRICS if runs},
        }
    return table


def paired_p_value(a: list[float], b: list[float]) -> float | None:
    """Two-sided paired t-test over seeds; None with fewer than two pairs or no variance."""
    from scipy import stats

    if len(a) < 2 or len(a) != len(b):
        return None
    diff = np.asarray(a) - np.asarray(b)
    if np.allclose(diff, diff[0]):
        return 0.0 if diff[0] != 0 else 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def model_of(label: str) -> str:
    """``"HDCCF[tau=0.2]"`` -> ``"HDCCF"``."""
    return label.split("[", 1)[0]


def default_proposed(labels: list[str]) -> str:
    """The first HDCCF label, else ``"HDCCF"`` (then the table has no improvement column)."""
    return next((lb for lb in labels if model_of(lb) == PROPOSED), PROPOSED)


def markdown_table(records: list[dict], labels: list[str], proposed: str | None = None) -> str:
    """The paper's Table 1 layout: metrics as rows, models as columns, mean ± std over seeds,
    best in bold, best baseline underlined, the proposed model's improvement and p-value.
    Baselines are the labels of other models; HDCCF variants are shown but never a baseline."""
    proposed = proposed or default_proposed(labels)
    summary = summarize(records, labels)
    baselines = [lb for lb in labels if model_of(lb) != PROPOSED]
    # baselines alone, or HDCCF variants alone, have no improvement to show
    compared = proposed in labels and bool(baselines)
    header = ["Metric", *labels] + (["Imp.", "p (paired t, seeds)"] if compared else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in METRICS:
        means = {}
        for label in labels:
            values = summary[label]["metrics"].get(metric, [])
            if values:
                means[label] = float(np.mean(values))
        best = max(means, key=means.get) if means else None
        base_means = {lb: means[lb] for lb in baselines if lb in means}
        best_base = max(base_means, key=base_means.get) if base_means else None
        cells = [METRIC_LABELS[metric]]
        for label in labels:
            values = summary[label]["metrics"].get(metric, [])
            if not values:
                cells.append("failed" if summary[label]["failed"] else "–")
                continue
            text = f"{np.mean(values):.4f}"
            if len(values) > 1:  # one seed has no spread to show (its note says so)
                text += f" ± {np.std(values, ddof=1):.4f}"
            if label == best:
                text = f"**{text}**"
            if label == best_base:
                text = f"<u>{text}</u>"
            cells.append(text)
        if compared and proposed in means and best_base is not None:
            improvement = (means[proposed] - means[best_base]) / means[best_base] * 100
            cells.append(f"{improvement:+.2f}%")
            p = paired_p_value(
                *_paired(summary[proposed], summary[best_base], metric),
            )
            cells.append("n/a" if p is None else f"{p:.3g}")
        elif compared:
            cells += ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for label in labels:
        for run in summary[label]["failed"]:
            notes.append(f"- {label} seed {run['seed']} failed: {run.get('error', '')}")
    seeds = sorted({r["seed"] for r in records})
    for label in labels:
        have = summary[label]["seeds"]
        if have and have != seeds:
            notes.append(f"- {label}: seeds {have} only")
    speed = speed_note(records)
    if speed:
        notes.append(f"- Budget: {speed}.")
    note = f"- mean ± std over seeds {seeds} (one seed: its value)"
    if compared:
        note += (
            f"; Imp. = {proposed} over the best baseline (underlined); p: two-sided paired t-test "
            "against that baseline over the seeds both ran"
        )
    notes.append(note + ".")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _paired(a: dict, b: dict, metric: str):
    common = sorted(set(a["seeds"]) & set(b["seeds"]))
    pick = lambda s: [s["metrics"][metric][s["seeds"].index(x)] for x in common]  # noqa: E731
    return pick(a), pick(b)


def write_outputs(
    out: Path,
    records: list[dict],
    labels: list[str],
    proposed: str | None = None,
    heading: str = "",
) -> None:
    """``runs.json``, ``runs.csv`` and ``table.md`` (``heading`` above the table) in ``out``."""
    _write_json(out / "runs.json", records)
    columns = [
        "label",
        "model",
        "seed",
        "status",
        *[f"test_{m}" for m in METRICS],
        *COST_COLUMNS,
        "error",
        "code_version",
        "cpu",
    ]
    tmp = out / f"runs.csv.{os.getpid()}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for r in records:
            row = {c: r.get(c) for c in columns}
            row.update({f"test_{m}": r.get("test", {}).get(m) for m in METRICS})
            writer.writerow(row)
    os.replace(tmp, out / "runs.csv")
    text = heading + markdown_table(records, labels, proposed)
    (out / "table.md").write_text(text, encoding="utf-8")


def read_runs(path: Path) -> dict[tuple[str, int], dict]:
    """The records a benchmark wrote to ``runs.json`` or ``runs.csv``, by (label, seed).

    A CSV row becomes a record with what the table needs (label, seed, status, test metrics,
    error) and the cost columns as numbers; ``runs.json`` keeps everything."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--merge_runs: no file {path} (give a runs.json or runs.csv)")
    if path.suffix == ".json":
        records = json.loads(path.read_text(encoding="utf-8"))
    elif path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            records = [_record_from_row(row) for row in csv.DictReader(handle)]
    else:
        raise ValueError(f"--merge_runs: {path} is neither a runs.json nor a runs.csv")
    missing = [key for key in ("label", "seed", "status") if records and key not in records[0]]
    if missing:
        raise ValueError(
            f"--merge_runs: {path} has no {', '.join(missing)}: not a benchmark's runs"
        )
    return {(r["label"], int(r["seed"])): r for r in records}


def _record_from_row(row: dict) -> dict:
    def number(text):
        if text in (None, ""):
            return None
        if text in ("True", "False"):
            return text == "True"
        value = float(text)
        return int(value) if text.lstrip("-").isdigit() else value  # epochs stay counts

    record = {key: value for key, value in row.items() if not key.startswith("test_")}
    record["seed"] = int(row["seed"])
    record["test"] = {m: float(row[f"test_{m}"]) for m in METRICS if row.get(f"test_{m}")}
    for key in COST_COLUMNS:
        if key in row:
            record[key] = number(row[key])
    return record


# ------------------------------------------------------------------------------------ driver
def build_base(args) -> dict:
    from recbole_hdccf.paths import model_files, protocol_file

    config = parse_settings(args.set)
    if args.data_path:
        config["data_path"] = os.path.abspath(args.data_path)
    common = [str(protocol_file(args.protocol))] if args.protocol else []
    common += [os.path.abspath(p) for p in (args.config_files or "").split()]
    files = {}
    for _, model, _ in parse_models(args.models):
        files[model] = common + model_files(model)
    digests = {path: _digest(path) for paths in files.values() for path in paths}
    return {
        "dataset": args.dataset,
        "config": config,
        "config_files": files,
        "digests": digests,
        "threads": args.threads,
    }


def _digest(path: str) -> str:
    """A hash of the settings a config file holds: editing a model's yaml changes its runs'
    settings; editing its comments or layout does not."""
    import hashlib

    import yaml

    text = Path(path).read_text(encoding="utf-8")
    try:
        canonical = json.dumps(yaml.safe_load(text), sort_keys=True, default=str)
    except yaml.YAMLError:
        canonical = text
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def plan(args) -> list[RunSpec]:
    seeds = (
        [int(s) for s in args.seed_list.split(",")]
        if args.seed_list
        else [2020 + k for k in range(args.seeds)]
    )
    return [
        RunSpec(label, model, overrides, seed)
        for seed in seeds
        for label, model, overrides in parse_models(args.models)
    ]


def other_seeds(out: Path, specs: list[RunSpec]) -> dict[str, list[int]]:
    """Seeds of finished runs in ``out`` of the labels in ``specs`` that ``specs`` does not name,
    by label: runs another process (``--seed_list`` split over processes) or call left there."""
    planned = {spec.key for spec in specs}
    found: dict[str, list[int]] = {}
    for label in dict.fromkeys(spec.label for spec in specs):
        prefix = run_prefix(label)  # no glob characters in it
        for path in (out / "runs").glob(f"{prefix}*.json"):
            seed = path.stem.removeprefix(prefix)
            if re.fullmatch(r"-?\d+", seed) and path.stem not in planned:
                found.setdefault(label, []).append(int(seed))
    return {label: sorted(seeds) for label, seeds in found.items()}


def effective_settings(spec: RunSpec, base: dict) -> dict:
    """What decides a run's result: dataset, config files and every key set on top of them."""
    files = base["config_files"].get(spec.model) or []
    digests = base.get("digests")  # absent in requests written before digests were kept
    return {
        "dataset": base["dataset"],
        "config_files": files,
        "file_contents": None if digests is None else [digests.get(f) for f in files],
        "config": {**base["config"], **spec.overrides, "seed": spec.seed},
    }


def _settings_then_and_now(spec: RunSpec, base: dict, request_file: Path) -> tuple[dict, dict]:
    """The effective settings of the run stored in ``request_file``, and of ``spec`` now."""
    stored = json.loads(request_file.read_text(encoding="utf-8"))
    before = effective_settings(RunSpec(**stored["spec"]), stored["base"])
    now = json.loads(json.dumps(effective_settings(spec, base)))  # tuples -> lists, as stored
    return before, now


def settings_changes(
    spec: RunSpec, base: dict, request_file: Path, ignore: tuple[str, ...] = ()
) -> list[str]:
    """How ``spec`` under ``base`` differs from the stored request of a finished or interrupted
    run ([] if it does not, or if the run predates stored requests); config keys in ``ignore``
    are not compared."""
    if not request_file.is_file():
        return []
    before, now = _settings_then_and_now(spec, base, request_file)
    for settings in (before, now):
        settings["config"] = {k: v for k, v in settings["config"].items() if k not in ignore}
    changes = []
    if before["dataset"] != now["dataset"]:
        changes.append(f"dataset: {before['dataset']} -> {now['dataset']}")
    # With their contents known, files are compared by what they hold, not where they lie: a
    # preset named by its path, or a copy, is the same protocol.
    contents_known = before["file_contents"] is not None
    same_contents = before["file_contents"] == now["file_contents"]
    if before["config_files"] != now["config_files"]:
        if not (contents_known and same_contents):
            changes.append(f"config_files: {before['config_files']} -> {now['config_files']}")
    elif contents_known and not same_contents:
        edited = [
            f
            for f, old, new in zip(
                now["config_files"], before["file_contents"], now["file_contents"], strict=False
            )
            if old != new
        ]
        changes.append(f"config file edited since the run: {', '.join(edited)}")
    old, new = before["config"], now["config"]
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            changes.append(f"{key}: {old.get(key, '<unset>')} -> {new.get(key, '<unset>')}")
    return changes


def extension_of(spec: RunSpec, base: dict, run_dir: Path, record: dict) -> dict:
    """For ``--extend``: the values a finished run ran with, of the settings in
    :data:`EXTENDABLE` that ``spec`` raises, by name. ValueError, naming the reason, if the run
    cannot be extended to ``spec``'s settings."""
    request = run_dir / "request.json"
    if not request.is_file():
        raise ValueError("it predates stored requests, so its settings are not known")
    if record.get("status") != "ok":
        raise ValueError("it failed (rerun it with --retry_failed)")
    if others := settings_changes(spec, base, request, ignore=EXTENDABLE):
        raise ValueError(f"not only {' and '.join(EXTENDABLE)} changed ({'; '.join(others)})")
    before, now = (s["config"] for s in _settings_then_and_now(spec, base, request))
    raised = {}
    for key in EXTENDABLE:
        if before.get(key, "<unset>") == now.get(key, "<unset>"):
            continue
        if key not in now:
            raise ValueError(f"give {key} explicitly (--set {key}=N), larger than it ran with")
        old = before[key] if key in before else record.get("config", {}).get(key)
        new = now[key]
        if old is None and key == "epochs":
            raise ValueError("its record does not say how many epochs it ran with")
        larger = budget_was_raised(old, new) if key == "train_time_budget" else new > old
        if not larger:
            raise ValueError(f"{key} {old} -> {new}: an extension only raises it")
        raised[key] = old
    if resume_checkpoint(run_dir) is None:
        raise ValueError("it left no end-of-epoch checkpoint to go on from")
    return raised


def next_step(
    spec: RunSpec, base: dict, out: Path, extend: bool, retry_failed: bool
) -> tuple[str, object]:
    """What the benchmark does with a run now: ``("skip", record)`` if it finished, ``("extend",
    the raised settings' earlier values)`` (see :func:`extension_of`) or ``("run", None)`` to
    train it (afresh, or on from its last checkpoint), ``("conflict", why)`` if it finished or
    was interrupted under settings it cannot go on from."""
    run_dir, done = out / "runs" / spec.key, out / "runs" / f"{spec.key}.json"
    request = run_dir / "request.json"
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
    except FileNotFoundError:  # not finished, or moved aside by an extension
        record = None
    if record is None:
        if resume_checkpoint(run_dir) and (changes := settings_changes(spec, base, request)):
            return "conflict", (
                f"was interrupted under other settings ({'; '.join(changes)}), and its "
                "checkpoint would go on under those"
            )
        return "run", None
    if changes := settings_changes(spec, base, request):
        why = f"finished with other settings ({'; '.join(changes)})"
        if not extend:
            return "conflict", why
        try:
            return "extend", extension_of(spec, base, run_dir, record)
        except ValueError as error:
            return "conflict", f"{why}; --extend cannot go on from it: {error}"
    if record["status"] == "ok" or not retry_failed:
        return "skip", record
    return "run", None


def unfinished_extension(spec: RunSpec, base: dict, run_dir: Path) -> dict | None:
    """For a run with no finished record that an extension began (its record moved aside to
    ``before-extend-<n>.json``, then interrupted, or failed and retried): the values of the
    settings it was being extended in, before the extension, for the record it will end with.
    None for a run no extension began."""
    kept = sorted(run_dir.glob("before-extend-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    if not kept:
        return None
    before = json.loads(kept[-1].read_text(encoding="utf-8")).get("config", {})
    now = effective_settings(spec, base)["config"]
    return {k: before.get(k) for k in EXTENDABLE if k in now and now[k] != before.get(k)}


def _archive_record(done: Path, run_dir: Path) -> Path:
    """Move a finished run's record aside before it is extended; returns where it went."""
    number = 1 + len(list(run_dir.glob("before-extend-*.json")))
    kept = run_dir / f"before-extend-{number}.json"
    os.replace(done, kept)
    return kept


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_hdccf.benchmark", description=__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", default=None)
    parser.add_argument("--models", default="HDCCF,BPR,NeuMF,ENMF,LightGCN,SimpleX")
    parser.add_argument(
        "--protocol",
        default="paper",
        help="preset in properties/protocol, or a yaml file; none for --config_files alone",
    )
    parser.add_argument("--config_files", default=None, help="yaml files for every model")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 2020, 2021, ...")
    parser.add_argument("--seed_list", default=None, help="explicit seeds, e.g. 1,2,3")
    parser.add_argument("--set", action="append", help="key=value for every model (repeatable)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per run (default: torch's, all cores); 1 when runs share the cores",
    )
    parser.add_argument("--retry_failed", action="store_true", help="rerun failed runs")
    parser.add_argument(
        "--extend",
        action="store_true",
        help="let finished runs train on under a larger train_time_budget or epochs (--set), "
        "from their last checkpoints",
    )
    parser.add_argument(
        "--proposed", default=None, help="label given Imp. and p (default: the first HDCCF one)"
    )
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="write the table from the finished runs in --out; run nothing",
    )
    parser.add_argument(
        "--merge_runs",
        action="append",
        help="with --report_only: another benchmark's runs.json or runs.csv, for the runs "
        "--out lacks (repeatable; their settings are taken as written, not checked)",
    )
    args = parser.parse_args(argv)
    if args.protocol in ("", "none"):
        args.protocol = None
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads={args.threads}: give 1 or more", file=sys.stderr)
        return 2

    try:
        from recbole_hdccf.registry import check_model_name, check_setting_names

        specs = plan(args)
        for spec in specs:
            check_model_name(spec.model)
        base = build_base(args)
        # before any run: a misspelt setting would change nothing, silently (once per label)
        for spec in {spec.label: spec for spec in specs}.values():
            sources = ((spec.label, spec.overrides), (f"--set, for {spec.model}", base["config"]))
            for source, names in sources:
                try:
                    check_setting_names(spec.model, list(names), base["config_files"][spec.model])
                except ValueError as error:
                    raise ValueError(f"{source}: {error}") from None
        if args.merge_runs and not args.report_only:
            raise ValueError("--merge_runs only merges into a report: add --report_only")
        if args.extend and args.report_only:
            raise ValueError("--extend trains runs on; --report_only runs nothing: drop one")
        merged = {}
        for path in args.merge_runs or []:
            merged.update(read_runs(path))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    labels = list(dict.fromkeys(s.label for s in specs))
    if args.proposed is not None and args.proposed not in labels:
        print(
            f"error: --proposed={args.proposed!r} is not one of --models: {labels}", file=sys.stderr
        )
        return 2
    out = Path(args.out).resolve()  # each run's process starts in its own folder
    (out / "runs").mkdir(parents=True, exist_ok=True)
    # Before anything runs, the runs this benchmark cannot go on from, one line per distinct
    # reason: a report over runs made with `--set epochs=N` would otherwise repeat one line for
    # every run.
    refused: dict[str, list[str]] = {}
    ways_out = {}  # one per kind of refused run: finished, or interrupted
    for spec in specs:
        finished = (out / "runs" / f"{spec.key}.json").exists()
        if (args.report_only and not finished) or in_use(out / "runs" / spec.key):
            continue  # a report reads finished runs only; a held run is the loop's to report
        step, why = next_step(spec, base, out, args.extend, args.retry_failed)
        if step == "conflict":
            refused.setdefault(why, []).append(spec.key)
            ways_out[finished] = (
                "delete OUT/runs/<run>.json to rerun them"
                if finished
                else "delete OUT/runs/<run>/saved to start them again"
            )
    for why, keys in refused.items():
        runs = f"run {keys[0]}" if len(keys) == 1 else f"{len(keys)} runs ({', '.join(keys)})"
        level = "warning" if args.report_only else "error"
        print(f"{level}: {runs} in {out} {why}", file=sys.stderr)
    if refused and args.report_only:
        print(
            "warning: the table reports these runs as they ran (give the settings they ran "
            "with to silence this)",
            file=sys.stderr,
        )
    elif refused:
        for way_out in ways_out.values():
            print(f"error: give these settings a new --out, or {way_out}", file=sys.stderr)
        return 2
    records: dict[str, dict] = {}
    missing, busy, conflicts = [], [], []
    for index, spec in enumerate(specs, 1):
        run_dir, done = out / "runs" / spec.key, out / "runs" / f"{spec.key}.json"
        prefix = f"[{index}/{len(specs)}] {spec.label} seed={spec.seed}"
        if args.report_only:
            if done.exists():
                records[spec.key] = json.loads(done.read_text(encoding="utf-8"))
            elif (spec.label, spec.seed) in merged:
                records[spec.key] = merged[spec.label, spec.seed]
                print(f"{prefix}: from --merge_runs", flush=True)
            else:
                missing.append(f"{spec.label} seed={spec.seed}")
            continue
        step, detail = next_step(spec, base, out, args.extend, args.retry_failed)
        if step == "skip":  # a finished run is read without its lock: a retest may hold it
            records[spec.key] = detail
            print(f"{prefix}: skipped, finished earlier ({detail['status']})", flush=True)
            continue
        try:
            with run_lock(run_dir, wait=LOCK_WAIT_SECONDS) as lock_fd:
                # Again, holding the lock: another process may have finished, extended or
                # begun the run since the first look.
                step, detail = next_step(spec, base, out, args.extend, args.retry_failed)
                if step == "skip":
                    records[spec.key] = detail
                    print(f"{prefix}: skipped, finished meanwhile ({detail['status']})", flush=True)
                    continue
                if step == "conflict":
                    print(f"error: {prefix}: {detail}", file=sys.stderr, flush=True)
                    conflicts.append(f"{spec.label} seed={spec.seed}")
                    continue
                if step == "extend":
                    kept = _archive_record(done, run_dir)
                    now = effective_settings(spec, base)["config"]
                    raised = ", ".join(f"{k} {v} -> {now[k]}" for k, v in detail.items())
                    print(
                        f"{prefix}: extending ({raised}; the earlier record is {kept.name}) ...",
                        flush=True,
                    )
                elif (detail := unfinished_extension(spec, base, run_dir)) is not None:
                    step = "extend"  # an extension interrupted or failed: it goes on
                    print(f"{prefix}: running (an unfinished extension) ...", flush=True)
                else:
                    print(f"{prefix}: running ...", flush=True)
                record = run_in_child(spec, base, out, args.timeout, lock_fd)
                if step == "extend":
                    record["extended_from"] = detail
                _write_json(done, record)
        except RunInUse as error:
            print(f"{prefix}: skipped, {error}", flush=True)
            busy.append(f"{spec.label} seed={spec.seed}")
            continue
        records[spec.key] = record
        if record["status"] == "ok":
            ndcg = record["test"].get("ndcg@10", math.nan)
            print(
                f"{prefix}: done in {record['total_seconds']:.1f}s, NDCG@10 {ndcg:.4f}", flush=True
            )
        else:
            print(f"{prefix}: FAILED ({record['error']})", flush=True)
        write_outputs(out, list(records.values()), labels, args.proposed)
    if missing:
        print(f"not run yet (left out of the table): {', '.join(missing)}", flush=True)
    if busy:
        print(
            f"in use by other processes (left out of the table; run this command again when "
            f"they finish): {', '.join(busy)}",
            flush=True,
        )
    if others := other_seeds(out, specs):
        seeds = sorted({spec.seed for spec in specs}.union(*others.values()))
        listed = "; ".join(f"{label} seed {', '.join(map(str, s))}" for label, s in others.items())
        print(
            f"note: {out} also holds finished runs under other seeds ({listed}), left out of "
            f"this table; a table over them all: the same command with --report_only "
            f"--seed_list={','.join(map(str, seeds))}",
            flush=True,
        )
    write_outputs(out, list(records.values()), labels, args.proposed)
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"written: {out / 'table.md'}, {out / 'runs.csv'}, {out / 'runs.json'}")
    if conflicts:
        print(
            f"error: not run, as other settings reached them while this benchmark ran: "
            f"{', '.join(conflicts)}; give these settings a new --out",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_child":
        sys.exit(_child(sys.argv[2]))
    sys.exit(main())
