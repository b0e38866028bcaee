"""recbole_hdccf/graph_kernel.py: the CSR product and its gradient, against dense arithmetic."""

from __future__ import annotations

import pytest
import torch

from recbole_hdccf.graph_kernel import csr_graph, propagate


def _coo(dense: torch.Tensor) -> torch.Tensor:
    """An uncoalesced COO copy of ``dense``, as RecBole builds its adjacency."""
    rows, cols = dense.nonzero(as_tuple=True)
    indices = torch.stack([rows, cols])
    return torch.sparse_coo_tensor(indices, dense[rows, cols], dense.shape, check_invariants=True)


def test_product_and_gradient_by_hand():
    # A = [[0, 2], [1, 0]] (not symmetric), X = [[1, 3], [5, 7]]
    matrix = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    dense = torch.tensor([[1.0, 3.0], [5.0, 7.0]], requires_grad=True)
    graph = csr_graph(_coo(matrix))
    assert graph.transpose is not graph.matrix
    out = propagate(graph, dense)
    assert torch.equal(out, torch.tensor([[10.0, 14.0], [1.0, 3.0]]))
    # d/dX sum(W * (A X)) = A^T W; with W = [[1, 0], [0, 1]]: A^T W = [[0, 1], [2, 0]]
    (out * torch.eye(2)).sum().backward()
    assert torch.equal(dense.grad, torch.tensor([[0.0, 1.0], [2.0, 0.0]]))


def test_gradcheck_on_a_random_non_symmetric_matrix():
    torch.manual_seed(0)
    matrix = torch.rand(7, 7, dtype=torch.float64) * (torch.rand(7, 7) < 0.4)
    graph = csr_graph(_coo(matrix))
    dense = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: propagate(graph, x), (dense,))
    assert torch.allclose(propagate(graph, dense), matrix @ dense)


def test_symmetric_matrix_shares_one_csr_and_matches_torch_sparse_mm():
    torch.manual_seed(1)
    half = torch.rand(40, 40) * (torch.rand(40, 40) < 0.2)
    matrix = half + half.t()
    coo = _coo(matrix)
    graph = csr_graph(coo)
    assert graph.transpose is graph.matrix
    dense = torch.randn(40, 8, requires_grad=True)
    reference = dense.detach().clone().requires_grad_(True)
    weights = torch.randn(40, 8)
    (propagate(graph, propagate(graph, dense)) * weights).sum().backward()
    (torch.sparse.mm(coo, torch.sparse.mm(coo, reference)) * weights).sum().backward()
    torch.testing.assert_close(dense.grad, reference.grad, rtol=1e-5, atol=1e-6)


def test_duplicate_entries_are_summed_as_torch_sparse_mm_sums_them():
    indices = torch.tensor([[0, 0, 1], [1, 1, 0]])
    coo = torch.sparse_coo_tensor(
        indices, torch.tensor([1.0, 2.0, 3.0]), (2, 2), check_invariants=True
    )
    dense = torch.tensor([[1.0], [10.0]])
    assert torch.equal(propagate(csr_graph(coo), dense), torch.sparse.mm(coo, dense))
    assert torch.equal(propagate(csr_graph(coo), dense), torch.tensor([[30.0], [3.0]]))


def test_a_dense_matrix_is_refused_with_what_it_takes():
    with pytest.raises(ValueError, match="2-d sparse COO"):
        csr_graph(torch.eye(3))
