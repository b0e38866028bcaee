"""Compatibility shims for RecBole 1.2.1 on today's stack (torch 2.13, scipy 1.17, numpy 1.26).

The one place where RecBole's behaviour is adjusted. Nothing here edits RecBole's files: each shim
wraps or adds one attribute at import time, is idempotent, and has a test that fails without it
(``tests/test_compat.py``). ``apply()`` runs on ``import recbole_hdccf``.

Shims:

- ``trusted_checkpoint_load``: torch >= 2.6 defaults ``torch.load(weights_only=True)``; RecBole's
  checkpoints pickle the ``Config`` and fail to load in ``Trainer.evaluate(load_best_model=True)``,
  ``Trainer.resume_checkpoint`` and ``quick_start.load_data_and_model``. Those three (and only
  those) load with ``weights_only=False``: the files are RecBole checkpoints the user points at.
- ``numpy_aliases``: ``load_data_and_model`` in a fresh process unpickles a Config without running
  ``Config.__init__``, which is where RecBole sets ``np.float`` and friends; set them first.
- ``dok_update``: scipy >= 1.12 removed ``dok_matrix._update``, which LightGCN, NCL, NGCF, GCMC and
  SpectralCF call to build their adjacency matrices.
- ``unique_checkpoint_names``: RecBole names checkpoints ``<model>-<date_time>.pth`` with one-second
  resolution, so two runs started in the same second overwrite each other's file.
- ``atomic_checkpoints``: ``torch.save`` straight to the final name leaves a truncated file if the
  process is killed mid-write; write to a temporary file and ``os.replace`` it.
- ``cpu_distributed``: ``Config._init_device`` hard-codes NCCL and ``torch.cuda.set_device``; on a
  machine without CUDA use gloo and the CPU (NCCL/CUDA stay unchanged where CUDA exists), and
  split the cores among the node's processes (``torch.set_num_threads``) unless
  ``OMP_NUM_THREADS`` is set.
- ``no_dataset_download``: a missing dataset folder makes RecBole download from its URLs, which
  are dead (RecBole issue #2218), after an interactive y/n prompt that hangs a batch job. Raise
  :class:`DatasetNotFoundError` instead, naming the folder RecBole looked in and how to prepare
  atomic files; a folder without ``<name>.inter`` gets the same error.
- ``ddp_cpu_device_ids``: ``AbstractTrainer`` passes ``device_ids=[local_rank]`` to
  ``DistributedDataParallel``, which torch rejects for CPU modules.
- ``race_free_dirs``: ``recbole.utils.ensure_dir`` checks, then creates; two ranks starting
  together both try ``os.makedirs('./log/<model>')`` and one dies with ``FileExistsError``.
- ``propagate_once_per_evaluation``: ``LightGCN.predict`` and ``NGCF.predict`` propagate over the
  whole graph for every batch of a sampled evaluation (``uni99`` on ML-1M: 150 propagations, 49 s
  a LightGCN validation against 0.5 s with one); their ``full_sort_predict`` already keeps one. In evaluation (eval mode, no grad) ``predict`` reuses the last propagation while no
  parameter has changed since (torch's in-place version counters: an optimizer step or
  ``load_state_dict`` starts a new one), and RecBole's ``predict`` scores it: the same scores.
- ``csr_graph_propagation``: LightGCN's ``torch.sparse.mm`` on its uncoalesced COO adjacency is
  slow on the CPU, and its backward transposes and coalesces the adjacency for every layer of
  every batch; on ML-1M that was most of a 305 s epoch. On the CPU its ``forward`` propagates with
  :mod:`recbole_hdccf.graph_kernel` instead (CSR, the transpose built once): the same
  mathematics, equal to float32 rounding (not bit for bit). ``graph_propagation: recbole`` (the
  plugin's ``properties/model/LightGCN.yaml`` has ``csr``) keeps RecBole's own.

Distributed runs also rely on two details of the shims above: every rank of a run uses rank 0's
checkpoint name (``unique_checkpoint_names`` broadcasts it; each rank would otherwise draw its own
suffix and the other ranks would load a file that does not exist), and ``_save_checkpoint`` ends
with a barrier, so no rank loads the best model before rank 0 has finished writing it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid

import numpy as np
import scipy.sparse as sp
import torch

_APPLIED: set[str] = set()
_MISSING = object()

# Old numpy names RecBole 1.2.1 still uses (numpy < 2 has the targets).
_NUMPY_ALIASES = {
    "bool": np.bool_,
    "int": np.int_,
    "float": np.float_,
    "complex": np.complex_,
    "object": np.object_,
    "str": np.str_,
    "long": np.int_,
    "unicode": np.unicode_,
}


def _once(name):
    """Run a shim's installer at most once per process."""

    def decorator(installer):
        @functools.wraps(installer)
        def wrapper():
            if name in _APPLIED:
                return
            installer()
            _APPLIED.add(name)

        return wrapper

    return decorator


@contextlib.contextmanager
def trusted_torch_load():
    """Within the block, ``torch.load`` defaults to ``weights_only=False`` (RecBole checkpoints)."""
    original = torch.load

    @functools.wraps(original)
    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def set_numpy_aliases():
    for name, target in _NUMPY_ALIASES.items():
        # not hasattr(): numpy's module __getattr__ warns (FutureWarning) on np.long / np.str
        if name not in vars(np):
            setattr(np, name, target)


def _with_trusted_load(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        set_numpy_aliases()
        with trusted_torch_load():
            return function(*args, **kwargs)

    wrapper.__recbole_hdccf_wrapped__ = function
    return wrapper


@_once("trusted_checkpoint_load")
def _install_trusted_checkpoint_load():
    import recbole.quick_start
    import recbole.quick_start.quick_start as quick_start
    from recbole.trainer import Trainer

    Trainer.evaluate = _with_trusted_load(Trainer.evaluate)
    Trainer.resume_checkpoint = _with_trusted_load(Trainer.resume_checkpoint)
    wrapped = _with_trusted_load(quick_start.load_data_and_model)
    quick_start.load_data_and_model = wrapped
    recbole.quick_start.load_data_and_model = wrapped


def _dok_update(self, data):
    """``dok_matrix._update`` as scipy < 1.12 had it: bulk insert of {(row, col): value}."""
    self._dict.update(data)


@_once("dok_update")
def _install_dok_update():
    for cls in (sp.dok_matrix, getattr(sp, "dok_array", None)):
        if cls is not None and not hasattr(cls, "_update"):
            cls._update = _dok_update


def unique_checkpoint_name(path: str) -> str:
    """``saved/BPR-Nov-27-2026_15-30-00.pth`` -> ``saved/BPR-Nov-27-2026_15-30-00-1a2b3c.pth``."""
    root, ext = os.path.splitext(path)
    return f"{root}-{uuid.uuid4().hex[:6]}{ext}"


@_once("unique_checkpoint_names")
def _install_unique_checkpoint_names():
    from recbole.trainer import Trainer

    original_init = Trainer.__init__

    @functools.wraps(original_init)
    def __init__(self, config, model):
        original_init(self, config, model)
        self.saved_model_file = shared_by_ranks(
            config, unique_checkpoint_name(self.saved_model_file)
        )

    Trainer.__init__ = __init__


def is_distributed(config) -> bool:
    """Whether ``config`` belongs to a rank of an initialised distributed run."""
    return (
        not config["single_spec"]
        and torch.distributed.is_available()
        and torch.distributed.is_initialized()
    )


def shared_by_ranks(config, value):
    """Rank 0's ``value`` on every rank of a distributed run (``value`` itself otherwise)."""
    if not is_distributed(config):
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def atomic_target(final: str):
    """Yield a temporary path next to ``final``; what the block writes there replaces ``final``
    in one ``os.replace`` (after an fsync). Nothing is replaced if the block writes nothing or
    raises, and the temporary file never outlives the block."""
    tmp = os.path.join(
        os.path.dirname(os.path.abspath(final)), f".{os.path.basename(final)}.{os.getpid()}.tmp"
    )
    try:
        yield tmp
        if os.path.exists(tmp):
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_torch_save(obj, final: str) -> None:
    """``torch.save(obj, final)`` that leaves either the old or the new complete file."""
    with atomic_target(final) as tmp:
        torch.save(obj, tmp, pickle_protocol=4)


def load_checkpoint(path, map_location=None):
    """``torch.load`` of a RecBole checkpoint (a pickled ``Config`` inside: trusted load)."""
    set_numpy_aliases()
    with trusted_torch_load():
        return torch.load(path, map_location=map_location)


@_once("atomic_checkpoints")
def _install_atomic_checkpoints():
    from recbole.trainer import Trainer
    from recbole.utils import set_color

    original = Trainer._save_checkpoint

    @functools.wraps(original)
    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        final = kwargs.pop("saved_model_file", self.saved_model_file)
        with atomic_target(final) as tmp:
            original(self, epoch, verbose=False, saved_model_file=tmp, **kwargs)
            written = os.path.exists(tmp)  # ranks other than 0 save nothing
        if is_distributed(self.config):
            torch.distributed.barrier()  # the file is complete before any rank reads it
        if written and verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {final}")

    Trainer._save_checkpoint = _save_checkpoint


def _share_cpu_threads(nproc: int) -> None:
    """Give each of this node's ``nproc`` processes its share of the cores (as ``torchrun`` sets
    ``OMP_NUM_THREADS``), unless the user set ``OMP_NUM_THREADS``: with every process using
    every core, OpenMP threads oversubscribe the CPU (on 2 cores one epoch of the tiny test data
    took 10 s instead of 0.1 s)."""
    if int(nproc) > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(nproc)))


@_once("cpu_distributed")
def _install_cpu_distributed():
    from recbole.config import Config

    original = Config._init_device

    @functools.wraps(original)
    def _init_device(self):
        if "local_rank" not in self.final_config_dict or torch.cuda.is_available():
            return original(self)
        # RecBole's distributed branch, with gloo and the CPU instead of NCCL and CUDA.
        cfg = self.final_config_dict
        cfg["gpu_id"] = str(cfg.get("gpu_id", ""))
        torch.distributed.init_process_group(
            backend="gloo",
            rank=cfg["local_rank"] + cfg["offset"],
            world_size=cfg["world_size"],
            init_method=f"tcp://{cfg['ip']}:{cfg['port']}",
        )
        cfg["device"] = torch.device("cpu")
        cfg["single_spec"] = False
        _share_cpu_threads(cfg.get("nproc") or 1)
        if cfg["local_rank"] != 0:
            cfg["state"] = "error"
            cfg["show_progress"] = False
            cfg["verbose"] = False

    Config._init_device = _init_device


@_once("ddp_cpu_device_ids")
def _install_ddp_cpu_device_ids():
    import recbole.trainer.trainer as trainer_module

    original = trainer_module.DistributedDataParallel

    def distributed_data_parallel(module, device_ids=None, **kwargs):
        if not torch.cuda.is_available():
            device_ids = None  # CPU modules take no device_ids
        return original(module, device_ids=device_ids, **kwargs)

    trainer_module.DistributedDataParallel = distributed_data_parallel


@_once("race_free_dirs")
def _install_race_free_dirs():
    import sys

    import recbole.data.utils  # noqa: F401  (modules that imported ensure_dir by name)
    import recbole.trainer.trainer  # noqa: F401
    import recbole.utils.logger  # noqa: F401
    import recbole.utils.utils as utils

    original = utils.ensure_dir

    @functools.wraps(original)
    def ensure_dir(dir_path):
        os.makedirs(dir_path, exist_ok=True)

    for name, module in list(sys.modules.items()):
        if name.startswith("recbole") and getattr(module, "ensure_dir", None) is original:
            module.ensure_dir = ensure_dir


class DatasetNotFoundError(FileNotFoundError):
    """RecBole's atomic files for a dataset are not where the config points."""


def _missing_dataset_message(name: str, path: str, problem: str) -> str:
    return (
        f"dataset {name!r}: {problem} (RecBole looked in {os.path.abspath(path)!r}, i.e. "
        f"data_path/{name}/{name}.inter). RecBole's download links no longer work (RecBole "
        f"issue #2218), so nothing is downloaded. Prepare atomic files from the original "
        f"download with `python -m recbole_hdccf.prepare {name} --raw PATH --out DIR` and run "
        f"with --data_path=DIR (see docs/data.md); only ml-100k ships inside RecBole."
    )


@_once("no_dataset_download")
def _install_no_dataset_download():
    from recbole.data.dataset import Dataset

    def _download(self):
        raise DatasetNotFoundError(
            _missing_dataset_message(self.dataset_name, self.dataset_path, "folder not found")
        )

    original_load = Dataset._load_data

    @functools.wraps(original_load)
    def _load_data(self, token, dataset_path):
        # benchmark_filename splits are <token>.<part>.inter: any *.inter of the token will do
        has_inter = os.path.isdir(dataset_path) and any(
            f.startswith(f"{token}.") and f.endswith(".inter") for f in os.listdir(dataset_path)
        )
        if os.path.isdir(dataset_path) and not has_inter:
            raise DatasetNotFoundError(
                _missing_dataset_message(token, dataset_path, f"no {token}.inter in the folder")
            )
        return original_load(self, token, dataset_path)

    Dataset._download = _download
    Dataset._load_data = _load_data


def _parameters_version(model) -> tuple:
    """Changes whenever any parameter is replaced, changed in place, or given new data."""
    return tuple((id(p), p.data_ptr(), p._version) for p in model.parameters())


def _propagating_once(original_predict):
    @functools.wraps(original_predict)
    def predict(self, interaction):
        if self.training or torch.is_grad_enabled():
            return original_predict(self, interaction)
        version = _parameters_version(self)
        held = self.__dict__.get("_recbole_hdccf_propagation")
        if held is None or held[0] != version:
            held = (version, self.forward())
            self.__dict__["_recbole_hdccf_propagation"] = held
        # RecBole's predict, scoring the propagation held instead of propagating again.
        own = self.__dict__.get("forward", _MISSING)
        self.__dict__["forward"] = lambda: held[1]
        try:
            return original_predict(self, interaction)
        finally:
            if own is _MISSING:
                del self.__dict__["forward"]
            else:
                self.__dict__["forward"] = own

    return predict


@_once("propagate_once_per_evaluation")
def _install_propagate_once_per_evaluation():
    from recbole.model.general_recommender import NGCF, LightGCN

    for model_class in (LightGCN, NGCF):
        model_class.predict = _propagating_once(model_class.predict)


GRAPH_PROPAGATION_KEY = "graph_propagation"
GRAPH_PROPAGATIONS = {
    "csr": "the adjacency in CSR with a precomputed transpose for the gradient, on the CPU",
    "recbole": "RecBole's own torch.sparse.mm on its COO adjacency",
}


def _reading_graph_propagation(original_init):
    @functools.wraps(original_init)
    def __init__(self, config, dataset):
        original_init(self, config, dataset)
        choice = config[GRAPH_PROPAGATION_KEY]
        choice = "csr" if choice is None else choice
        if choice not in GRAPH_PROPAGATIONS:
            options = "; ".join(f"{key!r}: {text}" for key, text in GRAPH_PROPAGATIONS.items())
            raise ValueError(
                f"{GRAPH_PROPAGATION_KEY}: {choice!r} is not one of the choices ({options}). "
                f"Set e.g. --{GRAPH_PROPAGATION_KEY}=recbole"
            )
        self.__dict__["_recbole_hdccf_graph_propagation"] = choice

    return __init__


def _propagating_in_csr(original_forward):
    """LightGCN's ``forward`` (RecBole 1.2.1's, line for line) with each layer's
    ``torch.sparse.mm(norm_adj_matrix, x)`` as :func:`graph_kernel.propagate` on its CSR pair."""
    from recbole_hdccf.graph_kernel import csr_graph, propagate

    @functools.wraps(original_forward)
    def forward(self):
        adjacency = self.norm_adj_matrix
        if (
            self.__dict__.get("_recbole_hdccf_graph_propagation", "csr") != "csr"
            or adjacency.device.type != "cpu"
        ):
            return original_forward(self)
        held = self.__dict__.get("_recbole_hdccf_csr_graph")
        if held is None or held[0] is not adjacency:  # built once per adjacency tensor
            held = (adjacency, csr_graph(adjacency))
            self.__dict__["_recbole_hdccf_csr_graph"] = held
        all_embeddings = self.get_ego_embeddings()
        embeddings_list = [all_embeddings]
        for _ in range(self.n_layers):
            all_embeddings = propagate(held[1], all_embeddings)
            embeddings_list.append(all_embeddings)
        mean = torch.mean(torch.stack(embeddings_list, dim=1), dim=1)
        user_all_embeddings, item_all_embeddings = torch.split(mean, [self.n_users, self.n_items])
        return user_all_embeddings, item_all_embeddings

    return forward


@_once("csr_graph_propagation")
def _install_csr_graph_propagation():
    from recbole.model.general_recommender import LightGCN

    LightGCN.__init__ = _reading_graph_propagation(LightGCN.__init__)
    LightGCN.forward = _propagating_in_csr(LightGCN.forward)


SHIMS = (
    _install_trusted_checkpoint_load,
    _install_dok_update,
    _install_unique_checkpoint_names,
    _install_atomic_checkpoints,
    _install_cpu_distributed,
    _install_no_dataset_download,
    _install_ddp_cpu_device_ids,
    _install_race_free_dirs,
    _install_propagate_once_per_evaluation,
    _install_csr_graph_propagation,
)


def apply() -> None:
    """Install every shim (idempotent)."""
    for install in SHIMS:
        install()
