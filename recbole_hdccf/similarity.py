"""HDCCF's neural modulated similarity (eq. 7-8) for pairs and for grids of pairs.

``f(u, i) = (m_ui * p_u) . (m_ui * q_i) = sum_c m_c^2 p_c q_c`` with
``m_ui = sigmoid(g(e_i || e_u || e_i * e_u))``. With ``p`` and ``q`` L2-normalised and
``m in (0, 1)^d``, Cauchy-Schwarz gives ``|f| <= 1``: the bound the debiased loss's clamp needs.

``g`` is one linear layer by default. Its first layer splits by the three input blocks,
``W_i e_i + W_u e_u + W_x (e_i * e_u) + b``: the first two are computed once per item and per
user; only the ``d x d`` bilinear term ``W_x (e_i * e_u)`` is per pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ModulationNet(nn.Module):
    r"""``g: R^{3d} -> R^d`` followed by a sigmoid: the modulating vector ``m_ui``.

    Args:
        dim: ``d``, the size of ``e_u`` and ``e_i``.
        hidden: sizes of hidden layers (ReLU); ``[]`` is the paper's single linear layer.
    """

    def __init__(self, dim: int, hidden: list[int] | tuple[int, ...] = ()):
        super().__init__()
        first_out = hidden[0] if hidden else dim
        self.item_proj = nn.Linear(dim, first_out, bias=True)
        self.user_proj = nn.Linear(dim, first_out, bias=False)
        self.cross_proj = nn.Linear(dim, first_out, bias=False)
        layers: list[nn.Module] = []
        sizes = [*hidden, dim]
        for size_in, size_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.ReLU(), nn.Linear(size_in, size_out)]
        self.rest = nn.Sequential(*layers)

    def forward(self, e_u: torch.Tensor, e_i: torch.Tensor) -> torch.Tensor:
        """``m`` for aligned pairs: ``e_u``, ``e_i`` [..., d] (broadcastable) -> [..., d]."""
        first = self.item_proj(e_i) + self.user_proj(e_u) + self.cross_proj(e_i * e_u)
        return torch.sigmoid(self.rest(first))


def normalize(x: torch.Tensor, enabled: bool) -> torch.Tensor:
    return F.normalize(x, dim=-1) if enabled else x


def pair_scores(p_u, q_i, e_u=None, e_i=None, modulation: ModulationNet | None = None):
    """``f`` for aligned pairs. ``p_u``, ``q_i``, ``e_u``, ``e_i``: [n, d] -> [n].

    ``modulation=None`` is the all-ones modulating vector (plain dot product)."""
    if modulation is None:
        return (p_u * q_i).sum(-1)
    m = modulation(e_u, e_i)
    return (m * m * p_u * q_i).sum(-1)


def grid_scores(p_u, q_i, e_u=None, e_i=None, modulation: ModulationNet | None = None, chunk=None):
    """``f`` for every (user, item) combination. ``p_u``, ``e_u``: [A, d]; ``q_i``, ``e_i``:
    [B, d] -> [A, B].

    ``chunk``: users per block, so memory stays at ``chunk * B * d`` floats per live tensor."""
    if modulation is None:
        return p_u @ q_i.T
    n_users = p_u.shape[0]
    chunk = chunk or n_users
    blocks = []
    for start in range(0, n_users, chunk):
        sl = slice(start, start + chunk)
        m = modulation(e_u[sl, None, :], e_i[None, :, :])  # [a, B, d]
        blocks.append((m * m * p_u[sl, None, :] * q_i[None, :, :]).sum(-1))
    return torch.cat(blocks, dim=0)
