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


def _variant(config_dict, base_model, **overrides):
    _, model, _ = _model_and_loader(config_dict, train_batch_size=24, **overrides)
    model.load_state_dict(base_model.state_dict())
    return model


@pytest.mark.parametrize("side", ["items", "users"])
def test_ui_negatives_keeps_one_side_of_eq1(base, side):
    """ui_negatives=items (users): eq. 1/14 with F^i (F^u) alone, on the same scores and
    weights, in the debiased, biased and BPR+ forms; the auxiliary losses are unchanged."""
    config_dict, model, batch = base
    g = _logits(model, batch)
    p = batch[NEIGHBOR_ITEMS].shape[1]
    item_w, user_w = model._pool_log_weights(own_pool(batch[NEIGHBOR_ITEMS], batch[NEIGHBOR_USERS]))
    grid, observed, w, w_pos = (
        ("item_grid", "item_observed", item_w, model.settings.w_i_pos)
        if side == "items"
        else ("user_grid", "user_observed", user_w, model.settings.w_u_pos)
    )
    full_ui, full_uu, full_ii = model.calculate_loss(batch)

    ui, uu, ii = _variant(config_dict, model, ui_negatives=side).calculate_loss(batch)
    log_f, _ = losses.debiased_log_negative_score(
        g[grid],
        g["pool"],
        g[observed],
        torch.cat([g["pos"].unsqueeze(1), HDCCF._own_block(g[grid], g["own"], p)], dim=1),
        w_pos,
        model.tau,
        log_weights=w,
    )
    torch.testing.assert_close(ui, losses.contrastive_loss(g["pos"], log_f))
    assert ui < full_ui  # one negative term fewer in the denominator
    torch.testing.assert_close((uu, ii), (full_uu, full_ii))

    ui, _, _ = _variant(config_dict, model, ui_negatives=side, debias=False).calculate_loss(batch)
    expected = losses.contrastive_loss(
        g["pos"], losses.biased_log_negative_score(g[grid], g["pool"], w)
    )
    torch.testing.assert_close(ui, expected)

    loss = _variant(config_dict, model, ui_negatives=side, ablation="bpr_plus").calculate_loss(
        batch
    )
    torch.testing.assert_close(loss, losses.bpr_loss(g["pos"], g[grid], g["pool"], w))


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
    dot = (unmodulated.user_embedding(users) * unmodulated.item_embedding(items)).sum(-1)
    assert torch.allclose(unmodulated.forward(users, items), dot, atol=1e-6)
    cosine = torch.nn.functional.cosine_similarity(
        unmodulated.user_embedding(users), unmodulated.item_embedding(items)
    )
    normalized = _variant(config_dict, unmodulated, ablation="unmodulated", normalize=True)
    assert torch.allclose(normalized.forward(users, items), cosine, atol=1e-6)


def test_every_ablation_name_is_covered_and_contradictions_are_rejected(small_config_dict):
    assert set(ABLATIONS) == {"wo_u", "wo_i", "wo_ui", "bpr_plus", "biased", "unmodulated"}
    with pytest.raises(ConfigError, match="ablation='wo_u' sets lambda_u"):
        _model_and_loader(small_config_dict, ablation="wo_u", lambda_u=0.5)
    with pytest.raises(ConfigError, match="ablation"):
        _model_and_loader(small_config_dict, ablation="no_such_thing")


def test_scores_are_bounded_and_gradients_reach_every_parameter(base):
    config_dict, model, batch = base
    g = _logits(_variant(config_dict, model, normalize=True, tau=0.2), batch)
    assert not torch.allclose(g["pos"], _logits(model, batch)["pos"])  # the default is unbounded
    for key in ("pos", "item_grid", "user_grid", "uu", "ii"):
        assert (g[key].abs() <= 1 / 0.2 + 1e-5).all()
    loss = sum(model.calculate_loss(batch))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_unnormalized_bounds_hold_and_feed_the_debiased_clamp(small_config_dict, monkeypatch):
    """normalize=False: each row's bound B covers |f| of its positive and of every pool candidate
    (scaled embeddings, so B >> 1), and the debiased loss receives exactly these bounds."""
    config, model, loader = _model_and_loader(
        small_config_dict, train_batch_size=24, normalize=False
    )
    with torch.no_grad():
        model.user_embedding.weight.mul_(7.0)
        model.item_embedding.weight.mul_(3.0)
    loader.set_epoch(0)
    batch = next(iter(loader))
    g = _logits(model, batch)
    tau = model.tau
    item_bound, user_bound = g["item_bound"], g["user_bound"]
    assert not item_bound.requires_grad and (item_bound > 1).all()
    assert (g["item_grid"].abs() * tau <= item_bound[:, None] + 1e-5).all()
    assert (g["user_grid"].abs() * tau <= user_bound[:, None] + 1e-5).all()
    assert (g["pos"].abs() * tau <= torch.minimum(item_bound, user_bound) + 1e-5).all()
    # the bounds are tight up to the modulation: B is the product of the largest norms
    p_norm = model.user_embedding(batch["user_id"]).norm(dim=-1)
    items = torch.cat([batch["item_id"], batch[NEIGHBOR_ITEMS].reshape(-1)])
    expected = p_norm * model.item_embedding(items).norm(dim=-1).max()
    torch.testing.assert_close(item_bound, expected.detach())

    seen = []
    original = losses.debiased_log_negative_score

    def spy(*args, score_bound=1.0, **kwargs):
        seen.append(score_bound)
        return original(*args, score_bound=score_bound, **kwargs)

    monkeypatch.setattr(losses, "debiased_log_negative_score", spy)
    loss = sum(model.calculate_loss(batch))
    assert torch.isfinite(loss)
    torch.testing.assert_close(seen[0], user_bound)  # the user side first, as in eq. (1)
    torch.testing.assert_close(seen[1], item_bound)


def test_uniform_negatives_join_every_rows_pool_with_mixture_weights(
    small_config_dict, monkeypatch
):
    """uniform_negatives=K: K extra items and users, a negative of every row (never one of its
    own neighbours), masked when observed, weighted by the mixture's inverse density."""
    k = 7
    config, model, loader = _model_and_loader(
        small_config_dict, train_batch_size=24, uniform_negatives=k
    )
    loader.set_epoch(0)
    batch = next(iter(loader))
    seen = {}
    original = model.batch_logits

    def spy(*args, pool=None, **kwargs):
        seen["pool"] = pool
        seen["g"] = original(*args, pool=pool, **kwargs)
        return seen["g"]

    monkeypatch.setattr(model, "batch_logits", spy)
    torch.manual_seed(3)
    loss = sum(model.calculate_loss(batch))
    pool, g = seen["pool"], seen["g"]
    n = batch[NEIGHBOR_ITEMS].numel()
    assert pool.items.shape[0] == n + k and pool.users.shape[0] == n + k
    assert (pool.owner[n:] == -1).all() and g["pool"][:, n:].all()
    assert ((pool.items[n:] >= 1) & (pool.items[n:] < model.n_items)).all()
    observed = model.train_graph.contains(
        batch["user_id"].unsqueeze(1).expand(-1, k), pool.items[n:].expand(24, -1)
    )
    assert torch.equal(g["item_observed"][:, n:], observed)
    item_w, _ = model._pool_log_weights(pool)
    degree = model._item_degree[pool.items]
    expected = -torch.log(n * degree / model._item_degree[1:].sum() + k / (model.n_items - 1))
    torch.testing.assert_close(item_w, expected)
    assert torch.isfinite(loss)
    loss.backward()

    # K = 0 keeps the pool and the loss of the batch's own neighbours
    config0, model0, _ = _model_and_loader(small_config_dict, train_batch_size=24)
    model0.load_state_dict(model.state_dict())
    pool0 = own_pool(batch[NEIGHBOR_ITEMS], batch[NEIGHBOR_USERS])
    assert model0._with_uniform_negatives(pool0) is pool0


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
