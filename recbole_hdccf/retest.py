"""Test finished benchmark runs under another evaluation protocol, without training again.

    python -m recbole_hdccf.retest --runs=results/ml-1m/paper --protocol=full

Every finished run in ``RUNS`` (an output folder of ``python -m recbole_hdccf.benchmark``) is
evaluated again, on validation and test: its best checkpoint, its own settings, and the
evaluation settings of ``--protocol`` (a preset in ``properties/protocol`` or a yaml file) on top.
Nothing is retrained, so each model keeps the epoch that its own protocol's validation chose:
this shows how the models one protocol selected rank under another (the paper's 99 sampled
negatives -> full ranking), which is not the same as training under that protocol
(``benchmark --protocol=full``, where full-ranking validation also picks the epoch).

The protocol may change how the model is evaluated (candidates, metrics, top-k), nothing else:
a protocol that changes the split or the data filters, or a config file edited since the run,
would test a model on data or settings it was not trained with, and the run is refused with the
keys that differ.

Writes ``OUT/runs/<run>.json`` (the run's benchmark record with ``valid``, ``test`` and ``config``
replaced and ``retest`` added; training cost fields are the original run's), then
``OUT/table.md``, ``OUT/runs.csv`` and ``OUT/runs.json`` in the benchmark's format. ``OUT``
defaults to ``RUNS/retest-<protocol>``. Started again, it skips the runs already retested from
the same checkpoint; a run that fails to retest is reported and the others go on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from recbole_hdccf.benchmark import (
    LOCK_WAIT_SECONDS,
    RunSpec,
    _jsonable,
    _write_json,
    best_checkpoint,
    code_version,
    default_proposed,
    parse_models,
    write_outputs,
)
from recbole_hdccf.paths import protocol_file
from recbole_hdccf.run_lock import RunInUse, run_lock

# Settings a protocol may change: how a trained model is evaluated. ``eval_args`` only in its
# ``mode`` (the split, order and grouping decide the training data).
EVALUATION_KEYS = frozenset(
    {
        "valid_neg_sample_args",
        "test_neg_sample_args",
        "metrics",
        "topk",
        "valid_metric",
        "valid_metric_bigger",
        "metric_decimal_place",
        "eval_batch_size",
        "fixed_eval_candidates",
    }
)
# Settings of the machine and the output folder, not of the model or its data.
HOST_KEYS = frozenset({"checkpoint_dir", "device", "gpu_id", "use_gpu", "show_progress"})
# Settings that only bound how long training ran: they cannot change what a saved model scores
# (a run may have been resumed under a larger ``epochs``), so a difference is noted, not refused.
LENGTH_KEYS = frozenset({"epochs", "stopping_step", "train_time_budget"})


class RetestError(ValueError):
    """A run that cannot be tested under the requested protocol, with the reason."""


def training_changes(before: dict, after: dict, keys=None) -> list[str]:
    """Keys of two final configs (as stored in run records) that differ in anything but how the
    model is evaluated and how long it trained, as ``"key: old -> new"`` (``keys``: only these)."""
    changes = []
    for key in sorted(keys if keys is not None else set(before) | set(after)):
        if keys is None and key in EVALUATION_KEYS | HOST_KEYS | LENGTH_KEYS:
            continue
        old, new = before.get(key, "<unset>"), after.get(key, "<unset>")
        if key == "eval_args" and isinstance(old, dict) and isinstance(new, dict):
            old = {k: v for k, v in old.items() if k != "mode"}
            new = {k: v for k, v in new.items() if k != "mode"}
        if old != new:
            changes.append(f"{key}: {old} -> {new}")
    return changes


@contextlib.contextmanager
def _working_directory(path: Path):
    # RecBole's Trainer writes log_tensorboard/ under the working directory.
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def retest_one(
    run_dir: Path, record: dict, checkpoint: Path | None, protocol: Path, workdir: Path
) -> dict:
    """Evaluate ``checkpoint``, the best model of the run in ``run_dir`` (its benchmark
    ``record``), under ``protocol``; returns the new record. Raises :class:`RetestError` if the
    protocol or an edited config file would change its data or settings."""
    import yaml
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    import recbole_hdccf  # noqa: F401  (the plugin's models and RecBole fixes)

    request = json.loads((run_dir / "request.json").read_text(encoding="utf-8"))
    spec, base = RunSpec(**request["spec"]), request["base"]
    if checkpoint is None:
        raise RetestError(f"{run_dir}: no saved model to test")
    own = {**base["config"], **spec.overrides}  # --set and the label's settings
    protocol_keys = set(yaml.safe_load(protocol.read_text(encoding="utf-8")) or {})
    if clash := sorted(protocol_keys & set(own)):
        raise RetestError(
            f"{spec.key} sets {clash} itself (--set or its model settings), which would override "
            f"{protocol.name}; retest runs that leave the evaluation settings to the protocol"
        )
    config_dict = {
        **own,
        "seed": spec.seed,
        "checkpoint_dir": str(workdir / "saved"),
        "show_progress": False,
    }
    sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv
    config = Config(
        model=spec.model,
        dataset=base["dataset"],
        config_file_list=[*(base["config_files"].get(spec.model) or []), str(protocol)],
        config_dict=config_dict,
    )
    final = json.loads(json.dumps({k: _jsonable(v) for k, v in config.final_config_dict.items()}))
    if changes := training_changes(record["config"], final):
        raise RetestError(
            f"{spec.key}: under {protocol.name} the model would see other data or settings than "
            f"it was trained with ({'; '.join(changes)}); a protocol may change evaluation "
            "settings only, and the run's config files must be as they were when it ran"
        )
    noted = training_changes(record["config"], final, keys=LENGTH_KEYS)
    version = code_version()  # the retest's own; the training's is the record's
    start = time.time()
    with _working_directory(workdir):
        init_seed(config["seed"], config["reproducibility"])
        train_data, valid_data, test_data = data_preparation(config, create_dataset(config))
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        results = {
            phase: trainer.evaluate(data, load_best_model=True, model_file=str(checkpoint))
            for phase, data in (("valid", valid_data), ("test", test_data))
        }
    return {
        **record,
        "valid": {k: float(v) for k, v in results["valid"].items()},
        "test": {k: float(v) for k, v in results["test"].items()},
        "config": final,
        "retest": {
            "protocol": str(protocol),
            "source": str(run_dir),
            "checkpoint": str(checkpoint),
            "checkpoint_mtime_ns": checkpoint.stat().st_mtime_ns,
            "seconds": time.time() - start,
            "length_settings_changed": noted,
            "code_version": version,
        },
    }


def _labels(records: list[dict], runs: Path) -> list[str]:
    """Labels in the order of the source folder's last table, then any others by name."""
    order = []
    if (runs / "runs.json").is_file():
        order = [r["label"] for r in json.loads((runs / "runs.json").read_text(encoding="utf-8"))]
    return list(dict.fromkeys(order + sorted(r["label"] for r in records)))


# What a retest record replaces or adds; the rest it copies from the run's record.
RETESTED_KEYS = ("valid", "test", "config", "retest")


def _up_to_date(done: Path, checkpoint: Path | None, record: dict) -> bool:
    """Whether ``done`` is a successful retest of ``checkpoint`` as it is now, made from the
    run's ``record`` as it is now (a run extended without a better epoch keeps its checkpoint
    but not its record: more epochs, seconds, settings)."""
    if not done.is_file():
        return False
    previous = json.loads(done.read_text(encoding="utf-8"))
    if previous["status"] != "ok":
        return False
    stored = previous["retest"]
    copied = {k: v for k, v in previous.items() if k not in RETESTED_KEYS}
    return (
        checkpoint is not None
        and Path(stored["checkpoint"]).name == checkpoint.name
        and stored["checkpoint_mtime_ns"] == checkpoint.stat().st_mtime_ns
        and copied == {k: v for k, v in record.items() if k not in RETESTED_KEYS}
    )


def _retest_or_skip(
    prefix: str, done: Path, run_dir: Path, record: dict, protocol: Path, workdir: Path
) -> dict:
    """The retest record of one finished run: the earlier one if it is up to date, else a new
    one (written to ``done``; a ``failed`` record if the retest raised)."""
    checkpoint = best_checkpoint(run_dir, record)
    if _up_to_date(done, checkpoint, record):
        print(f"{prefix}: skipped, retested earlier", flush=True)
        return json.loads(done.read_text(encoding="utf-8"))
    print(f"{prefix}: testing under {protocol.name} ...", flush=True)
    workdir.mkdir(exist_ok=True)
    try:
        new = retest_one(run_dir, record, checkpoint, protocol, workdir)
        ndcg = new["test"].get("ndcg@10", float("nan"))
        print(f"{prefix}: NDCG@10 {ndcg:.4f} ({new['retest']['seconds']:.0f} s)", flush=True)
    except Exception as error:  # noqa: BLE001  (one run's failure must not stop the others)
        kept = {k: v for k, v in record.items() if k not in ("valid", "test")}
        new = {**kept, "status": "failed", "error": f"retest: {error}"[:600]}
        print(f"{prefix}: FAILED ({new['error']})", flush=True)
    _write_json(done, new)
    return new


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recbole_hdccf.retest", description=__doc__)
    parser.add_argument("--runs", required=True, help="a benchmark --out folder")
    parser.add_argument("--protocol", required=True, help="preset name or yaml file")
    parser.add_argument("--out", default=None, help="default: RUNS/retest-<protocol>")
    parser.add_argument("--models", default=None, help="labels to retest (default: every one)")
    parser.add_argument("--proposed", default=None, help="as for the benchmark")
    args = parser.parse_args(argv)

    runs = Path(args.runs).resolve()
    try:
        protocol = protocol_file(args.protocol)
        if not (runs / "runs").is_dir():
            raise RetestError(f"--runs={args.runs}: no runs/ folder; give a benchmark --out folder")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve() if args.out else runs / f"retest-{protocol.stem}"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    sources = {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((runs / "runs").glob("*.json"))
    }
    labels = _labels(list(sources.values()), runs)
    if args.models:
        try:
            wanted = [label for label, _, _ in parse_models(args.models)]
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if unknown := [label for label in wanted if label not in labels]:
            print(f"error: no runs of {unknown} in {runs}; it has {labels}", file=sys.stderr)
            return 2
        labels = wanted
    records, busy = [], []
    todo = [(key, r) for key, r in sources.items() if r["label"] in labels]
    for index, (key, record) in enumerate(todo, 1):
        prefix = f"[{index}/{len(todo)}] {record['label']} seed={record['seed']}"
        done, run_dir = out / "runs" / f"{key}.json", runs / "runs" / key
        if record["status"] != "ok":
            print(f"{prefix}: failed in {runs}, left as it was", flush=True)
            records.append(record)
            continue
        try:
            # Shared: retests may read a run together, a benchmark may not extend it meanwhile.
            with run_lock(run_dir, shared=True, wait=LOCK_WAIT_SECONDS):
                source = runs / "runs" / f"{key}.json"
                if not source.is_file():  # an extension began after the first look and failed
                    print(f"{prefix}: skipped, no longer finished in {runs}", flush=True)
                    continue
                record = json.loads(source.read_text(encoding="utf-8"))  # may have changed
                new = _retest_or_skip(prefix, done, run_dir, record, protocol, out / "runs" / key)
        except RunInUse as error:
            print(f"{prefix}: skipped, {error}", flush=True)
            busy.append(f"{record['label']} seed={record['seed']}")
            continue
        records.append(new)
    if busy:
        print(
            f"in use by a benchmark (left out of the table; retest again when it finishes): "
            f"{', '.join(busy)}",
            flush=True,
        )
    labels = [label for label in labels if any(r["label"] == label for r in records)]
    proposed = args.proposed or default_proposed(labels)
    heading = (
        f"Test under `{protocol.name}` of the best checkpoints of the runs in `{runs}` (trained "
        "and selected under that folder's protocol; not retrained).\n\n"
    )
    write_outputs(out, records, labels, proposed, heading)
    table = out / "table.md"
    print(table.read_text(encoding="utf-8"))
    print(f"written: {table}, {out / 'runs.csv'}, {out / 'runs.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
