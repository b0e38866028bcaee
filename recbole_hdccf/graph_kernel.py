"""Sparse graph propagation ``A @ X`` on the CPU in torch's CSR layout, with a gradient that costs
what the forward does.

RecBole's LightGCN keeps its normalised adjacency ``A`` as an uncoalesced COO tensor and calls
``torch.sparse.mm(A, X)`` three times per training batch. On the CPU, torch's COO product is slow
and its backward transposes and coalesces ``A`` (a sort of every non-zero) on every call. On ML-1M
(2 million non-zeros, d = 64, one thread) a whole LightGCN training batch took 0.59 s that way
and 0.16 s here (``benchmarks/measure_graph_propagation.py``; ``docs/speed.md``, "LightGCN's
propagation in CSR").

The product is the same mathematics; only the order of the additions within a row differs (MKL's
CSR kernel against torch's COO kernel), so the results agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch


class CsrGraph(NamedTuple):
    """A sparse matrix and its transpose, both CSR (the same object when the matrix is
    symmetric, as a normalised adjacency is)."""

    matrix: torch.Tensor
    transpose: torch.Tensor


def csr_graph(matrix: torch.Tensor) -> CsrGraph:
    """The CSR pair of a 2-d sparse COO ``matrix``, coalesced: duplicate entries are summed, as
    ``torch.sparse.mm`` sums them."""
    if matrix.layout != torch.sparse_coo or matrix.dim() != 2:
        raise ValueError(
            f"csr_graph takes a 2-d sparse COO matrix, got {matrix.layout} {matrix.dim()}-d"
        )
    coalesced = matrix.detach().coalesce()
    transposed = coalesced.t().coalesce()
    symmetric = torch.equal(coalesced.indices(), transposed.indices()) and torch.equal(
        coalesced.values(), transposed.values()
    )
    with warnings.catch_warnings():  # torch's "CSR support is in beta": once a run, no news
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        forward = coalesced.to_sparse_csr()
        return CsrGraph(forward, forward if symmetric else transposed.to_sparse_csr())


class _CsrMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dense: torch.Tensor, graph: CsrGraph) -> torch.Tensor:
        ctx.graph = graph  # constant: no gradient flows to the matrix
        return graph.matrix @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.graph.transpose @ grad, None


def propagate(graph: CsrGraph, dense: torch.Tensor) -> torch.Tensor:
    """``graph.matrix @ dense``: ``[N, N] x [N, d] -> [N, d]``, differentiable in ``dense``."""
    return _CsrMatmul.apply(dense, graph)
