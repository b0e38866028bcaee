"""HDCCF's neural modulated similarity (eq. 7-8) for pairs and for grids of pairs.

``f(u, i) = (m_ui * p_u) . (m_ui * q_i) = sum_c m_c^2 p_c q_c`` with
``m_ui = sigmoid(g(e_i || e_u || e_i * e_u))``. With ``p`` and ``q`` L2-normalised and
``m in (0, 1)^d``, Cauchy-Schwarz gives ``|f| <= 1``: the bound the debiased loss's clamp needs.

``g`` is one linear layer by default. Its first layer splits by the three input blocks,
``W_i e_i + W_u e_u + W_x (e_i * e_u) + b``: the first two are computed once per item and per
user; only the ``d x d`` bilinear term ``W_x (e_i * e_u)`` is per pair.

Grids (:func:`grid_scores`) of a single-layer ``g`` run through :mod:`recbole_hdccf.fused_grid`
(one GEMM per block of users, hand-written backward, no ``[A, B, d]`` tensor kept) and score each
distinct row of a multiset pool once; ``impl="reference"`` keeps the eager definition.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn

from recbole_hdccf import fused_grid


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


GRID_IMPLS = ("auto", "fused", "reference")
_GRID_DEFAULTS = {"impl": "auto", "gemm_dtype": None}


@contextlib.contextmanager
def grid_impl(impl: str, gemm_dtype: torch.dtype | None = None):
    """Within the block, :func:`grid_scores` called without ``impl`` uses ``impl``, and the fused
    path runs its GEMMs in ``gemm_dtype`` (``torch.bfloat16``: ~1.7x faster on a CPU with
    AVX512-BF16, scores off by ~1e-3; see docs/speed.md). Benchmarks and tests use it to switch
    paths through an unchanged model."""
    if impl not in GRID_IMPLS:
        raise ValueError(f"impl={impl!r}: choose one of {list(GRID_IMPLS)}")
    previous = dict(_GRID_DEFAULTS)
    _GRID_DEFAULTS.update(impl=impl, gemm_dtype=gemm_dtype)
    try:
        yield
    finally:
        _GRID_DEFAULTS.update(previous)


@functools.lru_cache(maxsize=8)
def _projection(dim: int) -> torch.Tensor:
    """A fixed random direction in ``R^dim`` (float64, CPU) that hashes rows to one number."""
    return torch.randn(dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def unique_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Exactly repeated rows of ``x`` [n, k]: ``(first, inverse)`` with ``x[first][inverse]``
    equal to ``x`` bit for bit (``first`` [u], the first occurrence of each distinct row;
    ``inverse`` [n]), or ``None`` when every row is distinct.

    Rows are grouped by a random projection and the grouping is then checked exactly, so a
    collision can only cost the saving, never a wrong value."""
    n = x.shape[0]
    if n < 2:
        return None
    x = x.detach()
    keys = x.to(torch.float64) @ _projection(x.shape[1]).to(x.device)
    _, inverse = torch.unique(keys, return_inverse=True)
    n_unique = int(inverse.max()) + 1
    if n_unique == n:
        return None
    positions = torch.arange(n, device=x.device)
    first = torch.full((n_unique,), n, device=x.device).scatter_reduce_(
        0, inverse, positions, reduce="amin"
    )
    if not torch.equal(x[first][inverse], x):
        return None
    return first, inverse


def _dedup_pairs(*tensors: torch.Tensor):
    """``(first, inverse)`` of the rows of ``tensors`` (each [n, d]) taken side by side."""
    return unique_rows(torch.cat(tensors, dim=1))


def _reference_grid(p_u, q_i, e_u, e_i, modulation, chunk=None):
    """The eager definition: materialises ``m`` [chunk, B, d] per block of users."""
    n_users = p_u.shape[0]
    chunk = chunk or n_users
    blocks = []
    for start in range(0, n_users, chunk):
        sl = slice(start, start + chunk)
        m = modulation(e_u[sl, None, :], e_i[None, :, :])  # [a, B, d]
        blocks.append((m * m * p_u[sl, None, :] * q_i[None, :, :]).sum(-1))
    return torch.cat(blocks, dim=0)


def resolve_impl(impl: str, dedup: bool | None, device: torch.device, modulation) -> tuple:
    """``(impl, dedup)`` that :func:`grid_scores` runs for the requested ones.

    ``"auto"``: on CPU the fused kernel (single-layer ``g``) with deduplication; elsewhere the
    reference path without it. Measured on an H100 (docs/speed.md) the ml-100k step is
    launch-bound: 12.8 ms reference against 17.0 ms fused, whose per-block launches and exact
    deduplication checks cost more there than the FLOPs they save."""
    if impl not in GRID_IMPLS:
        raise ValueError(f"impl={impl!r}: choose one of {list(GRID_IMPLS)}")
    on_cpu = torch.device(device).type == "cpu"
    if dedup is None:
        dedup = impl != "reference" and (on_cpu or impl == "fused")
    if impl == "auto":
        impl = "fused" if on_cpu and fused_grid.is_single_layer(modulation) else "reference"
    return impl, dedup


def grid_scores(
    p_u,
    q_i,
    e_u=None,
    e_i=None,
    modulation: ModulationNet | None = None,
    chunk=None,
    impl: str | None = None,
    dedup: bool | None = None,
):
    """``f`` for every (user, item) combination. ``p_u``, ``e_u``: [A, d]; ``q_i``, ``e_i``:
    [B, d] -> [A, B].

    ``chunk``: users per block, so memory stays at ``chunk * B * d`` floats per live tensor (the
    fused path may use smaller blocks).

    ``impl``: ``"fused"`` (:mod:`recbole_hdccf.fused_grid`, single-layer ``modulation`` only),
    ``"reference"`` (the eager definition) or ``"auto"`` (:func:`resolve_impl`: on CPU fused
    when the modulation has no hidden layer, else reference). ``None`` means the current
    :func:`grid_impl` (``"auto"``).

    ``dedup``: score each distinct user row and item row once and index the grid back (the
    in-batch pool is a multiset). Values are unchanged; the gradient of a repeated input row
    goes to its first occurrence, which leaves the gradient of an embedding table that all the
    copies were gathered from unchanged. Default: on for ``"fused"`` and for ``"auto"`` on CPU.

    ``modulation=None`` is a plain matmul whatever ``impl``."""
    if modulation is None:
        return p_u @ q_i.T
    impl, dedup = resolve_impl(impl or _GRID_DEFAULTS["impl"], dedup, p_u.device, modulation)
    if not dedup:
        return _modulated_grid(p_u, q_i, e_u, e_i, modulation, chunk, impl)
    users, items = _dedup_pairs(p_u, e_u), _dedup_pairs(q_i, e_i)
    if users is not None:
        p_u, e_u = p_u[users[0]], e_u[users[0]]
    if items is not None:
        q_i, e_i = q_i[items[0]], e_i[items[0]]
    grid = _modulated_grid(p_u, q_i, e_u, e_i, modulation, chunk, impl)
    if users is not None:
        grid = grid.index_select(0, users[1])
    if items is not None:
        grid = grid.index_select(1, items[1])
    return grid


def _modulated_grid(p_u, q_i, e_u, e_i, modulation, chunk, impl):
    """[A, B] through ``impl`` (``"fused"`` or ``"reference"``)."""
    if impl == "reference":
        return _reference_grid(p_u, q_i, e_u, e_i, modulation, chunk=chunk)
    # ``chunk`` bounds memory; the fused path's own cache-sized block may be smaller.
    block = fused_grid.auto_chunk(p_u.shape[0], q_i.shape[0], p_u.shape[1], p_u.device)
    block = min(chunk, block) if chunk else block
    return fused_grid.fused_grid_scores(
        p_u, q_i, e_u, e_i, modulation, chunk=block, gemm_dtype=_GRID_DEFAULTS["gemm_dtype"]
    )
