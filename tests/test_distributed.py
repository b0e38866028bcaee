"""Multi-process training of HDCCF: the sharding of the neighbour dataloader, the loss of one
process's part of a global batch, and two CPU processes (gloo) end to end.

Sharding (recbole_hdccf/sampler.py): epoch ``e``'s permutation of the training rows, drawn from
``(seed, e)``, is cut into global batches of ``train_batch_size`` rows and each global batch is
split among the ``W`` processes with ``array_split``. So every row is used exactly once per epoch
and every process has the same number of batches (DDP's all-reduce must not wait for a batch that
one process lacks).
"""

from __future__ import annotations

import dataclasses
import socket

import numpy as np
import pytest
import torch
from model_mixin import build_run

import recbole_hdccf  # noqa: F401
from recbole_hdccf.sampler import (
    NEIGHBOR_ITEMS,
    NEIGHBOR_USERS,
    SHARD_WEIGHT,
    NeighborTrainDataLoader,
    epoch_permutation,
    shard_batches,
)
from recbole_hdccf.settings import ConfigError


# ------------------------------------------------------------------ the sharding itself
@pytest.mark.parametrize("n", [1, 3, 7, 64, 101, 257])
@pytest.mark.parametrize("batch_size", [2, 5, 64])
def test_each_row_once_per_epoch_and_equal_batch_counts(n, batch_size):
    for world_size in range(1, 5):
        for epoch in range(3):
            parts = [
                shard_batches(n, batch_size, world_size, rank, seed=7, epoch=epoch)
                for rank in range(world_size)
            ]
            counts = {len(p) for p in parts}
            assert counts == {-(-n // batch_size)}, "every process has the same number of batches"
            rows = np.concatenate([b.rows for p in parts for b in p])
            assert np.array_equal(np.sort(rows), np.arange(n)), "each row exactly once"
            for batches in zip(*parts, strict=True):
                index = batches[0].index
                assert all(np.array_equal(b.index, index) for b in batches)  # same global batch
                joined = np.concatenate([b.rows for b in batches])
                assert np.array_equal(joined, index)  # the parts, in rank order, are the batch
                sizes = [len(b.rows) for b in batches]
                assert max(sizes) - min(sizes) <= 1
                expected = [len(a) for a in np.array_split(index, world_size)]
                assert sizes == expected


def test_permutation_is_seeded_by_seed_and_epoch():
    first = epoch_permutation(100, seed=3, epoch=0)
    assert np.array_equal(first, epoch_permutation(100, seed=3, epoch=0))
    assert not np.array_equal(first, epoch_permutation(100, seed=3, epoch=1))
    assert not np.array_equal(first, epoch_permutation(100, seed=4, epoch=0))
    assert np.array_equal(epoch_permutation(100, 3, 0, shuffle=False), np.arange(100))


def test_parts_can_be_empty():
    """3 rows in batches of 2 over 4 processes: the last global batch has one row."""
    parts = [shard_batches(3, 2, 4, rank, seed=0, epoch=0) for rank in range(4)]
    assert [[len(b.rows) for b in p] for p in parts] == [[1, 1], [1, 0], [0, 0], [0, 0]]


# ------------------------------------------------------------------ the loader's parts
def _loader(run, world_size=None, rank=None):
    return NeighborTrainDataLoader(
        run.config,
        run.train_data._dataset,
        run.train_data._sampler,
        run.model.train_graph,
        shuffle=True,
        world_size=world_size,
        rank=rank,
    )


def _batches(loader, epoch=0):
    loader.set_epoch(epoch)
    return list(loader)


@pytest.fixture
def hdccf_run(small_config_dict):
    return build_run(
        "HDCCF", {**small_config_dict, "train_batch_size": 25, "gather_negatives": True}
    )


def test_process_parts_are_the_single_process_batch(hdccf_run):
    """Each process's batch holds the global batch (rows and neighbour draws) of one process."""
    single = _batches(_loader(hdccf_run))
    ranks = [_batches(_loader(hdccf_run, 3, rank)) for rank in range(3)]
    assert all(len(batches) == len(single) for batches in ranks)
    for step, batch in enumerate(single):
        assert SHARD_WEIGHT not in batch.interaction
        weights = []
        for batches in ranks:
            part = batches[step]
            for key in ("user_id", "item_id", NEIGHBOR_ITEMS, NEIGHBOR_USERS):
                assert torch.equal(part[key], batch[key])
            weights.append(part[SHARD_WEIGHT])
        owners = torch.stack(weights) > 0
        assert torch.equal(owners.sum(0), torch.ones(len(batch), dtype=torch.long))
        total = torch.stack(weights).sum()
        assert total.item() == pytest.approx(3.0)  # W m_r / G summed over ranks = W


def _gradients(model, batch):
    model.zero_grad()
    loss = model.calculate_loss(batch)
    sum(loss if isinstance(loss, tuple) else [loss]).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("world_size", [2, 3])
def test_gathered_parts_average_to_the_single_process_gradient(hdccf_run, world_size):
    """With gather_negatives, DDP's average of the processes' gradients is the gradient of one
    process on the global batch (the same pool, and each part weighted by its share of rows)."""
    model = hdccf_run.model
    single = _batches(_loader(hdccf_run))[1]
    expected = _gradients(model, single)
    parts = [_batches(_loader(hdccf_run, world_size, r))[1] for r in range(world_size)]
    grads = [_gradients(model, part) for part in parts]
    for name, value in expected.items():
        average = sum(g[name] for g in grads) / world_size
        torch.testing.assert_close(average, value, rtol=1e-4, atol=1e-7, msg=name)


def test_without_gathering_each_process_contrasts_its_own_rows(small_config_dict):
    run = build_run("HDCCF", {**small_config_dict, "train_batch_size": 24})
    model = run.model
    part = _batches(_loader(run, 2, 0))[0]
    mine = part[SHARD_WEIGHT] > 0
    own = part[mine]
    own.interaction.pop(SHARD_WEIGHT)
    scale = part[SHARD_WEIGHT].sum()
    for got, alone in zip(model.calculate_loss(part), model.calculate_loss(own), strict=True):
        torch.testing.assert_close(got, alone * scale)


def test_empty_and_one_row_parts_touch_every_parameter(small_config_dict):
    """A process's part may be empty or hold one row: the loss is finite and every parameter
    gets a (finite) gradient, as DDP's reducer requires."""
    run = build_run("HDCCF", {**small_config_dict, "train_batch_size": 3, "gather_negatives": True})
    model = run.model
    seen = set()
    for gather in (True, False):
        model.settings = dataclasses.replace(model.settings, gather_negatives=gather)
        for rank in range(4):
            for batch in _batches(_loader(run, 4, rank))[:3]:
                m = int((batch[SHARD_WEIGHT] > 0).sum())
                seen.add(m)
                grads = _gradients(model, batch)
                assert set(grads) == {name for name, _ in model.named_parameters()}
                assert all(torch.isfinite(g).all() for g in grads.values())
                if m == 0:
                    assert all((g == 0).all() for g in grads.values())
    assert {0, 1} <= seen


def test_too_small_batches_for_the_processes_are_a_config_error(small_config_dict):
    from recbole_hdccf.quick_start import run

    with pytest.raises(ConfigError, match=r"train_batch_size=3: with 2 processes"):
        run("HDCCF", "tiny", config_dict={**small_config_dict, "train_batch_size": 3}, nproc=2)


# ------------------------------------------------------------------ compat fixes for many ranks
def test_log_folders_tolerate_ranks_creating_them_together(tmp_path, monkeypatch):
    """Two ranks both see './log/<model>' missing, both create it: RecBole's ensure_dir then
    raises FileExistsError in one of them; the plugin's does not."""
    import os

    import recbole.utils.logger as logger_module

    folder = tmp_path / "log" / "HDCCF"
    folder.mkdir(parents=True)
    monkeypatch.setattr(os.path, "exists", lambda path: False)  # the other rank was faster
    logger_module.ensure_dir(str(folder))
    with pytest.raises(FileExistsError):
        logger_module.ensure_dir.__wrapped__(str(folder))


def test_cpu_processes_share_the_cores(monkeypatch):
    from recbole_hdccf.compat import _share_cpu_threads

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _share_cpu_threads(4)
    _share_cpu_threads(1)  # one process per node: left alone
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    _share_cpu_threads(4)  # the user's choice wins
    assert calls == [4]


# ------------------------------------------------------------------ two processes, end to end
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _metrics(result, key):
    return {k: float(v) for k, v in result[key].items()}


@pytest.fixture(scope="module")
def single_process(tiny_data_path, tmp_path_factory):
    from conftest import isolated, restored_root_logger, small_config

    from recbole_hdccf.quick_start import run

    folder = tmp_path_factory.mktemp("single")
    config = small_config(tiny_data_path, folder / "saved", epochs=1, learning_rate=0.01)
    with restored_root_logger(), isolated(folder):
        result = run("HDCCF", "tiny", config_dict=config)
    return result


@pytest.mark.parametrize("gather", [True, False])
def test_two_cpu_processes_match_one(single_process, small_config_dict, tmp_path, gather):
    """One epoch on 2 gloo processes against one process, same seed.

    Tolerances. gather_negatives=True: each process contrasts its rows against the whole global
    batch and its loss is weighted by its share of rows, so DDP's averaged gradient is the
    one-process gradient (up to float summation order, see the offline test above) and the models
    agree to float precision. What remains is how RecBole reports distributed metrics: each
    process rounds its metrics to 4 decimals and the weighted mean is rounded again, so the
    metrics may differ by 1e-4. gather_negatives=False: each process has half the negatives, so
    the objective itself differs; after one epoch the models have moved little from the shared
    initialisation (DDP starts every process from rank 0's parameters), and the metrics stay
    within 0.05 (two of the 40 tiny users) of the one-process run.
    """
    from recbole_hdccf.quick_start import run

    config = {**small_config_dict, "epochs": 1, "learning_rate": 0.01, "gather_negatives": gather}
    result = run(
        "HDCCF", "tiny", config_dict=config, nproc=2, ip="127.0.0.1", port=str(_free_port())
    )
    assert result is not None
    tolerance = 2e-4 if gather else 0.05
    for key in ("best_valid_result", "test_result"):
        two, one = _metrics(result, key), _metrics(single_process, key)
        assert two.keys() == one.keys() == {"hit@10", "ndcg@10"}
        for metric, value in one.items():
            assert two[metric] == pytest.approx(value, abs=tolerance), (key, metric, two, one)
    # both processes read the checkpoint rank 0 wrote; the end-of-epoch checkpoint exists too
    assert result["checkpoint"] and result["last_checkpoint"]
    if gather:
        from recbole_hdccf.compat import load_checkpoint

        two = load_checkpoint(result["checkpoint"])["state_dict"]
        one = load_checkpoint(single_process["checkpoint"])["state_dict"]
        for name, value in one.items():
            torch.testing.assert_close(two[name], value, rtol=1e-4, atol=1e-5, msg=name)
