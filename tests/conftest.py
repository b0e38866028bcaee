"""Shared fixtures: test hygiene, a tiny synthetic RecBole dataset and a small fast config.

Hygiene. RecBole writes ``./log``, ``./log_tensorboard`` and ``./saved`` into the working directory
and its ``Config`` parses every ``--key=value`` of ``sys.argv``. Every test therefore runs inside
its own ``tmp_path`` with ``sys.argv == ["pytest"]`` (``isolated``), loggers RecBole adds are
removed afterwards, and the session fails if one of RecBole's output folders appeared in the
repository root.

Data. ``tiny_data_path`` is a folder holding ``tiny/tiny.inter`` (40 users x 60 items, 8-20
interactions per user with increasing timestamps, popularity-skewed items, fixed seed); never
train HDCCF on ml-100k in the default suite (about 150 s per epoch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# What RecBole (and our entry points) write into the working directory.
RUN_ARTIFACTS = ("log", "log_tensorboard", "saved", "hyper_result.result")

TINY = "tiny"
TINY_USERS = 40
TINY_ITEMS = 60


def pytest_configure(config):
    # The tiny tensors of these tests gain nothing from intra-op threads, and on a busy machine
    # OpenMP's spinning threads made one HDCCF step 20x slower. TEST_TORCH_THREADS overrides.
    import torch

    torch.set_num_threads(int(os.environ.get("TEST_TORCH_THREADS", "1")))
    # The compat shims, not this escape hatch, must be what makes RecBole checkpoints load.
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)


@contextlib.contextmanager
def isolated(path: os.PathLike, argv: list[str] | None = None):
    """Run a block with ``path`` as working directory and a bare ``sys.argv``; restore both."""
    old_cwd, old_argv = os.getcwd(), sys.argv
    os.chdir(path)
    sys.argv = list(argv) if argv is not None else ["pytest"]
    try:
        yield Path(path)
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv


@contextlib.contextmanager
def restored_root_logger():
    """RecBole's ``init_logger`` adds handlers to the root logger (and opens log files) and its
    ``objective_function`` removes them all; restore the root logger as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                with contextlib.suppress(Exception):
                    handler.close()
        for handler in handlers:  # RecBole's objective_function removes every handler
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="session", autouse=True)
def _repository_stays_clean():
    """Fail the session if a test run wrote RecBole's outputs into the repository root."""
    before = {name for name in RUN_ARTIFACTS if (REPO_ROOT / name).exists()}
    yield
    appeared = [name for name in RUN_ARTIFACTS if (REPO_ROOT / name).exists()]
    appeared = sorted(set(appeared) - before)
    if appeared:
        pytest.fail(
            f"the test run wrote {appeared} into the repository root {REPO_ROOT}: a test ran "
            "RecBole outside its tmp_path (use the `isolated` helper / tmp_path)",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _isolated_test(tmp_path):
    """Every test: cwd = its tmp_path, ``sys.argv == ['pytest']``, the root logger restored."""
    # Config._init_device writes CUDA_VISIBLE_DEVICES; keep it from leaking between tests.
    cuda_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        with restored_root_logger(), isolated(tmp_path):
            yield tmp_path
    finally:
        if cuda_visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible


# ---------------------------------------------------------------------------------------- data
def write_tiny_dataset(
    root: os.PathLike,
    name: str = TINY,
    n_users: int = TINY_USERS,
    n_items: int = TINY_ITEMS,
    seed: int = 0,
) -> Path:
    """Write ``root/<name>/<name>.inter`` (RecBole atomic format) and return ``root``.

    Each user has 8-20 distinct items drawn with Zipf-like popularity, at strictly increasing
    timestamps, so leave-one-out by time (``order: TO``) is well defined for everyone.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.9
    weights /= weights.sum()
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(1, n_users + 1):
        count = int(rng.integers(8, 21))
        items = rng.choice(n_items, size=count, replace=False, p=weights) + 1
        times = (
            880_000_000
            + int(rng.integers(0, 10**6))
            + np.cumsum(rng.integers(60, 86_400, size=count))
        )
        lines += [f"{user}\t{item}\t{time}" for item, time in zip(items, times, strict=True)]
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(root)


def small_config(data_path: os.PathLike, checkpoint_dir: os.PathLike, **overrides) -> dict:
    """A config dict for fast runs on the tiny dataset (full ranking: deterministic metrics)."""
    config = {
        "data_path": str(data_path),
        "checkpoint_dir": str(checkpoint_dir),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "epochs": 2,
        "train_batch_size": 64,
        "eval_batch_size": 4096,
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "metrics": ["Hit", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "show_progress": False,
        "neighbor_num": 2,
        "embedding_size": 16,
        "seed": 2020,
        "reproducibility": True,
    }
    config.update(overrides)
    return config


def config_yaml(config: dict) -> str:
    """``config`` as a RecBole yaml file's text."""
    import yaml

    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(scope="session")
def tiny_data_path(tmp_path_factory) -> Path:
    """A read-only folder with ``tiny/tiny.inter``; use as ``data_path`` with ``dataset='tiny'``."""
    return write_tiny_dataset(tmp_path_factory.mktemp("data"))


# ----------------------------------------------------------------------------------- benchmark
def write_benchmark_config(data_path: os.PathLike, folder: os.PathLike) -> Path:
    """``folder/bench.yaml``: :func:`small_config` for benchmark runs (2 epochs, top-k 10 and 50;
    the benchmark keeps each run's checkpoints in its own folder)."""
    config = small_config(data_path, Path(folder) / "unused", epochs=2, topk=[10, 50])
    config.pop("checkpoint_dir")
    config_file = Path(folder) / "bench.yaml"
    config_file.write_text(config_yaml(config), encoding="utf-8")
    return config_file


def benchmark_args(config_file: os.PathLike, out: os.PathLike, models: str, seeds="1,2"):
    """The benchmark's arguments for ``models`` on the tiny dataset under ``config_file``."""
    return [
        "--dataset=tiny",
        f"--models={models}",
        "--protocol=none",
        f"--config_files={config_file}",
        f"--seed_list={seeds}",
        f"--out={out}",
    ]


@dataclasses.dataclass(frozen=True)
class FinishedBenchmark:
    out: Path  # the --out folder
    config_file: Path  # its --config_files (resuming needs the same path)
    printed: str  # what it printed while it ran


@pytest.fixture(scope="session")
def finished_benchmark(tiny_data_path, tmp_path_factory) -> FinishedBenchmark:
    """One benchmark of BPR and HDCCF, seeds 1 and 2, run once for every test that reads one
    (each run is a child process: about 10 s apiece here). Read only: copy ``out`` to change it;
    a test that edits ``config_file`` (a retest's edited-settings check) restores it in a finally."""
    from recbole_hdccf import benchmark

    folder = tmp_path_factory.mktemp("benchmark")
    config_file = write_benchmark_config(tiny_data_path, folder)
    printed = io.StringIO()
    with restored_root_logger(), isolated(folder), contextlib.redirect_stdout(printed):
        code = benchmark.main(benchmark_args(config_file, folder / "out", "BPR,HDCCF"))
    assert code == 0, printed.getvalue()[-2000:]
    return FinishedBenchmark(folder / "out", config_file, printed.getvalue())


@pytest.fixture
def small_config_dict(tiny_data_path, tmp_path) -> dict:
    """:func:`small_config` for the tiny dataset, checkpoints under this test's tmp_path."""
    return small_config(tiny_data_path, tmp_path / "saved")


@pytest.fixture(scope="session")
def subprocess_env() -> dict:
    """Environment for child Python processes: the repository importable, no weights_only escape."""
    env = dict(os.environ)
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONWARNINGS", "ignore")
    env.setdefault("OMP_NUM_THREADS", os.environ.get("TEST_TORCH_THREADS", "1"))
    return env
