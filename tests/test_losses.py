"""HDCCF's losses against hand-computed values, gradient properties (eq. 4), Theorem 1 by Monte
Carlo, and the clamp of eq. 16."""

import math

import numpy as np
import pytest
import torch

from recbole_hdccf import losses

TAU = 0.5


def _t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


# A batch of M=2 rows, P=1: the pool has N=2 candidates, candidate j belongs to row j.
POOL = torch.tensor([[False, True], [True, False]])


def test_biased_contrastive_loss_matches_hand_computation():
    pos = _t([0.8, 0.1]) / TAU
    user_grid = _t([[0.3, -0.2], [0.5, 0.4]]) / TAU  # f(u_j, i_k)
    item_grid = _t([[0.9, 0.6], [-0.7, 0.2]]) / TAU  # f(u_k, i_j)
    loss = losses.contrastive_loss(
        pos,
        losses.biased_log_negative_score(user_grid, POOL),
        losses.biased_log_negative_score(item_grid, POOL),
    )
    e = lambda x: math.exp(x / TAU)  # noqa: E731
    row0 = -math.log(e(0.8) / (e(0.8) + e(-0.2) + e(0.6)))
    row1 = -math.log(e(0.1) / (e(0.1) + e(0.5) + e(-0.7)))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)


def _hand_debiased(neg, pool, observed, pos, w, tau, clamp=True):
    """Eq. (15) with eq. (25) and (16), written out with loops."""
    out = []
    for k in range(len(neg)):
        members = [j for j in range(len(neg[k])) if pool[k][j]]
        q = len(members)
        unobserved = [j for j in members if not observed[k][j]]
        pi0 = q / ((1 - w) * len(unobserved)) if unobserved else 0.0
        pi1 = q * w / ((1 - w) * len(pos[k]))
        est = sum(pi0 * math.exp(neg[k][j] / tau) for j in unobserved)
        est -= sum(pi1 * math.exp(f / tau) for f in pos[k])
        out.append(max(est, q * math.exp(-1 / tau)) if clamp else est)
    return out


def test_debiased_negative_score_matches_hand_computation():
    neg = [[0.2, 0.9, -0.1, 0.4], [0.3, 0.5, 0.8, -0.6], [0.7, 0.0, 0.1, 0.2]]
    pool = [[False, True, True, True], [True, False, True, True], [True, True, False, True]]
    observed = [[False, True, False, False], [False, False, False, False], [True, True, True, True]]
    pos = [[0.6, 0.5], [0.9, 0.1], [0.4, 0.3]]
    w = 0.1
    log_f, clamped = losses.debiased_log_negative_score(
        _t(neg) / TAU,
        torch.tensor(pool),
        torch.tensor(observed),
        _t(pos) / TAU,
        w_pos=w,
        tau=TAU,
    )
    expected = _hand_debiased(neg, pool, observed, pos, w, TAU)
    assert torch.exp(log_f).tolist() == pytest.approx(expected, rel=1e-10)
    # row 2 has every negative observed: the estimate is negative and the bound takes over
    assert clamped.tolist() == [False, False, True]
    assert expected[2] == pytest.approx(3 * math.exp(-1 / TAU))


def test_debiased_loss_end_to_end_matches_hand_computation():
    pos_f = [0.8, 0.1]
    user_grid = [[0.3, -0.2], [0.5, 0.4]]
    item_grid = [[0.9, 0.6], [-0.7, 0.2]]
    user_obs = [[False, False], [True, False]]
    item_obs = [[False, True], [False, False]]
    w_u, w_i = 0.05, 0.2
    own_user = [[user_grid[0][0]], [user_grid[1][1]]]  # f(u+, i_k) of the row's own neighbour
    own_item = [[item_grid[0][0]], [item_grid[1][1]]]
    pos_u = [[pos_f[k], *own_user[k]] for k in range(2)]
    pos_i = [[pos_f[k], *own_item[k]] for k in range(2)]
    log_fu, _ = losses.debiased_log_negative_score(
        _t(user_grid) / TAU, POOL, torch.tensor(user_obs), _t(pos_u) / TAU, w_u, TAU
    )
    log_fi, _ = losses.debiased_log_negative_score(
        _t(item_grid) / TAU, POOL, torch.tensor(item_obs), _t(pos_i) / TAU, w_i, TAU
    )
    loss = losses.contrastive_loss(_t(pos_f) / TAU, log_fu, log_fi)
    fu = _hand_debiased(user_grid, POOL.tolist(), user_obs, pos_u, w_u, TAU)
    fi = _hand_debiased(item_grid, POOL.tolist(), item_obs, pos_i, w_i, TAU)
    rows = [
        -math.log(math.exp(pos_f[k] / TAU) / (math.exp(pos_f[k] / TAU) + fu[k] + fi[k]))
        for k in range(2)
    ]
    assert loss.item() == pytest.approx(sum(rows) / 2, rel=1e-10)


def test_auxiliary_loss_biased_and_debiased_match_hand_computation():
    pos = [[0.9, 0.4], [0.2, 0.7], [0.5, 0.5]]  # [M=3, P=2]
    neg = [[0.1, 0.3, 0.8, -0.2, 0.6, 0.0], [0.2, 0.4, 0.5, 0.9, -0.1, 0.3], [0.7] * 6]
    owner = [0, 0, 1, 1, 2, 2]
    pool = [[owner[j] != k for j in range(6)] for k in range(3)]
    masked = [
        [False, False, True, False, False, False],
        [False, False, False, False, False, False],
        [True, True, True, True, True, True],
    ]

    def hand(masks):
        total = 0.0
        for k in range(3):
            members = [j for j in range(6) if pool[k][j]]
            keep = [j for j in members if not (masks and masks[k][j])]
            weight = len(members) / len(keep) if keep else 0.0
            negsum = sum(weight * math.exp(neg[k][j] / TAU) for j in keep)
            for f in pos[k]:
                total += -math.log(math.exp(f / TAU) / (math.exp(f / TAU) + negsum))
        return total / 3

    args = (_t(pos) / TAU, _t(neg) / TAU, torch.tensor(pool))
    assert losses.auxiliary_loss(*args).item() == pytest.approx(hand(None), rel=1e-10)
    debiased = losses.auxiliary_loss(*args, masked=torch.tensor(masked))
    assert debiased.item() == pytest.approx(hand(masked), rel=1e-10)
    # a positive excluded by pos_mask contributes nothing
    pos_mask = torch.tensor([[True, False], [True, True], [True, True]])
    partial = losses.auxiliary_loss(*args, pos_mask=pos_mask)
    full_row0_second = -math.log(
        math.exp(0.4 / TAU)
        / (math.exp(0.4 / TAU) + sum(math.exp(neg[0][j] / TAU) for j in range(2, 6)))
    )
    assert partial.item() == pytest.approx(hand(None) - full_row0_second / 3, rel=1e-10)


def test_bpr_loss_matches_hand_computation():
    pos = _t([0.8, 0.1]) / TAU
    neg = _t([[0.3, -0.2], [0.5, 0.4]]) / TAU
    loss = losses.bpr_loss(pos, neg, POOL)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    expected = (sp((-0.2 - 0.8) / TAU) + sp((0.5 - 0.1) / TAU)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    # weighted: row k's mean over its negatives with weights w_j
    neg3 = _t([[0.3, -0.2, 0.1], [0.5, 0.4, 0.0]]) / TAU
    pool3 = torch.tensor([[False, True, True], [True, False, True]])
    w = [1.0, 2.0, 0.5]
    weighted = losses.bpr_loss(pos, neg3, pool3, torch.log(_t(w)))
    row0 = (2.0 * sp((-0.2 - 0.8) / TAU) + 0.5 * sp((0.1 - 0.8) / TAU)) / 2.5
    row1 = (1.0 * sp((0.5 - 0.1) / TAU) + 0.5 * sp((0.0 - 0.1) / TAU)) / 1.5
    assert weighted.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)


def test_gradients_follow_eq4():
    """dL/df(u,i) = -(1/tau) sum P(u',i'); dL/df(u',i') = (1/tau) P(u',i') ∝ e^{f/tau}."""
    f_pos = _t([0.3]).requires_grad_()
    f_users = _t([[0.5, -0.4, 0.9]]).requires_grad_()
    f_items = _t([[0.1, 0.7]]).requires_grad_()
    pool_u = torch.ones(1, 3, dtype=torch.bool)
    pool_i = torch.ones(1, 2, dtype=torch.bool)
    loss = losses.contrastive_loss(
        f_pos / TAU,
        losses.biased_log_negative_score(f_users / TAU, pool_u),
        losses.biased_log_negative_score(f_items / TAU, pool_i),
    )
    loss.backward()
    neg_grads = torch.cat([f_users.grad, f_items.grad], dim=1)[0]
    negs = torch.cat([f_users, f_items], dim=1)[0].detach()
    # property 2: the positive's gradient is minus the sum of the negatives' gradients
    assert f_pos.grad.item() == pytest.approx(-neg_grads.sum().item(), rel=1e-12)
    # property 1: each negative's gradient is proportional to exp(f / tau)
    ratio = neg_grads / torch.exp(negs / TAU)
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-12)
    # and equals P(u', i') / tau with P of eq. 3
    denom = math.exp(0.3 / TAU) + torch.exp(negs / TAU).sum().item()
    assert neg_grads[2].item() == pytest.approx(math.exp(0.9 / TAU) / denom / TAU, rel=1e-12)


def test_theorem1_debiased_negative_term_is_unbiased_by_monte_carlo():
    """Candidates: observed positives (masked), hidden positives (false negatives) and true
    negatives. The debiased term estimates Q E_{p^-}[e^{f/tau}]; the biased one does not."""
    rng = np.random.default_rng(7)
    tau, w_pos = 0.5, 0.1
    true_neg = rng.uniform(-0.6, 0.3, size=50)  # scores of true negatives (p^- uniform)
    hidden_pos = rng.uniform(0.4, 0.7, size=20)  # false negatives, distributed like positives
    observed = rng.uniform(0.5, 1.0, size=10)  # observed positives of the anchor
    ideal_mean = np.exp(true_neg / tau).mean()  # E_{p^-}[e^{f/tau}]

    trials, n, p = 4000, 64, 4
    kind = rng.random((trials, n))
    is_observed = kind < 0.25
    is_hidden = ~is_observed & (rng.random((trials, n)) < w_pos)
    scores = np.where(
        is_observed,
        rng.choice(observed, size=(trials, n)),
        np.where(
            is_hidden, rng.choice(hidden_pos, size=(trials, n)), rng.choice(true_neg, (trials, n))
        ),
    )
    positives = rng.choice(hidden_pos, size=(trials, p + 1))  # N^+ ∪ {u}, from p^+
    pool = torch.ones(trials, n, dtype=torch.bool)
    log_f, clamped = losses.debiased_log_negative_score(
        torch.from_numpy(scores / tau),
        pool,
        torch.from_numpy(is_observed),
        torch.from_numpy(positives / tau),
        w_pos=w_pos,
        tau=tau,
    )
    assert not clamped.any()  # the clamp never truncated, so the mean is the estimator's
    debiased = torch.exp(log_f).numpy() / n  # per-candidate: estimates E_{p^-}[e^{f/tau}]
    stderr = debiased.std(ddof=1) / math.sqrt(trials)
    assert abs(debiased.mean() - ideal_mean) < 4 * stderr

    biased = np.exp(scores / tau).mean(axis=1)
    biased_stderr = biased.std(ddof=1) / math.sqrt(trials)
    assert abs(biased.mean() - ideal_mean) > 20 * biased_stderr


def test_clamp_is_active_exactly_below_the_bound():
    tau = 0.25
    bound_per_candidate = math.exp(-1 / tau)
    # One unobserved negative, pool size 2 (the other is observed), one positive term.
    # estimate = 2/(1-w) e^{f-/tau} - 2 w/((1-w) * 1) e^{f+/tau}
    w = 0.5
    cases = []
    for f_neg, f_pos in [(0.9, 0.1), (0.1, 0.9), (-0.95, -0.99), (-0.99, -0.5), (0.0, 0.0)]:
        est = 2 / (1 - w) * math.exp(f_neg / tau) - 2 * w / (1 - w) * math.exp(f_pos / tau)
        cases.append((f_neg, f_pos, est))
    neg = _t([[f, 0.5] for f, _, _ in cases]) / tau
    observed = torch.tensor([[False, True]] * len(cases))
    pos = _t([[f] for _, f, _ in cases]) / tau
    pool = torch.ones(len(cases), 2, dtype=torch.bool)
    neg.requires_grad_()
    log_f, clamped = losses.debiased_log_negative_score(neg, pool, observed, pos, w, tau)
    expected_clamped = [est < 2 * bound_per_candidate for _, _, est in cases]
    assert clamped.tolist() == expected_clamped
    assert any(expected_clamped) and not all(expected_clamped)
    values = torch.exp(log_f).tolist()
    for value, (_, _, est) in zip(values, cases, strict=True):
        assert value == pytest.approx(max(est, 2 * bound_per_candidate), rel=1e-9)
    # a clamped row passes no gradient to its negatives
    log_f.sum().backward()
    for row, is_clamped in enumerate(expected_clamped):
        assert (neg.grad[row].abs().sum().item() == 0) == is_clamped


def test_clamp_uses_each_rows_score_bound():
    """score_bound B (per row) moves the bound to Q e^{-B/tau}: the same estimate is clamped
    under B = 0.5 and not under B = 3."""
    tau, w = 0.5, 0.5
    f_neg, f_pos = -0.9, -1.2
    est = 2 / (1 - w) * math.exp(f_neg / tau) - 2 * w / (1 - w) * math.exp(f_pos / tau)
    bounds = [0.5, 3.0]
    assert 2 * math.exp(-bounds[1] / tau) < est < 2 * math.exp(-bounds[0] / tau)
    neg = _t([[f_neg, 0.0]] * 2) / tau
    observed = torch.tensor([[False, True]] * 2)
    pos = _t([[f_pos]] * 2) / tau
    pool = torch.ones(2, 2, dtype=torch.bool)
    log_f, clamped = losses.debiased_log_negative_score(
        neg, pool, observed, pos, w, tau, score_bound=_t(bounds)
    )
    assert clamped.tolist() == [True, False]
    assert torch.exp(log_f).tolist() == pytest.approx([2 * math.exp(-bounds[0] / tau), est])
    # the float default is the normalised bound B = 1
    default, _ = losses.debiased_log_negative_score(neg, pool, observed, pos, w, tau)
    explicit, _ = losses.debiased_log_negative_score(
        neg, pool, observed, pos, w, tau, score_bound=_t([1.0, 1.0])
    )
    torch.testing.assert_close(default, explicit)


def test_log_domain_stays_finite_at_small_temperature():
    tau = 0.01  # e^{1/tau} = e^100 overflows float32
    torch.manual_seed(0)
    neg = (torch.rand(8, 32) * 2 - 1).float().requires_grad_()
    pos = (torch.rand(8, 3) * 2 - 1).float().requires_grad_()
    pool = torch.rand(8, 32) > 0.1
    observed = torch.rand(8, 32) > 0.7
    log_f, _ = losses.debiased_log_negative_score(neg / tau, pool, observed, pos / tau, 0.1, tau)
    loss = losses.contrastive_loss(pos[:, 0] / tau, log_f)
    loss.backward()
    assert (
        torch.isfinite(loss) and torch.isfinite(neg.grad).all() and torch.isfinite(pos.grad).all()
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_logsumexp_matches_torch_logsumexp_in_value_and_gradient(dtype):
    """The masked logsumexp against torch.logsumexp over the masked entries: rows with a tenth
    masked out, a row with one entry, a row of large logits; values and gradients (a pin for any
    faster form, docs/speed.md)."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 40, generator=gen, dtype=dtype) * 5
    logits[0] += 200.0  # exp would overflow without the shift
    mask = torch.rand(64, 40, generator=gen) > 0.1
    mask[1] = False
    mask[1, 7] = True  # a single entry
    mine = logits.clone().requires_grad_(True)
    reference = logits.clone().requires_grad_(True)
    got = losses._masked_logsumexp(mine, mask)
    want = torch.logsumexp(reference.masked_fill(~mask, float("-inf")), dim=-1)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(got, want, rtol=tol, atol=tol)
    assert got[1].item() == pytest.approx(logits[1, 7].item())
    weights = torch.randn(64, generator=gen, dtype=dtype)
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    assert torch.allclose(mine.grad, reference.grad, rtol=tol, atol=tol)
    assert (mine.grad[~mask] == 0).all()  # masked-out entries get no gradient


@pytest.mark.parametrize("weighted", [False, True])
def test_empty_pool_and_fully_masked_rows_give_finite_loss_and_grads(weighted):
    neg = torch.zeros(2, 3, requires_grad=True)
    pos = torch.zeros(2, 2, requires_grad=True)
    pool = torch.tensor([[False, False, False], [True, True, True]])
    observed = torch.tensor([[False, False, False], [True, True, True]])
    log_w = torch.tensor([0.0, -1.0, 2.0]) if weighted else None
    log_f, clamped = losses.debiased_log_negative_score(
        neg, pool, observed, pos, 0.1, TAU, log_weights=log_w
    )
    assert log_f[0].item() == float("-inf")  # no negatives at all: no negative term
    assert clamped[1]  # every negative observed: the bound
    biased = losses.biased_log_negative_score(neg, pool, log_w)
    assert biased[0].item() == float("-inf")
    loss = (
        losses.contrastive_loss(pos[:, 0], log_f)
        + losses.contrastive_loss(pos[:, 0], biased)
        + losses.auxiliary_loss(pos, neg, pool, masked=observed, log_weights=log_w)
        + losses.bpr_loss(pos[:, 0], neg, pool, log_w)
    )
    loss.backward()
    assert (
        torch.isfinite(loss) and torch.isfinite(neg.grad).all() and torch.isfinite(pos.grad).all()
    )


def test_importance_weights_turn_sums_into_weighted_means():
    """pool_weighting: each negative term is |pool| times the w-weighted mean of e^{f/tau}."""
    neg = [[0.2, 0.9, -0.1, 0.4], [0.3, 0.5, 0.8, -0.6]]
    pool = torch.tensor([[False, True, True, True], [True, False, True, True]])
    observed = torch.tensor([[False, True, False, False], [False, False, False, True]])
    pos = [[0.6, 0.5], [0.9, 0.1]]
    weights = [1.0, 0.5, 2.0, 0.25]  # e.g. 1 / training degree of each candidate
    log_w = torch.log(_t(weights))
    e = [[math.exp(f / TAU) for f in row] for row in neg]

    def wmean(k, members):
        return sum(weights[j] * e[k][j] for j in members) / sum(weights[j] for j in members)

    biased = losses.biased_log_negative_score(_t(neg) / TAU, pool, log_w)
    expected = [3 * wmean(0, [1, 2, 3]), 3 * wmean(1, [0, 2, 3])]
    assert torch.exp(biased).tolist() == pytest.approx(expected, rel=1e-10)

    w = 0.1
    log_f, _ = losses.debiased_log_negative_score(
        _t(neg) / TAU, pool, observed, _t(pos) / TAU, w, TAU, log_weights=log_w
    )
    expected = []
    for k, unobserved in ((0, [2, 3]), (1, [0, 2])):
        est = 3 / (1 - w) * wmean(k, unobserved)
        est -= 3 * w / ((1 - w) * 2) * sum(math.exp(f / TAU) for f in pos[k])
        expected.append(max(est, 3 * math.exp(-1 / TAU)))
    assert torch.exp(log_f).tolist() == pytest.approx(expected, rel=1e-10)

    aux = losses.auxiliary_loss(
        _t(pos) / TAU, _t(neg) / TAU, pool, masked=observed, log_weights=log_w
    )
    rows = []
    for k, unobserved in ((0, [2, 3]), (1, [0, 2])):
        neg_term = 3 * wmean(k, unobserved)
        rows.append(
            sum(-math.log(math.exp(f / TAU) / (math.exp(f / TAU) + neg_term)) for f in pos[k])
        )
    assert aux.item() == pytest.approx(sum(rows) / 2, rel=1e-10)
    # equal weights change nothing
    flat = losses.biased_log_negative_score(
        _t(neg) / TAU, pool, torch.zeros(4, dtype=torch.float64)
    )
    assert torch.allclose(flat, losses.biased_log_negative_score(_t(neg) / TAU, pool))


def test_mixture_weights_recover_the_uniform_average():
    """In-batch candidates drawn prop. to degree plus K uniform ones: the weighted mean with
    uniform_pool_log_weights estimates the uniform average of e^f (the unweighted mean does not).
    K = 0 is exactly -log(degree)."""
    rng = np.random.default_rng(7)
    n_ids, n, k, trials = 50, 40, 20, 4000
    degree = rng.integers(1, 60, n_ids).astype(float)
    values = np.exp(rng.normal(0, 1, n_ids) + 0.02 * degree)  # e^f, higher for popular ids
    target = values.mean()
    batch = rng.choice(n_ids, size=(trials, n), p=degree / degree.sum())
    uniform = rng.integers(0, n_ids, size=(trials, k))
    ids = np.concatenate([batch, uniform], axis=1)
    log_w = losses.uniform_pool_log_weights(
        torch.from_numpy(degree[ids]), degree.sum(), n_ids, n, k
    ).numpy()
    w = np.exp(log_w)
    weighted = (w * values[ids]).sum(axis=1) / w.sum(axis=1)
    stderr = weighted.std(ddof=1) / np.sqrt(trials)
    # self-normalised: bias O(1/(n+k)), well inside the tolerance at these sizes
    assert abs(weighted.mean() - target) < max(4 * stderr, 0.01 * target)
    plain = values[ids].mean(axis=1)
    assert plain.mean() - target > 20 * plain.std(ddof=1) / np.sqrt(trials)

    d = torch.tensor([1.0, 2.0, 5.0])
    torch.testing.assert_close(losses.uniform_pool_log_weights(d, 8.0, 3, 4, 0), -torch.log(d))
    expected = -torch.log(4 * d / 8.0 + 2 / 3)
    torch.testing.assert_close(losses.uniform_pool_log_weights(d, 8.0, 3, 4, 2), expected)
