"""HDCCF's neighbour sampler (sec. 2.2, Proposition 1) and its ablation switches (Fig. 2, 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import init_seed

import recbole_hdccf  # noqa: F401
from recbole_hdccf import losses
from recbole_hdccf.hdccf import HDCCF, own_pool
from recbole_hdccf.sampler import NEIGHBOR_ITEMS, NEIGHBOR_USERS, NeighborTrainDataLoader
from recbole_hdccf.settings import ABLATIONS, ConfigError


def _prepare(config_dict, **overrides):
    config = Config(model="HDCCF", dataset="tiny", config_dict={**config_dict, **overrides})
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    return config, train, valid, test


def _model_and_loader(config_dict, **overrides):
    config, train, _, _ = _prepare(config_dict, **overrides)
    model = HDCCF(config, train._dataset)
    loader = NeighborTrainDataLoader(
        config, train._dataset, train._sampler, model.train_graph, shuffle=True
    )
    return config, model, loader


def _pairs(dataset):
    inter = dataset.inter_feat
    return set(zip(inter["user_id"].tolist(), inter["item_id"].tolist(), strict=True))


# ------------------------------------------------------------------------------------ sampler
def test_sampler_draws_only_training_interactions(small_config_dict):
    config, train, valid, test = _prepare(small_config_dict, train_batch_size=16)
    train_pairs = _pairs(train._dataset)
    held_out = _pairs(valid._dataset) | _pairs(test._dataset)
    assert held_out and not (held_out & train_pairs)
    model = HDCCF(config, train._dataset)
    loader = NeighborTrainDataLoader(config, train._dataset, train._sampler, model.train_graph)
    seen_items, seen_users = set(), set()
    for epoch in range(5):
        loader.set_epoch(epoch)
        for batch in loader:
            users, items = batch["user_id"], batch["item_id"]
            for u, row in zip(users.tolist(), batch[NEIGHBOR_ITEMS].tolist(), strict=True):
                seen_items |= {(u, i) for i in row}
            for i, row in zip(items.tolist(), batch[NEIGHBOR_USERS].tolist(), strict=True):
                seen_users |= {(u, i) for u in row}
    assert seen_items <= train_pairs and seen_users <= train_pairs
    assert not (seen_items & held_out) and not (seen_users & held_out)


def test_pool_frequency_is_proportional_to_training_popularity(small_config_dict):
    """Proposition 1: per epoch an item enters the pool P |U_i| times in expectation."""
    p, epochs = 3, 60
    config, model, loader = _model_and_loader(
        small_config_dict, train_batch_size=32, neighbor_num=p
    )
    counts = np.zeros(model.n_items)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            np.add.at(counts, batch[NEIGHBOR_ITEMS].reshape(-1).numpy(), 1)
    popularity = model.train_graph.item_degree.astype(float)
    expected = epochs * p * popularity
    seen = popularity > 0
    assert counts[~seen].sum() == 0
    # Binomial-like counts: each standardized deviation is small, the fit is tight overall.
    z = (counts[seen] - expected[seen]) / np.sqrt(expected[seen])
    assert np.abs(z).max() < 5
    slope = (counts[seen] @ popularity[seen]) / (popularity[seen] @ popularity[seen])
    assert slope == pytest.approx(epochs * p, rel=0.02)


def test_sampler_streams_are_per_batch_and_worker_independent(small_config_dict):
    def collect(worker, epoch=0):
        _, _, loader = _model_and_loader(small_config_dict, train_batch_size=16, worker=worker)
        loader.set_epoch(epoch)
        return [
            (b["user_id"].tolist(), b[NEIGHBOR_ITEMS].tolist(), b[NEIGHBOR_USERS].tolist())
            for b in loader
        ]

    single = collect(worker=0)
    assert collect(worker=0) == single  # same seed, same epoch: the same draws
    assert collect(worker=2) == single  # worker processes draw exactly the same
    assert collect(worker=0, epoch=1) != single  # a new epoch draws anew
    # no two batches of an epoch share a stream: their uniform draws differ
    _, _, loader = _model_and_loader(small_config_dict, train_batch_size=16)
    first_draws = {tuple(loader.batch_rng(np.array([k])).random(4)) for k in range(50)}
    assert len(first_draws) == 50


def test_single_interaction_ids_sample_themselves():
    from recbole_hdccf.sampler import TrainGraph

    graph = TrainGraph(np.array([1, 1, 2]), np.array([3, 4, 3]), n_users=3, n_items=5)
    rng = np.random.default_rng(0)
    items, users = graph.sample(np.array([2, 1]), np.array([4, 3]), 4, rng)
    assert items[0].tolist() == [3, 3, 3, 3]  # user 2's only item
    assert users[0].tolist() == [1, 1, 1, 1]  # item 4's only user
    assert set(items[1]) <= {3, 4} and set(users[1]) <= {1, 2}
    with pytest.raises(ValueError, match="no training interaction"):
        graph.sample(np.array([0]), np.array([3]), 1, rng)


# ---------------------------------------------------------------------------------- ablations
@pytest.fixture
def base(small_config_dict):
    config, model, loader = _model_and_loader(small_config_dict, train_batch_size=24)
    loader.set_epoch(0)
    batch = next(iter(loader))
    return small_config_dict, model, batch


def _ablated(config_dict, base_model, ablation):
    config, model, _ = _model_and_loader(config_dict, train_batch_size=24, ablation=ablation)
    model.load_state_dict(base_model.state_dict(), strict=ablation != "unmodulated")
    return model


def _split(parts):
    return list(parts) if isinstance(parts, tuple) else [parts]


def test_default_loss_has_three_weighted_parts(base):
    _, model, batch = base
    ui, uu, ii = model.calculate_loss(batch)
    assert all(torch.isfinite(x) for x in (ui, uu, ii))
    assert model.settings.lambda_u > 0 and model.settings.lambda_i > 0


@pytest.mark.parametrize("ablation,kept", [("wo_u", (0, 2)), ("wo_i", (0, 1)), ("wo_ui", (0,))])
def test_dropping_auxiliary_losses_keeps_everything_else(base, ablation, kept):
    config_dict, model, batch = base
    full = _split(model.calculate_loss(batch))
    ablated = _split(_ablated(config_dict, model, ablation).calculate_loss(batch))
    assert len(ablated) == len(kept)
    for value, index in zip(ablated, kept, strict=True):
        assert torch.equal(value, full[index])


def _logits(model, batch):
    return model.batch_logits(
        batch["user_id"], batch["item_id"], batch[NEIGHBOR_ITEMS], batch[NEIGHBOR_USERS]
    )


def test_biased_ablation_is_eq1_and_eq5_on_the_same_scores(base):
    config_dict, model, batch = base
    ui, uu, ii = _ablated(config_dict, model, "biased").calculate_loss(batch)
    g = _logits(model, batch)
    p = batch[NEIGHBOR_ITEMS].shape[1]
    item_w, user_w = model._pool_log_weights(own_pool(batch[NEIGHBOR_ITEMS], batch[NEIGHBOR_USERS]))
    assert item_w is not None  # the default pool_weighting is covered
    expected_ui = losses.contrastive_loss(
        g["pos"],
        losses.biased_log_negative_score(g["user_grid"], g["pool"], user_w),
        losses.biased_log_negative_score(g["item_grid"], g["pool"], item_w),
    )
    assert torch.allclose(ui, expected_ui, rtol=1e-6)
    own = HDCCF._own_block
    users, items = batch["user_id"], batch["item_id"]
    expected_uu = losses.auxiliary_loss(
        own(g["uu"], g["own"], p),
        g["uu"],
        g["pool"],
        pos_mask=batch[NEIGHBOR_USERS] != users.unsqueeze(1),
        log_weights=user_w,
    )
    expected_ii = losses.auxiliary_loss(
        own(g["ii"], g["own"], p),
        g["ii"],
        g["pool"],
        pos_mask=batch[NEIGHBOR_ITEMS] != items.unsqueeze(1),
        log_weights=item_w,
    )
    assert torch.allclose(uu, model.settings.lambda_u * expected_uu, rtol=1e-6)
    assert torch.allclose(ii, model.settings.lambda_i * expected_ii, rtol=1e-6)
    # and it differs from the debiased default on this batch
    assert not torch.allclose(ui, model.calculate_loss(batch)[0])


def test_bpr_plus_is_bpr_on_the_same_scores_and_negatives(base):
    config_dict, model, batch = base
    loss = _ablated(config_dict, model, "bpr_plus").calculate_loss(batch)
    assert not isinstance(loss, tuple)
    g = _logits(model, batch)
    item_w, user_w = model._pool_log_weights(own_pool(batch[NEIGHBOR_ITEMS], batch[NEIGHBOR_USERS]))
    expected = 0.5 * (
        losses.bpr_loss(g["pos"], g["item_grid"], g["pool"], item_w)
        + losses.bpr_loss(g["pos"], g["user_grid"], g["pool"], user_w)
    )
    assert torch.allclose(loss, expected, rtol=1e-6)


class _AllOnes(torch.nn.Module):
    def forward(self, e_u, e_i):
        return torch.ones_like(e_u * e_i)


def test_unmodulated_is_the_same_loss_with_an_all_ones_modulating_vector(base):
    config_dict, model, batch = base
    unmodulated = _ablated(config_dict, model, "unmodulated")
    assert unmodulated.modulation is None
    assert not any("modulation" in name for name, _ in unmodulated.named_parameters())
    model.modulation = _AllOnes()
    for value, expected in zip(
        unmodulated.calculate_loss(batch), model.calculate_loss(batch), strict=True
    ):
        assert torch.allclose(value, expected, rtol=1e-5)
    users, items = batch["user_id"], batch["item_id"]
    cosine = torch.nn.functional.cosine_similarity(
        unmodulated.user_embedding(users), unmodulated.item_embedding(items)
    )
    assert torch.allclose(unmodulated.forward(users, items), cosine, atol=1e-6)


def test_every_ablation_name_is_covered_and_contradictions_are_rejected(small_config_dict):
    assert set(ABLATIONS) == {"wo_u", "wo_i", "wo_ui", "bpr_plus", "biased", "unmodulated"}
    with pytest.raises(ConfigError, match="ablation='wo_u' sets lambda_u"):
        _model_and_loader(small_config_dict, ablation="wo_u", lambda_u=0.5)
    with pytest.raises(ConfigError, match="ablation"):
        _model_and_loader(small_config_dict, ablation="no_such_thing")


def test_scores_are_bounded_and_gradients_reach_every_parameter(base):
    _, model, batch = base
    g = _logits(model, batch)
    tau = model.tau
    for key in ("pos", "item_grid", "user_grid", "uu", "ii"):
        assert (g[key].abs() <= 1 / tau + 1e-5).all()
    loss = sum(model.calculate_loss(batch))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_membership_lookup_agrees_between_dense_table_and_binary_search(monkeypatch):
    from recbole_hdccf.sampler import TrainGraph

    rng = np.random.default_rng(3)
    users, items = rng.integers(1, 30, 400), rng.integers(1, 50, 400)
    graph = TrainGraph(users, items, n_users=30, n_items=50)
    qu = torch.as_tensor(rng.integers(0, 30, (20, 25)))
    qi = torch.as_tensor(rng.integers(0, 50, (20, 25)))
    expected = torch.tensor(
        [
            [(u, i) in set(zip(users, items, strict=True)) for u, i in zip(ru, ri, strict=True)]
            for ru, ri in zip(qu.tolist(), qi.tolist(), strict=True)
        ]
    )
    assert torch.equal(graph.contains(qu, qi), expected)  # dense table
    monkeypatch.setattr(TrainGraph, "DENSE_LOOKUP_CELLS", 0)
    assert torch.equal(graph.contains(qu, qi), expected)  # binary search


def test_aux_mask_any_masks_negatives_sharing_a_neighbour(small_config_dict):
    _, model, loader = _model_and_loader(small_config_dict, train_batch_size=24, aux_mask="any")
    loader.set_epoch(0)
    batch = next(iter(loader))
    _, uu, ii = model.calculate_loss(batch)
    g = _logits(model, batch)
    pool = own_pool(batch[NEIGHBOR_ITEMS], batch[NEIGHBOR_USERS])
    item_w, user_w = model._pool_log_weights(pool)
    users, items = batch["user_id"], batch["item_id"]
    p = batch[NEIGHBOR_ITEMS].shape[1]
    graph = model.train_graph
    expected_uu = losses.auxiliary_loss(
        HDCCF._own_block(g["uu"], g["own"], p),
        g["uu"],
        g["pool"],
        graph.share_neighbor(users, pool.users, kind="user"),
        pos_mask=batch[NEIGHBOR_USERS] != users.unsqueeze(1),
        log_weights=user_w,
    )
    expected_ii = losses.auxiliary_loss(
        HDCCF._own_block(g["ii"], g["own"], p),
        g["ii"],
        g["pool"],
        graph.share_neighbor(items, pool.items, kind="item"),
        pos_mask=batch[NEIGHBOR_ITEMS] != items.unsqueeze(1),
        log_weights=item_w,
    )
    assert torch.allclose(uu, model.settings.lambda_u * expected_uu, rtol=1e-6)
    assert torch.allclose(ii, model.settings.lambda_i * expected_ii, rtol=1e-6)
