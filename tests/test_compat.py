"""Each compatibility shim of recbole_hdccf/compat.py: the broken behaviour it fixes (through the
original function the shim wraps, or the RecBole / torch / scipy fact directly) and the fixed one."""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from model_mixin import build_run, fit_run
from recbole.config import Config
from recbole.data import create_dataset
from recbole.trainer import Trainer
from recbole.utils import init_seed

import recbole_hdccf  # noqa: F401  (applies the shims)
from recbole_hdccf import compat
from recbole_hdccf.compat import DatasetNotFoundError


def original(function):
    """The RecBole function a shim wrapped."""
    return getattr(function, "__recbole_hdccf_wrapped__", None) or function.__wrapped__


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging (e.g. on RecBole's interactive download prompt)."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_python(code: str, env: dict, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json_line(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def bpr(small_config_dict):
    """BPR trained one epoch on the tiny data; its best checkpoint is on disk."""
    return fit_run(build_run("BPR", {**small_config_dict, "epochs": 1}))


def test_every_shim_is_applied_once():
    compat.apply()  # idempotent: a second call wraps nothing twice
    wrapped = Trainer.evaluate.__recbole_hdccf_wrapped__
    assert not hasattr(wrapped, "__recbole_hdccf_wrapped__")
    assert Trainer.__init__.__wrapped__.__qualname__ == "Trainer.__init__"
    assert len(compat._APPLIED) == len(compat.SHIMS)
    listed = {"trusted_checkpoint_load", "dok_update", "unique_checkpoint_names"}
    listed |= {"atomic_checkpoints", "cpu_distributed", "no_dataset_download"}
    listed |= {"propagate_once_per_evaluation", "csr_graph_propagation"}
    assert listed <= compat._APPLIED


# ------------------------------------------------------------------ torch >= 2.6: weights_only
def test_plain_torch_load_rejects_recbole_checkpoints(bpr):
    """The fact: torch.load's weights_only default cannot read a checkpoint that pickles Config."""
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        torch.load(bpr.trainer.saved_model_file)


def test_evaluate_loads_best_checkpoint(bpr):
    plain_load = torch.load
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        original(Trainer.evaluate)(bpr.trainer, bpr.test_data, load_best_model=True)
    result = bpr.trainer.evaluate(bpr.test_data, load_best_model=True)
    assert result == bpr.test_result
    assert torch.load is plain_load  # the trusted load is undone after the call
    with pytest.raises(pickle.UnpicklingError):
        torch.load(bpr.trainer.saved_model_file)


def test_resume_checkpoint(bpr, small_config_dict):
    fresh = build_run("BPR", {**small_config_dict, "epochs": 1})
    checkpoint = bpr.trainer.saved_model_file
    with pytest.raises(pickle.UnpicklingError, match="weights_only"):
        original(Trainer.resume_checkpoint)(fresh.trainer, checkpoint)
    fresh.trainer.resume_checkpoint(checkpoint)
    assert fresh.trainer.start_epoch == 1  # saved after epoch 0
    for key, value in bpr.model.state_dict().items():
        assert torch.equal(fresh.model.state_dict()[key], value), key


LOAD_AND_EVALUATE = """
    import functools, json, sys
    import torch
    {imports}
    from recbole.quick_start import load_data_and_model
    from recbole.utils import get_trainer

    def attempt(path):
        try:
            config, model, dataset, train, valid, test = load_data_and_model(path)
            trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
            return dict(trainer.evaluate(test, load_best_model=False))
        except Exception as error:
            return f"{{type(error).__name__}}: {{error}}"

    out = {{path: attempt(path) for path in sys.argv[1:]}}
    if {retry_trusted}:  # torch.load(weights_only=False), as RecBole < torch 2.6 had it
        torch.load = functools.partial(torch.load, weights_only=False)
        out["trusted"] = attempt(sys.argv[1])
    print(json.dumps(out))
"""


def test_load_data_and_model_in_a_fresh_process(bpr, small_config_dict, subprocess_env):
    """Fresh process: weights_only, and the numpy aliases RecBole sets only in Config.__init__."""
    hdccf = fit_run(build_run("HDCCF", {**small_config_dict, "epochs": 1}))
    paths = [bpr.trainer.saved_model_file, hdccf.trainer.saved_model_file]

    def load_in_child(imports, retry_trusted, args):
        code = textwrap.dedent(LOAD_AND_EVALUATE).format(
            imports=imports, retry_trusted=retry_trusted
        )
        out = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return last_json_line(out.stdout)

    # Without the plugin: weights_only refuses the checkpoint; once it loads, NDCG needs np.float,
    # which RecBole sets only in Config.__init__ (unpickling a Config skips it).
    broken = load_in_child("", True, paths[:1])
    assert "UnpicklingError" in broken[paths[0]] and "weights_only" in broken[paths[0]]
    assert "has no attribute 'float'" in broken["trusted"], broken

    # With the plugin imported: both load and reproduce the in-process test numbers.
    fixed = load_in_child("import recbole_hdccf", False, paths)
    assert fixed[paths[0]] == dict(bpr.test_result), fixed
    assert fixed[paths[1]] == dict(hdccf.test_result), fixed


def test_numpy_aliases_are_the_numpy_1_types():
    compat.set_numpy_aliases()
    assert np.float is np.float_ and np.int is np.int_ and np.bool is np.bool_


# ------------------------------------------------------------------ scipy >= 1.12: dok_matrix._update
def test_scipy_dok_matrix_lacks_update(subprocess_env):
    """The fact, in a process without the plugin."""
    code = """
        import scipy.sparse as sp
        print(hasattr(sp.dok_matrix, "_update"))
    """
    out = run_python(code, subprocess_env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert sp.dok_matrix._update is compat._dok_update


def test_dok_update_inserts_entries():
    matrix = sp.dok_matrix((3, 4), dtype=np.float32)
    matrix[0, 0] = 5.0
    matrix._update({(1, 2): 1.0, (2, 3): 2.0, (0, 0): 7.0})
    expected = np.zeros((3, 4), dtype=np.float32)
    expected[1, 2], expected[2, 3], expected[0, 0] = 1.0, 2.0, 7.0
    assert matrix.nnz == 3
    np.testing.assert_array_equal(matrix.toarray(), expected)
    # and arithmetic on the result sees the entries (what LightGCN does next)
    np.testing.assert_array_equal(np.asarray((matrix > 0).sum(axis=1)).ravel(), [1, 1, 1])


def test_lightgcn_builds_its_normalised_adjacency(small_config_dict):
    run = build_run("LightGCN", small_config_dict)
    model = run.model
    inter = model.interaction_matrix
    n = model.n_users + model.n_items
    adjacency = np.zeros((n, n))
    adjacency[inter.row, inter.col + model.n_users] = 1
    adjacency[inter.col + model.n_users, inter.row] = 1
    degree = adjacency.sum(axis=1) + 1e-7
    expected = adjacency / np.sqrt(degree)[:, None] / np.sqrt(degree)[None, :]
    actual = model.norm_adj_matrix.to_dense().cpu().numpy()
    assert actual.shape == (n, n)
    assert model.norm_adj_matrix._nnz() == 2 * inter.nnz > 0
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ propagation once per evaluation
def _sampled_graph_run(small_config_dict, model_name):
    """A graph model on the tiny data under a sampled evaluation of several batches."""
    eval_args = {**small_config_dict["eval_args"], "mode": "uni9"}
    config = {**small_config_dict, "eval_args": eval_args, "eval_batch_size": 50}
    run = build_run(model_name, config)
    run.model.eval()
    return run


def _counting_forward(monkeypatch, model_class) -> list:
    calls = []
    forward = model_class.forward
    monkeypatch.setattr(model_class, "forward", lambda self: calls.append(1) or forward(self))
    return calls


@pytest.mark.parametrize("model_name", ["LightGCN", "NGCF"])
def test_sampled_evaluation_propagates_once_with_recboles_scores(
    small_config_dict, monkeypatch, model_name
):
    run = _sampled_graph_run(small_config_dict, model_name)
    model, model_class = run.model, type(run.model)
    recbole_predict = original(model_class.predict)
    batches = [batch[0] for batch in run.valid_data]
    assert len(batches) >= 3
    calls = _counting_forward(monkeypatch, model_class)
    with torch.no_grad():
        expected = [recbole_predict(model, batch) for batch in batches]
        assert len(calls) == len(batches)  # RecBole: a whole propagation per batch
        calls.clear()
        scores = [model.predict(batch) for batch in batches]
        assert len(calls) == 1
        assert all(torch.equal(a, b) for a, b in zip(scores, expected, strict=True))
        # A changed parameter (an optimizer step) and a loaded state each start a new one.
        saved = {key: value.clone() for key, value in model.state_dict().items()}
        next(model.parameters()).add_(0.25)
        changed = model.predict(batches[0])
        assert len(calls) == 2
        assert torch.equal(changed, recbole_predict(model, batches[0]))
        assert not torch.equal(changed, expected[0])
        model.load_state_dict(saved)
        assert torch.equal(model.predict(batches[0]), expected[0])
        assert len(calls) == 4  # RecBole's own predict above, then the loaded state's
        # New data behind a parameter (``p.data = ...``, no in-place op) starts one too.
        parameter = next(model.parameters())
        parameter.data = parameter.data * 2
        assert torch.equal(model.predict(batches[0]), recbole_predict(model, batches[0]))
        assert len(calls) == 6
    # Training (train mode, gradients): RecBole's predict untouched.
    model.train()
    calls.clear()
    model.predict(batches[0])
    model.predict(batches[1])
    assert len(calls) == 2
    assert "forward" not in model.__dict__


def test_graph_model_evaluations_agree_with_recboles(small_config_dict, monkeypatch):
    from recbole.model.general_recommender import LightGCN

    run = _sampled_graph_run(small_config_dict, "LightGCN")
    run.trainer._train_epoch(run.train_data, 0, show_progress=False)
    held = run.trainer.evaluate(run.valid_data, load_best_model=False)
    monkeypatch.setattr(LightGCN, "predict", original(LightGCN.predict))
    assert run.trainer.evaluate(run.valid_data, load_best_model=False) == held


# ------------------------------------------------------------------ LightGCN's propagation in CSR
def _lightgcn(small_config_dict, **settings):
    run = build_run("LightGCN", {**small_config_dict, **settings})
    return run, run.model


def test_lightgcn_propagates_in_csr_as_recbole_does_to_rounding(small_config_dict):
    from recbole.model.general_recommender import LightGCN

    _, model = _lightgcn(small_config_dict)
    recbole_forward = original(LightGCN.forward)
    dim = model.latent_dim
    weights = [torch.randn(model.n_users, dim), torch.randn(model.n_items, dim)]

    def loss_and_grads(forward):
        model.zero_grad()
        users, items = forward(model)
        loss = (users * weights[0]).sum() + (items * weights[1]).sum()
        loss.backward()
        return (users, items), [p.grad.clone() for p in model.parameters()]

    (users, items), grads = loss_and_grads(LightGCN.forward)
    (users_ref, items_ref), grads_ref = loss_and_grads(recbole_forward)
    torch.testing.assert_close(users, users_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(items, items_ref, rtol=1e-5, atol=1e-6)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-6)
    assert not torch.equal(users, model.get_ego_embeddings()[: model.n_users])  # it propagated
    # built once, for the adjacency the model holds (symmetric: one CSR serves the gradient)
    adjacency, graph = model.__dict__["_recbole_hdccf_csr_graph"]
    assert adjacency is model.norm_adj_matrix and graph.transpose is graph.matrix
    model.forward()
    assert model.__dict__["_recbole_hdccf_csr_graph"][1] is graph


def test_graph_propagation_recbole_is_recboles_own_bit_for_bit(small_config_dict, monkeypatch):
    from recbole.model.general_recommender import LightGCN

    run, model = _lightgcn(small_config_dict, graph_propagation="recbole")
    csr_run, csr_model = _lightgcn(small_config_dict)
    assert torch.equal(model.get_ego_embeddings(), csr_model.get_ego_embeddings())  # same init
    with torch.no_grad():
        users, items = model.forward()
        users_ref, items_ref = original(LightGCN.forward)(model)
    assert torch.equal(users, users_ref) and torch.equal(items, items_ref)
    assert "_recbole_hdccf_csr_graph" not in model.__dict__
    # an epoch each from the same start: the losses agree to rounding, not bit for bit
    losses = []
    for one in (run, csr_run):
        init_seed(2020, True)  # the same negatives and batch order for both
        losses.append(one.trainer._train_epoch(one.train_data, 0, show_progress=False))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_an_unknown_graph_propagation_is_refused_with_the_choices(small_config_dict):
    with pytest.raises(
        ValueError, match=r"graph_propagation: 'fast' is not one of .*'csr'.*'recbole'"
    ):
        _lightgcn(small_config_dict, graph_propagation="fast")


def test_graph_propagation_is_a_lightgcn_setting_and_no_other_models():
    from recbole_hdccf.registry import UnknownSettingError, check_setting_names

    check_setting_names("LightGCN", ["graph_propagation"])  # the plugin's LightGCN.yaml lists it
    with pytest.raises(UnknownSettingError, match="graph_propagation"):
        check_setting_names("BPR", ["graph_propagation"])


# ------------------------------------------------------------------ unique checkpoint names
def test_trainers_created_in_the_same_second_get_different_files(small_config_dict, monkeypatch):
    import recbole.trainer.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "get_local_time", lambda: "Jan-01-2026_00-00-00")
    run = build_run("BPR", small_config_dict)

    def bare_trainer():
        trainer = Trainer.__new__(Trainer)
        original(Trainer.__init__)(trainer, run.config, run.model)
        return trainer.saved_model_file

    assert bare_trainer() == bare_trainer()  # RecBole: one-second resolution, same name
    first = Trainer(run.config, run.model).saved_model_file
    second = Trainer(run.config, run.model).saved_model_file
    assert first != second
    for name in (first, second):
        assert Path(name).parent == Path(small_config_dict["checkpoint_dir"])
        assert Path(name).name.startswith("BPR-Jan-01-2026_00-00-00-")
        assert name.endswith(".pth")
    # HDCCF's trainer inherits the fix
    hdccf = build_run("HDCCF", small_config_dict)
    names = {type(hdccf.trainer)(hdccf.config, hdccf.model).saved_model_file for _ in range(2)}
    assert len(names) == 2


# ------------------------------------------------------------------ atomic checkpoint writes
def _tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_checkpoint_write_is_atomic(small_config_dict, monkeypatch):
    run = build_run("BPR", small_config_dict)
    trainer, folder = run.trainer, Path(small_config_dict["checkpoint_dir"])
    trainer._save_checkpoint(0)
    final = Path(trainer.saved_model_file)
    assert final.is_file()
    assert _tmp_files(folder) == []
    before = _digest(final)

    real_save = torch.save

    def crash(obj, f, *args, **kwargs):  # the process dies half way through the write
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 truncated")
        raise RuntimeError("simulated crash inside torch.save")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer._save_checkpoint(1)
    assert _digest(final) == before  # the previous checkpoint is intact ...
    assert _tmp_files(folder) == []  # ... and no temporary file is left behind
    monkeypatch.setattr(torch, "save", real_save)
    with compat.trusted_torch_load():
        assert torch.load(final)["epoch"] == 0

    # RecBole's own _save_checkpoint writes in place: the same crash destroys the checkpoint
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        original(Trainer._save_checkpoint)(trainer, 1)
    assert _digest(final) != before


def test_checkpoint_write_replaces_the_previous_one(small_config_dict):
    run = build_run("BPR", small_config_dict)
    run.trainer._save_checkpoint(0)
    run.trainer._save_checkpoint(3)
    with compat.trusted_torch_load():
        assert torch.load(run.trainer.saved_model_file)["epoch"] == 3
    assert _tmp_files(Path(small_config_dict["checkpoint_dir"])) == []


# ------------------------------------------------------------------ no download of missing datasets
@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network or to prompt the user fails the test at once."""

    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to use the network or to prompt")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(builtins, "input", refuse)


RECBOLE_MISSING_DATASET = """
    import socket, urllib.request
    def refuse(*args, **kwargs):
        raise SystemExit("NETWORK ATTEMPT")
    urllib.request.urlopen = refuse
    socket.socket.connect = refuse
    from recbole.config import Config
    from recbole.data import create_dataset
    config = Config(model="BPR", dataset="ml-1m", config_dict={{"data_path": {data_path!r}}})
    create_dataset(config)
"""


def test_recbole_downloads_a_missing_dataset(tmp_path, subprocess_env):
    """The fact: without the plugin a missing folder means a download (from dead links)."""
    code = RECBOLE_MISSING_DATASET.format(data_path=str(tmp_path / "data"))
    out = run_python(code, subprocess_env, timeout=120)
    assert "NETWORK ATTEMPT" in out.stderr, out.stderr[-3000:]


@pytest.mark.parametrize("name", ["ml-1m", "no-such-data"])
def test_missing_dataset_folder_raises_clear_error(name, tmp_path, no_network):
    data_path = tmp_path / "data"
    config = Config(model="BPR", dataset=name, config_dict={"data_path": str(data_path)})
    with deadline(60), pytest.raises(DatasetNotFoundError) as error:
        create_dataset(config)
    message = str(error.value)
    assert str(data_path / name) in message
    assert "#2218" in message
    assert "recbole_hdccf.prepare" in message
    assert "folder not found" in message
    assert not (data_path / name).exists()  # nothing was created either


def test_dataset_folder_without_inter_file_raises_clear_error(tmp_path, no_network):
    folder = tmp_path / "data" / "mine"
    folder.mkdir(parents=True)
    (folder / "mine.item").write_text("item_id:token\n1\n")
    config = Config(model="BPR", dataset="mine", config_dict={"data_path": str(tmp_path / "data")})
    with deadline(60), pytest.raises(DatasetNotFoundError) as error:
        create_dataset(config)
    message = str(error.value)
    assert "no mine.inter" in message
    assert str(folder) in message and "#2218" in message and "recbole_hdccf.prepare" in message
    assert isinstance(error.value, FileNotFoundError)


def test_existing_dataset_still_loads(small_config_dict, no_network):
    config = Config(model="BPR", dataset="tiny", config_dict=small_config_dict)
    with deadline(60):
        dataset = create_dataset(config)
    assert dataset.inter_num > 0


# ------------------------------------------------------------------ race-free ensure_dir
def test_ensure_dir_survives_a_concurrent_mkdir(tmp_path, monkeypatch):
    """Two ranks: both see no ./log/<model>, one creates it first; the other must not die."""
    import recbole.utils.logger as logger_module
    import recbole.utils.utils as utils

    folder = tmp_path / "log" / "BPR"
    folder.mkdir(parents=True)
    real_exists = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: False if Path(p) == folder else real_exists(p))
    with pytest.raises(FileExistsError):
        original(utils.ensure_dir)(str(folder))  # RecBole: check, then create
    utils.ensure_dir(str(folder))
    assert logger_module.ensure_dir is utils.ensure_dir  # the name init_logger calls


# ------------------------------------------------------------------ distributed training on CPU
DIST = {"local_rank": 0, "world_size": 1, "nproc": 1, "offset": 0, "ip": "127.0.0.1"}


def test_distributed_without_cuda_uses_gloo(small_config_dict, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kw: calls.append(kw))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append({"cuda": device}))
    config = Config(
        model="BPR", dataset="tiny", config_dict={**small_config_dict, **DIST, "port": "29511"}
    )
    assert calls == [
        {"backend": "gloo", "rank": 0, "world_size": 1, "init_method": "tcp://127.0.0.1:29511"}
    ]
    assert config["device"] == torch.device("cpu")
    assert config["single_spec"] is False

    calls.clear()  # RecBole's own branch: NCCL and a CUDA device, whatever the machine has
    original(Config._init_device)(config)
    assert calls[0]["backend"] == "nccl"
    assert {"cuda": 0} in calls
    assert config["device"] == torch.device("cuda", 0)


def test_ddp_on_cpu_gets_no_device_ids(monkeypatch, tmp_path):
    import recbole.trainer.trainer as trainer_module
    from torch.nn.parallel import DistributedDataParallel

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    torch.distributed.init_process_group(
        backend="gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        # the fact: torch rejects device_ids for a CPU module, as RecBole passes them
        with pytest.raises(ValueError, match="device_ids"):
            DistributedDataParallel(torch.nn.Linear(2, 2), device_ids=[0])
        wrapped = trainer_module.DistributedDataParallel(torch.nn.Linear(2, 2), device_ids=[0])
        assert isinstance(wrapped, DistributedDataParallel)
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_training(small_config_dict):
    """End to end: RecBole's distributed path on two CPU processes (gloo)."""
    from recbole_hdccf.quick_start import run

    result = run(
        "BPR",
        "tiny",
        config_dict={**small_config_dict, "epochs": 1},
        nproc=2,
        ip="127.0.0.1",
        port=str(_free_port()),
    )
    assert result is not None and set(result["test_result"]) == {"hit@10", "ndcg@10"}
