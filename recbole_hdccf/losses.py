"""HDCCF's losses as small pure functions on logits (scores already divided by the temperature).

Shapes: ``M`` rows (observed (u, i) pairs of a batch), ``N`` candidates in the in-batch pool
(``N = M * P``: every row's ``P`` sampled neighbours), ``P`` neighbours per row.

Everything is computed in the log domain, so ``tau = 0.01`` (logits up to 100, ``e^100`` overflows
float32) stays finite. Reductions: sum over a row's terms, mean over rows (the paper sums over
``D``; the mean only rescales the learning rate and keeps it independent of the batch size).

Paper references: eq. (1)-(2) contrastive loss, (5) auxiliary loss, (15) debiased negative score,
(16) its lower bound, (24)-(27) the weights ``pi``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


def _masked_logsumexp(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise ``log(sum(exp(logits[mask])))``; ``-inf`` for a row with no entry, with zero
    (not NaN) gradient there."""
    has_any = mask.any(dim=-1, keepdim=True)
    # Rows with no entry keep finite logits so logsumexp's backward stays finite; they are
    # replaced by -inf afterwards.
    safe = torch.where(mask | ~has_any, logits, torch.full_like(logits, NEG_INF))
    lse = torch.logsumexp(safe, dim=-1)
    return torch.where(has_any.squeeze(-1), lse, torch.full_like(lse, NEG_INF))


def _log_weighted_mean_exp(logits, mask, log_weights=None):
    """Row-wise ``log(sum_j w_j e^{x_j} / sum_j w_j)`` over ``mask``: the mean of ``e^x`` over
    the row's candidates, importance-weighted by ``w`` (plain mean without weights); ``-inf``
    for a row with no candidate. ``log_weights``: broadcastable to ``logits``."""
    if log_weights is None:
        count = mask.sum(dim=-1).clamp_min(1).to(logits.dtype)
        return _masked_logsumexp(logits, mask) - torch.log(count)
    log_weights = log_weights.expand_as(logits)
    log_total = _masked_logsumexp(log_weights, mask)
    # a row with no candidate: -inf (not -inf - -inf = NaN)
    log_total = torch.where(torch.isfinite(log_total), log_total, torch.zeros_like(log_total))
    return _masked_logsumexp(logits + log_weights, mask) - log_total


def biased_log_negative_score(
    neg_logits: torch.Tensor, pool: torch.Tensor, log_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``log F`` of eq. (2): ``log sum_{j in pool} e^{f_j / tau}`` per row, the multiset counted
    with multiplicity. ``neg_logits``, ``pool``: [M, N] -> [M].

    ``log_weights`` (importance weights of the candidates, see ``pool_weighting``) turn the sum
    into ``|pool|`` times the weighted mean."""
    if log_weights is None:
        return _masked_logsumexp(neg_logits, pool)
    q = pool.sum(dim=-1).to(neg_logits.dtype)
    return torch.log(q) + _log_weighted_mean_exp(neg_logits, pool, log_weights)


def debiased_log_negative_score(
    neg_logits: torch.Tensor,
    pool: torch.Tensor,
    observed: torch.Tensor,
    pos_logits: torch.Tensor,
    w_pos: float,
    tau: float,
    clamp: bool = True,
    log_weights: torch.Tensor | None = None,
    score_bound: float | torch.Tensor = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log F~`` of eq. (15) with the weights of eq. (25) and the lower bound of eq. (16).

    Args:
        neg_logits: [M, N] ``f / tau`` of every pool candidate with the row's anchor.
        pool: [M, N] bool, the row's in-batch negatives ``N^-`` (the other rows' neighbours).
        observed: [M, N] bool, candidates that are observed training positives of the anchor;
            their ``pi_0`` is zero (eq. 25).
        pos_logits: [M, P+1] ``f / tau`` of the anchor's positives ``N^+ ∪ {u}`` (eq. 24).
        w_pos: ``omega^+``, the probability that an unobserved sample is a false negative.
        tau: the temperature.
        log_weights: optional importance weights of the candidates ([N] or [M, N], log); the
            unobserved candidates' plain mean in ``pi_0`` becomes their weighted mean.
        score_bound: ``B`` with ``|f| <= B`` for every candidate of the row (a float, or [M]);
            1 for normalised embeddings. The bound is ``Q e^{-B/tau}``.

    With ``Q = |N^-|`` (the paper's choice):
        ``pi_0 = Q 1[unobserved] / (omega^- #unobserved)``, ``pi_1 = Q omega^+ / (omega^- (P+1))``,
        ``F~ = max(sum pi_0 e^{f^-/tau} - sum pi_1 e^{f^+/tau}, Q e^{-B/tau})``.
    The paper prints the bound as ``Q e^{+1/tau}``; with ``|f| <= 1`` every ``e^{f/tau}`` is at
    most ``e^{1/tau}``, so that bound would hold the estimate at a constant almost always and stop
    all negative gradients. ``e^{-B/tau}`` is the smallest value ``E[e^{f/tau}]`` can take when
    ``|f| <= B``, the bound of Chuang et al. (2020) that eq. (16) follows.

    Returns:
        ``(log F~ [M], clamped [M] bool)``: ``clamped`` marks rows where the estimate fell below
        the bound. Rows with an empty pool give ``-inf`` (no negative term); with
        ``clamp=False``, a non-positive estimate gives ``-inf`` too.
    """
    w_neg = 1.0 - w_pos
    q = pool.sum(dim=-1).to(neg_logits.dtype)
    valid = pool & ~observed
    log_q = torch.log(q)
    # no unobserved candidate gives log A = -inf (the logsumexp), not NaN.
    log_a = log_q - math.log(w_neg) + _log_weighted_mean_exp(neg_logits, valid, log_weights)
    log_bound = log_q - torch.as_tensor(score_bound, dtype=neg_logits.dtype) / tau
    if w_pos > 0:
        log_b = (
            log_q
            + math.log(w_pos)
            - math.log(w_neg)
            - math.log(pos_logits.shape[-1])
            + torch.logsumexp(pos_logits, dim=-1)
        )
        diff = log_b - log_a  # < 0 exactly when A > B
        above = diff < 0
        safe = torch.where(above, diff, torch.full_like(diff, -1.0))
        # a non-positive estimate has no log: -inf, which the bound then replaces
        log_estimate = torch.where(
            above, log_a + torch.log1p(-torch.exp(safe)), torch.full_like(diff, NEG_INF)
        )
    else:
        log_estimate = log_a
    if not clamp:
        return log_estimate, torch.zeros_like(log_estimate, dtype=torch.bool)
    clamped = log_estimate < log_bound
    return torch.maximum(log_estimate, log_bound), clamped


def contrastive_loss(pos_logits: torch.Tensor, *log_negative_scores: torch.Tensor) -> torch.Tensor:
    """Eq. (1)/(14): ``mean_rows -log e^{pos} / (e^{pos} + F^u + F^i)`` from ``log F`` terms.

    ``pos_logits``: [M]; each ``log_negative_scores``: [M] (``-inf`` for an empty term)."""
    stacked = torch.stack((pos_logits, *log_negative_scores), dim=-1)
    return (torch.logsumexp(stacked, dim=-1) - pos_logits).mean()


def auxiliary_loss(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    pool: torch.Tensor,
    masked: torch.Tensor | None = None,
    pos_mask: torch.Tensor | None = None,
    log_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. (5), or its debiased form eq. (26)-(27) when ``masked`` is given.

    ``-sum_{p} log e^{f_p} / (e^{f_p} + sum_{j in pool} pi_j e^{f_j})`` per row, mean over rows.
    Debiased: ``pi_j = Q 1[j not masked] / #(not masked)`` with ``Q = |pool|``, i.e. the masked
    neighbours are dropped and the rest rescaled to the pool's size.

    Args:
        pos_logits: [M, P] the anchor's positive neighbours.
        neg_logits: [M, N] every pool candidate with the anchor.
        pool: [M, N] bool, the anchor's in-batch negatives.
        masked: [M, N] bool, candidates that are known neighbours of the anchor (``D^{u-u}``).
        pos_mask: [M, P] bool, positives that count (a neighbour equal to the anchor does not).
        log_weights: optional importance weights of the candidates (log), as in
            :func:`debiased_log_negative_score`.
    """
    keep = pool if masked is None else pool & ~masked
    q = pool.sum(dim=-1).to(neg_logits.dtype)
    log_neg = torch.log(q) + _log_weighted_mean_exp(neg_logits, keep, log_weights)
    log_neg = log_neg.unsqueeze(-1).expand_as(pos_logits)
    per_pair = torch.logaddexp(pos_logits, log_neg) - pos_logits
    if pos_mask is not None:
        per_pair = torch.where(pos_mask, per_pair, torch.zeros_like(per_pair))
    return per_pair.sum(dim=-1).mean()


def bpr_loss(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    pool: torch.Tensor,
    log_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """BPR on the same scores (the paper's BPR+): ``mean_rows mean_{j in pool}
    -log sigmoid(pos - neg_j)``, the mean weighted by ``exp(log_weights)`` when given.
    ``pos_logits``: [M]; ``neg_logits``, ``pool``: [M, N]."""
    pairwise = F.softplus(neg_logits - pos_logits.unsqueeze(-1))
    weights = pool.to(neg_logits.dtype)
    if log_weights is not None:
        weights = weights * torch.exp(log_weights - log_weights.max()).expand_as(weights)
    per_row = (pairwise * weights).sum(dim=-1) / weights.sum(dim=-1).clamp_min(1e-30)
    return per_row.mean()


def uniform_pool_log_weights(
    degree: torch.Tensor, total_degree: float, n_ids: int, n_batch: int, n_uniform: int
) -> torch.Tensor:
    """Log importance weights that turn the pool's weighted mean into the uniform average.

    Args:
        degree: [N] training degree of each candidate (>= 1).
        total_degree: ``D``, the sum of all training degrees (the in-batch draw is ``deg / D``).
        n_ids: how many ids a uniform draw chooses from.
        n_batch: ``n``, candidates drawn in-batch (each ``prop. to`` its degree, Proposition 1).
        n_uniform: ``K``, candidates drawn uniformly.

    Returns ``-log(n deg / D + K / n_ids)`` [N]: the inverse density of the mixture (the balance
    heuristic of multiple importance sampling). The weighted means of :func:`biased_log_negative_score`
    and :func:`debiased_log_negative_score` normalise by the weights' sum, so a constant factor
    does not matter: ``K = 0`` is the plain ``1 / degree``.
    """
    if n_uniform == 0:
        return -torch.log(degree)
    return -torch.log(n_batch * degree / total_degree + n_uniform / n_ids)
