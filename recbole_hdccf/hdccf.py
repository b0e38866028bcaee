r"""
HDCCF
################################################

Reference:
    Chenxiao Yang, Qitian Wu, Jipeng Jin, Xiaofeng Gao, Junwei Pan and Guihai Chen.
    "Trading Hard Negatives and True Negatives: A Debiased Contrastive Collaborative Filtering
    Approach." in IJCAI 2022.

No official code exists; this is a reference implementation. Choices where the paper is silent
or garbled (each documented in README.md, "Implementation choices"):

- Scores: eq. 7's raw products by default (``normalize: false``); the clamp of eq. (16) then
  uses each row's bound ``B = ||p_u|| max ||q||`` (resp. ``||q_i|| max ||p||``) over the batch,
  since ``|f(u, i)| <= ||p_u|| ||q_i||`` with ``m in (0,1)^d``. ``normalize: true``
  L2-normalises ``p_u`` and ``q_i``, so ``B = 1``.
- The clamp is ``max(F~, Q e^{-B/tau})``: the smallest value ``E[e^{f/tau}]`` can take. The
  paper prints ``e^{+1/tau}``, which with bounded scores freezes the negative term.
- ``f`` for user-user and item-item pairs (eq. 5) is the product of the embeddings ``p`` (resp.
  ``q``; a cosine when normalised), with the same temperature.
- ``D^{u-u}`` (eq. 27) for the anchor row (u, i): the in-batch negative users that are observed
  users of ``i`` (``aux_mask: item``); ``any`` masks users sharing any training item with ``u``
  (on ML-1M that is almost every user), ``none`` keeps all. The denominator of eq. (27) counts the
  anchor's unmasked negatives, as eq. (25) does.
- BPR+ (Fig. 2) is BPR on the same similarity and the same in-batch negative items and users.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.init import xavier_normal_initialization
from recbole.utils import InputType
from torch import nn

from recbole_hdccf import losses
from recbole_hdccf.sampler import NEIGHBOR_ITEMS, NEIGHBOR_USERS, SHARD_WEIGHT, TrainGraph
from recbole_hdccf.settings import HDCCFSettings
from recbole_hdccf.similarity import ModulationNet, grid_scores, normalize, pair_scores


class NegativePool(NamedTuple):
    """The in-batch candidates: ``items``, ``users`` [N] (the sampled neighbours), ``owner`` [N]
    (the batch row each was sampled for) and ``rows`` [M] (the batch rows of the anchors)."""

    items: torch.Tensor
    users: torch.Tensor
    owner: torch.Tensor
    rows: torch.Tensor


def own_pool(neighbor_items: torch.Tensor, neighbor_users: torch.Tensor) -> NegativePool:
    """The pool of a batch's own rows: their ``M P`` neighbours."""
    m, p = neighbor_items.shape
    rows = torch.arange(m, device=neighbor_items.device)
    return NegativePool(
        neighbor_items.reshape(-1), neighbor_users.reshape(-1), rows.repeat_interleave(p), rows
    )


def _score_bounds(p_u, q_i, p_n, q_n):
    """Per-row bounds ``B`` on ``|f|`` for unnormalised embeddings, detached: ``(item side [M],
    user side [M])``.

    ``|f(u, i)| = |sum_c m_c^2 p_c q_c| <= ||p_u|| ||q_i||`` since ``m in (0, 1)^d``, so row
    ``k``'s item candidates (its positive and the pool's items) score at most
    ``||p_{u_k}|| max ||q||``, and its user candidates at most ``||q_{i_k}|| max ||p||``."""
    with torch.no_grad():
        p_norm, q_norm = p_u.norm(dim=-1), q_i.norm(dim=-1)
        q_max = torch.maximum(q_norm.max(), q_n.norm(dim=-1).max())
        p_max = torch.maximum(p_norm.max(), p_n.norm(dim=-1).max())
        return p_norm * q_max, q_norm * p_max


class HDCCF(GeneralRecommender):
    r"""HDCCF: contrastive CF with negative users and items drawn from the batch's sampled
    neighbours, user-user and item-item auxiliary losses, a debiased negative score and a neural
    modulated similarity.

    Training batches come from :class:`recbole_hdccf.sampler.NeighborTrainDataLoader` (installed by
    :class:`recbole_hdccf.trainer.HDCCFTrainer`): observed rows plus ``P`` sampled neighbours each.
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.settings = HDCCFSettings.from_config(config)
        s = self.settings
        self.embedding_size = s.embedding_size
        self.tau = float(s.tau)
        self.neighbor_num = s.neighbor_num
        self.train_graph = TrainGraph.from_dataset(dataset)
        # training degrees for pool_weighting (>= 1 for every id the pool can hold)
        for name, degree in (
            ("_item_degree", self.train_graph.item_degree),
            ("_user_degree", self.train_graph.user_degree),
        ):
            value = torch.as_tensor(degree, dtype=torch.float).clamp_min(1)
            self.register_buffer(name, value, persistent=False)
            setattr(self, f"{name}_total", float(value[1:].sum()))  # D, without the padding id

        # define layers and loss
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)  # p_u
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)  # q_i
        if s.modulation:
            self.user_factor = nn.Embedding(self.n_users, self.embedding_size)  # e_u
            self.item_factor = nn.Embedding(self.n_items, self.embedding_size)  # e_i
            self.modulation = ModulationNet(self.embedding_size, s.modulation_hidden)
        else:
            self.user_factor = self.item_factor = self.modulation = None

        # parameters initialization
        self.apply(xavier_normal_initialization)

    # ------------------------------------------------------------------ representations
    def _user_repr(self, users):
        """``(p_u, e_u)`` for user ids [n] -> two [n, d] (``e_u`` None when unmodulated)."""
        p = normalize(self.user_embedding(users), self.settings.normalize)
        e = self.user_factor(users) if self.modulation is not None else None
        return p, e

    def _item_repr(self, items):
        q = normalize(self.item_embedding(items), self.settings.normalize)
        e = self.item_factor(items) if self.modulation is not None else None
        return q, e

    def forward(self, user, item):
        r"""Modulated similarity of aligned pairs: ``user``, ``item`` [n] -> ``f`` [n]."""
        p_u, e_u = self._user_repr(user)
        q_i, e_i = self._item_repr(item)
        return pair_scores(p_u, q_i, e_u, e_i, self.modulation)

    def score_grid(self, users, items, chunk=None):
        r"""``f`` of every user with every item: ``users`` [A], ``items`` [B] -> [A, B]."""
        p_u, e_u = self._user_repr(users)
        q_i, e_i = self._item_repr(items)
        return grid_scores(p_u, q_i, e_u, e_i, self.modulation, chunk=chunk)

    # ------------------------------------------------------------------ training
    def batch_logits(self, user, item, neighbor_items, neighbor_users, pool=None):
        r"""Everything the losses need from one batch, as ``f / tau``.

        Args:
            user, item: [M] the observed rows.
            neighbor_items, neighbor_users: [M, P] sampled positives of each row's user / item.
            pool: the candidates (:class:`NegativePool`); default: the rows' own ``N = M P``
                neighbours. A distributed run with ``gather_negatives`` passes the neighbours of
                every row of the global batch.

        Returns a dict of tensors: ``pos`` [M]; ``item_grid`` [M, N] ``f(u_k, i_j)`` and
        ``user_grid`` [M, N] ``f(u_j, i_k)`` over the pool (each only when ``ui_negatives`` uses
        that side); ``pool`` [M, N] (``j`` belongs to another row); ``own`` [M, N] (``j`` is one
        of row ``k``'s own ``P`` neighbours);
        ``item_observed`` / ``user_observed`` [M, N] (the pair is a training interaction);
        ``uu`` / ``ii`` [M, N] logits of the auxiliary losses (``p . p`` and ``q . q``).
        """
        pool = own_pool(neighbor_items, neighbor_users) if pool is None else pool
        m, n = user.shape[0], pool.items.shape[0]
        own = pool.owner.unsqueeze(0) == pool.rows.unsqueeze(1)

        p_u, e_u = self._user_repr(user)
        q_i, e_i = self._item_repr(item)
        p_n, e_n = self._user_repr(pool.users)
        q_n, e_n_items = self._item_repr(pool.items)
        pos = pair_scores(p_u, q_i, e_u, e_i, self.modulation)

        graph = self.train_graph
        out = {
            "pos": pos / self.tau,
            "pool": ~own,
            "item_observed": graph.contains(
                user.unsqueeze(1).expand(-1, n), pool.items.expand(m, -1)
            ),
            "user_observed": graph.contains(
                pool.users.expand(m, -1), item.unsqueeze(1).expand(-1, n)
            ),
            "own": own,
        }
        # the d x d bilinear grids, only for the sides eq. 1 uses (ui_negatives)
        if self.settings.ui_negatives in ("items", "both"):
            item_grid = grid_scores(p_u, q_n, e_u, e_n_items, self.modulation)  # f(u_k, i_j)
            out["item_grid"] = item_grid / self.tau
        if self.settings.ui_negatives in ("users", "both"):
            user_grid = grid_scores(p_n, q_i, e_n, e_i, self.modulation).T  # f(u_j, i_k)
            out["user_grid"] = user_grid / self.tau
        if not self.settings.normalize:
            out["item_bound"], out["user_bound"] = _score_bounds(p_u, q_i, p_n, q_n)
        if self.settings.lambda_u > 0:
            out["uu"] = (p_u @ p_n.T) / self.tau
        if self.settings.lambda_i > 0:
            out["ii"] = (q_i @ q_n.T) / self.tau
        return out

    @staticmethod
    def _own_block(grid, own, p):
        """The row's own ``P`` neighbours' entries of ``grid``: [M, N] -> [M, P]."""
        return grid[own].view(grid.shape[0], p)

    def _aux_mask(self, observed, anchors, pool_ids, same_kind_degree):
        """``D^{u-u}`` (or ``D^{i-i}``) for the anchors against the pool, per ``aux_mask``."""
        mode = self.settings.aux_mask
        if not self.settings.debias or mode == "none":
            return None
        if mode == "item":
            return observed
        return same_kind_degree(anchors, pool_ids)

    def _training_rows(self, interaction):
        """``(user, item, neighbor_items, neighbor_users, pool, scale)`` of the rows this process
        trains on. Outside a distributed run: the whole batch and its own pool. In one
        (``shard_weight`` present) the batch is the global batch: this process's rows, the pool of
        its own rows or, with ``gather_negatives``, of the global batch, and ``scale = W m / G``
        so that DDP's gradient average equals the gradient of the mean over the global batch
        (``scale`` is None outside a distributed run)."""
        user, item = interaction[self.USER_ID], interaction[self.ITEM_ID]
        neighbor_items = interaction[NEIGHBOR_ITEMS]
        neighbor_users = interaction[NEIGHBOR_USERS]
        if SHARD_WEIGHT not in interaction.interaction:
            return user, item, neighbor_items, neighbor_users, None, None
        weight = interaction[SHARD_WEIGHT]
        mine = weight > 0
        local = (user[mine], item[mine], neighbor_items[mine], neighbor_users[mine])
        pool = None
        if self.settings.gather_negatives:
            everyone = own_pool(neighbor_items, neighbor_users)
            pool = everyone._replace(rows=mine.nonzero().squeeze(1))
        return (*local, pool, weight.sum())

    def _zero_parts(self):
        """The loss parts of an empty batch: zeros that reach every parameter (DDP's reducer
        expects a gradient for each), with zero gradient."""
        zero = sum(parameter.sum() for parameter in self.parameters()) * 0.0
        count = 1 + (self.settings.lambda_u > 0) + (self.settings.lambda_i > 0)
        return tuple([zero] * count) if count > 1 else zero

    def calculate_loss(self, interaction):
        r"""Eq. (6): ``L_ui + lambda_u L_uu + lambda_i L_ii`` on one batch.

        Returns a tuple of the weighted parts, so RecBole logs each one.
        """
        s = self.settings
        user, item, neighbor_items, neighbor_users, pool, scale = self._training_rows(interaction)
        if user.shape[0] == 0:
            return self._zero_parts()
        p = neighbor_items.shape[1]
        pool = own_pool(neighbor_items, neighbor_users) if pool is None else pool
        pool = self._with_uniform_negatives(pool)
        g = self.batch_logits(user, item, neighbor_items, neighbor_users, pool=pool)
        candidates, own = g["pool"], g["own"]

        item_w, user_w = self._pool_log_weights(pool)
        sides = {
            "items": ("item_grid", "item_observed", item_w, s.w_i_pos, "item_bound"),
            "users": ("user_grid", "user_observed", user_w, s.w_u_pos, "user_bound"),
        }
        sides = [sides[key] for key in ("users", "items") if s.ui_negatives in (key, "both")]
        if s.ui_loss == "bpr":
            ui = sum(
                losses.bpr_loss(g["pos"], g[grid], candidates, w) for grid, _, w, _, _ in sides
            ) / len(sides)
        elif s.debias:
            pos_col = g["pos"].unsqueeze(1)
            negative_scores = [
                losses.debiased_log_negative_score(
                    g[grid],
                    candidates,
                    g[observed],
                    torch.cat([pos_col, self._own_block(g[grid], own, p)], dim=1),
                    w_pos,
                    self.tau,
                    log_weights=w,
                    score_bound=g.get(bound, 1.0),
                )[0]
                for grid, observed, w, w_pos, bound in sides
            ]
            ui = losses.contrastive_loss(g["pos"], *negative_scores)
        else:
            ui = losses.contrastive_loss(
                g["pos"],
                *[
                    losses.biased_log_negative_score(g[grid], candidates, w)
                    for grid, _, w, _, _ in sides
                ],
            )

        parts = [ui]
        if s.lambda_u > 0:
            side = (g["uu"], g["user_observed"], user, pool.users, neighbor_users, user_w)
            parts.append(s.lambda_u * self._auxiliary(*side, own, candidates, "user"))
        if s.lambda_i > 0:
            side = (g["ii"], g["item_observed"], item, pool.items, neighbor_items, item_w)
            parts.append(s.lambda_i * self._auxiliary(*side, own, candidates, "item"))
        if scale is not None:
            parts = [part * scale for part in parts]
        return tuple(parts) if len(parts) > 1 else parts[0]

    def _with_uniform_negatives(self, pool: NegativePool) -> NegativePool:
        """``pool`` plus ``K = uniform_negatives`` items and ``K`` users drawn uniformly (with
        replacement, from the torch generator) for the whole batch: a negative of every row
        (owner ``-1``), masked like any candidate when it is an observed positive (eq. 25)."""
        k = self.settings.uniform_negatives
        if k == 0:
            return pool
        device = pool.items.device
        items = torch.randint(1, self.n_items, (k,), device=device)
        users = torch.randint(1, self.n_users, (k,), device=device)
        return NegativePool(
            torch.cat([pool.items, items]),
            torch.cat([pool.users, users]),
            torch.cat([pool.owner, torch.full((k,), -1, device=device, dtype=pool.owner.dtype)]),
            pool.rows,
        )

    def _pool_log_weights(self, pool):
        """Log importance weights of the pool's candidates, ``(items [N], users [N])``, or
        ``(None, None)`` for the raw pool (``pool_weighting: popularity``).

        The pool draws a candidate in proportion to its training degree (Proposition 1), while
        the ideal loss the debiasing targets (eq. 13, 20) averages over uniformly drawn negatives
        (sec. 2.3). ``pool_weighting: uniform`` weights each candidate by ``1 / degree``, so
        every negative term estimates that uniform average.

        With ``uniform_negatives: K`` the pool mixes the ``n`` in-batch candidates (density
        ``n deg / D``, ``D`` the total degree) with ``K`` uniform ones (``K / #ids``); each
        candidate gets the mixture's inverse density (the balance heuristic of multiple importance
        sampling), which is ``1 / degree`` up to a constant when ``K = 0``."""
        if self.settings.pool_weighting != "uniform":
            return None, None
        k = self.settings.uniform_negatives
        n = pool.items.shape[0] - k
        return (
            losses.uniform_pool_log_weights(
                self._item_degree[pool.items], self._item_degree_total, self.n_items - 1, n, k
            ),
            losses.uniform_pool_log_weights(
                self._user_degree[pool.users], self._user_degree_total, self.n_users - 1, n, k
            ),
        )

    def _auxiliary(self, logits, observed, anchors, pool_ids, neighbors, log_w, own, pool, kind):
        """Eq. (5)/(26) for one side: user-user (``kind="user"``) or item-item (``"item"``).

        ``logits`` [M, N] anchor-vs-pool similarities; ``observed`` [M, N] the eq. 25 mask of
        that side; ``neighbors`` [M, P] the anchors' sampled positives (one equal to the anchor
        itself is not a positive)."""
        mask = self._aux_mask(
            observed,
            anchors,
            pool_ids,
            lambda a, o: self.train_graph.share_neighbor(a, o, kind=kind),
        )
        return losses.auxiliary_loss(
            self._own_block(logits, own, neighbors.shape[1]),
            logits,
            pool,
            mask,
            pos_mask=neighbors != anchors.unsqueeze(1),
            log_weights=log_w,
        )

    # ------------------------------------------------------------------ inference
    def predict(self, interaction):
        r"""Scores of given rows: ``interaction[USER_ID]``, ``[ITEM_ID]`` [n] -> [n]."""
        return self.forward(interaction[self.USER_ID], interaction[self.ITEM_ID])

    def full_sort_predict(self, interaction):
        r"""Scores of each given user against every item: [n] users -> [n * n_items].

        Users are scored in blocks of at most ``full_sort_memory_mb`` of per-pair work."""
        users = interaction[self.USER_ID]
        items = torch.arange(self.n_items, device=users.device)
        per_user = self.n_items * self.embedding_size * 4 * 4  # ~4 live float32 [B, d] tensors
        chunk = max(1, self.settings.full_sort_memory_mb * 2**20 // per_user)
        return self.score_grid(users, items, chunk=chunk).reshape(-1)
