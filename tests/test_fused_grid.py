"""The fused modulated grid (``recbole_hdccf.fused_grid``) against the eager reference.

Values and gradients w.r.t. every input and every ``ModulationNet`` parameter must match:
float64 to 1e-10, float32 to ~1e-5 relative; the opt-in bfloat16 GEMMs to 3e-2 absolute (scores
lie in [-1, 1] for normalised inputs). Also: ``gradcheck``, block sizes that do not divide the
number of users, the dispatch rules of ``similarity.grid_scores``, exact deduplication of
repeated rows, and HDCCF's whole loss for every ablation through both implementations.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT
from model_mixin import build_run, first_training_batch, total_loss

from recbole_hdccf import fused_grid
from recbole_hdccf.settings import ABLATIONS
from recbole_hdccf.similarity import (
    ModulationNet,
    grid_impl,
    grid_scores,
    resolve_impl,
    unique_rows,
)

# (A, B, d, chunk): A = 1 and B = 1, blocks that do not divide A, a block larger than A.
SHAPES = [
    (1, 1, 4, None),
    (1, 7, 5, None),
    (6, 1, 3, 4),
    (5, 9, 8, 2),
    (13, 11, 6, 5),
    (7, 6, 16, 64),
]


def make_inputs(n_rows, n_cols, dim, dtype=torch.float64, seed=0, normalise=True):
    """``(p, q, e_u, e_i, modulation)`` with leaf tensors that require grad."""
    gen = torch.Generator().manual_seed(seed)
    p, q, e_u, e_i = (
        torch.randn(n, dim, generator=gen, dtype=dtype) for n in (n_rows, n_cols, n_rows, n_cols)
    )
    if normalise:
        p, q = F.normalize(p, dim=-1), F.normalize(q, dim=-1)
    torch.manual_seed(seed)
    modulation = ModulationNet(dim).to(dtype)
    with torch.no_grad():  # non-trivial weights of every block, bias included
        for param in modulation.parameters():
            param.normal_(0.0, 0.5, generator=gen)
    leaves = [t.clone().requires_grad_() for t in (p, q, e_u, e_i)]
    return (*leaves, modulation)


def values_and_grads(fn, inputs, seed=1):
    """``fn(p, q, e_u, e_i, modulation)`` and the grads of a random linear functional of it
    w.r.t. the four inputs and every modulation parameter."""
    *tensors, modulation = inputs
    for t in tensors:
        t.grad = None
    modulation.zero_grad(set_to_none=True)
    out = fn(*tensors, modulation)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    (out * weights).sum().backward()
    grads = [t.grad for t in tensors] + [p.grad for p in modulation.parameters()]
    return out.detach(), [g.detach().clone() for g in grads]


def reference(p, q, e_u, e_i, modulation):
    return grid_scores(p, q, e_u, e_i, modulation, impl="reference")


def fused(chunk=None, gemm_dtype=None, keep_m=None):
    def fn(p, q, e_u, e_i, modulation):
        return fused_grid.fused_grid_scores(
            p, q, e_u, e_i, modulation, chunk=chunk, keep_m=keep_m, gemm_dtype=gemm_dtype
        )

    return fn


def assert_close_all(actual, expected, rtol, atol):
    (value_a, grads_a), (value_e, grads_e) = actual, expected
    torch.testing.assert_close(value_a, value_e, rtol=rtol, atol=atol)
    names = ["p", "q", "e_u", "e_i", "W_i", "bias", "W_u", "W_x"]
    assert len(grads_a) == len(names)
    for name, g_a, g_e in zip(names, grads_a, grads_e, strict=True):
        assert g_a is not None, name
        scale = g_e.abs().max().clamp_min(1.0)
        torch.testing.assert_close(g_a / scale, g_e / scale, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("keep_m", [True, False], ids=["keep", "recompute"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float64_values_and_gradients_match_reference(shape, keep_m):
    n_rows, n_cols, dim, chunk = shape
    inputs = make_inputs(n_rows, n_cols, dim)
    expected = values_and_grads(reference, inputs)
    actual = values_and_grads(fused(chunk, keep_m=keep_m), inputs)
    assert_close_all(actual, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("keep_m", [True, False], ids=["keep", "recompute"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_float32_values_and_gradients_match_reference(shape, keep_m):
    n_rows, n_cols, dim, chunk = shape
    inputs = make_inputs(n_rows, n_cols, dim, dtype=torch.float32)
    expected = values_and_grads(reference, inputs)
    actual = values_and_grads(fused(chunk, keep_m=keep_m), inputs)
    assert_close_all(actual, expected, rtol=1e-5, atol=1e-5)


def test_second_backward_with_retain_graph_recomputes():
    """The kept ``m`` is freed by the first backward pass; a second one recomputes it."""
    p, q, e_u, e_i, modulation = make_inputs(6, 5, 4)
    out = fused(chunk=4, keep_m=True)(p, q, e_u, e_i, modulation)
    out.sum().backward(retain_graph=True)
    first = [t.grad.clone() for t in (p, q, e_u, e_i)]
    out.sum().backward()
    for g_first, t in zip(first, (p, q, e_u, e_i), strict=True):
        torch.testing.assert_close(t.grad, 2 * g_first, rtol=1e-12, atol=1e-12)


def test_no_grad_forward_keeps_nothing():
    p, q, e_u, e_i, modulation = make_inputs(6, 5, 4)
    with torch.no_grad():
        out = fused(chunk=4, keep_m=True)(p, q, e_u, e_i, modulation)
    assert out.grad_fn is None
    expected = reference(p, q, e_u, e_i, modulation)
    torch.testing.assert_close(out, expected.detach(), rtol=1e-10, atol=1e-10)


def test_float32_realistic_shape_matches_float64_reference():
    """One training-sized grid (d = 64): fused float32 against the float64 reference."""
    inputs = make_inputs(40, 96, 64, dtype=torch.float32)
    inputs64 = [t.detach().double().requires_grad_() for t in inputs[:4]]
    inputs64.append(ModulationNet(64).double())
    inputs64[-1].load_state_dict(inputs[-1].state_dict())
    expected = values_and_grads(reference, inputs64)
    actual = values_and_grads(fused(chunk=7), inputs)
    actual = (actual[0].double(), [g.double() for g in actual[1]])
    assert_close_all(actual, expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_gemms_stay_close():
    """The opt-in bfloat16 GEMMs: scores within 3e-2 of float32, gradients within 5e-2 of
    the largest gradient entry (looser: bfloat16 keeps 8 significant bits)."""
    inputs = make_inputs(24, 40, 64, dtype=torch.float32)
    value_e, grads_e = values_and_grads(reference, inputs)
    value_a, grads_a = values_and_grads(fused(chunk=5, gemm_dtype=torch.bfloat16), inputs)
    assert (value_a - value_e).abs().max() < 3e-2
    for g_a, g_e in zip(grads_a, grads_e, strict=True):
        assert (g_a - g_e).abs().max() <= 5e-2 * g_e.abs().max().clamp_min(1e-6)


def test_gradcheck_small_float64():
    p, q, e_u, e_i, modulation = make_inputs(3, 4, 3, seed=3)
    weights = [
        w.detach().clone().requires_grad_() for w in fused_grid.single_layer_params(modulation)
    ]

    for keep_m in (True, False):

        def fn(p, q, e_u, e_i, w_item, bias, w_user, w_cross, keep_m=keep_m):
            return fused_grid.FusedModulatedGrid.apply(
                p, q, e_u, e_i, w_item, bias, w_user, w_cross, 2, keep_m, None
            )

        assert torch.autograd.gradcheck(fn, (p, q, e_u, e_i, *weights), eps=1e-6, atol=1e-8)


def test_only_needed_gradients_are_returned():
    p, q, e_u, e_i, modulation = make_inputs(4, 5, 3)
    q.requires_grad_(False)
    for param in modulation.parameters():
        param.requires_grad_(False)
    fused()(p, q, e_u, e_i, modulation).sum().backward()
    assert q.grad is None and p.grad is not None and e_i.grad is not None
    assert all(param.grad is None for param in modulation.parameters())


def test_autocast_does_not_change_the_fused_path():
    """Under RecBole's ``enable_amp`` (CPU autocast to bfloat16) the kernel keeps float32."""
    p, q, e_u, e_i, modulation = make_inputs(5, 6, 4, dtype=torch.float32)
    expected = values_and_grads(fused(chunk=2), (p, q, e_u, e_i, modulation))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = values_and_grads(fused(chunk=2), (p, q, e_u, e_i, modulation))
    assert actual[0].dtype == torch.float32
    assert_close_all(actual, expected, rtol=1e-6, atol=1e-6)


def test_empty_grid():
    p, q, e_u, e_i, modulation = make_inputs(3, 4, 3)
    out = fused()(p[:0], q, e_u[:0], e_i, modulation)
    assert out.shape == (0, 4)


# ------------------------------------------------------------------------------- dispatch
def test_auto_uses_fused_for_single_layer(monkeypatch):
    calls = []
    original = fused_grid.fused_grid_scores

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(fused_grid, "fused_grid_scores", spy)
    p, q, e_u, e_i, modulation = make_inputs(4, 5, 3)
    grid_scores(p, q, e_u, e_i, modulation)
    assert calls == [1]
    with grid_impl("reference"):
        grid_scores(p, q, e_u, e_i, modulation)
    assert calls == [1]


def test_auto_picks_by_device():
    """auto: fused with dedup on CPU; the reference path without dedup on a GPU, where the
    measured step is launch-bound (docs/speed.md). Explicit choices are kept."""
    single, hidden = ModulationNet(4), ModulationNet(4, hidden=[3])
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_impl("auto", None, cpu, single) == ("fused", True)
    assert resolve_impl("auto", None, cpu, hidden) == ("reference", True)
    assert resolve_impl("auto", None, cuda, single) == ("reference", False)
    assert resolve_impl("fused", None, cuda, single) == ("fused", True)
    assert resolve_impl("reference", None, cpu, single) == ("reference", False)
    assert resolve_impl("auto", True, cuda, single) == ("reference", True)
    with pytest.raises(ValueError, match="choose one of"):
        resolve_impl("fast", None, cpu, single)


def test_hidden_layers_use_the_reference_path():
    p, q, e_u, e_i, _ = make_inputs(5, 6, 4)
    modulation = ModulationNet(4, hidden=[8]).double()
    expected = grid_scores(p, q, e_u, e_i, modulation, impl="reference")
    torch.testing.assert_close(grid_scores(p, q, e_u, e_i, modulation), expected)
    with pytest.raises(ValueError, match="hidden"):
        grid_scores(p, q, e_u, e_i, modulation, impl="fused")


def test_is_single_layer():
    assert fused_grid.is_single_layer(ModulationNet(4))
    assert not fused_grid.is_single_layer(ModulationNet(4, hidden=[3]))
    assert not fused_grid.is_single_layer(None)
    assert not fused_grid.is_single_layer(torch.nn.Linear(4, 4))


def test_unmodulated_grid_is_a_matmul():
    p, q, *_ = make_inputs(5, 6, 4)
    for impl in ("auto", "fused", "reference"):
        torch.testing.assert_close(grid_scores(p, q, impl=impl), p @ q.T)


def test_unknown_impl_is_rejected():
    p, q, e_u, e_i, modulation = make_inputs(2, 2, 2)
    with pytest.raises(ValueError, match="impl"):
        grid_scores(p, q, e_u, e_i, modulation, impl="fast")
    with pytest.raises(ValueError, match="impl"), grid_impl("fast"):
        pass


def test_auto_chunk_bounds_the_block():
    cpu = torch.device("cpu")
    assert fused_grid.auto_chunk(256, 512, 64, cpu) == fused_grid.CPU_BLOCK_ELEMENTS // (64 * 512)
    assert fused_grid.auto_chunk(3, 10**7, 64, cpu) == 1
    assert fused_grid.auto_chunk(3, 4, 2, cpu) == 3


# ------------------------------------------------------------------------------- dedup
def test_unique_rows_groups_exact_duplicates():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [5.0, 6.0], [3.0, 4.0]])
    first, inverse = unique_rows(x)
    assert torch.equal(x[first][inverse], x)
    assert sorted(first.tolist()) == [0, 1, 3]
    assert unique_rows(torch.eye(3)) is None
    assert unique_rows(x[:1]) is None


def test_unique_rows_does_not_merge_rows_differing_in_one_bit():
    x = torch.ones(3, 4)
    x[1, 2] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    first, inverse = unique_rows(x)
    assert inverse.tolist()[0] == inverse.tolist()[2] != inverse.tolist()[1]


@pytest.mark.parametrize("impl", ["fused", "auto"])
def test_dedup_keeps_values_and_table_gradients(impl):
    """A pool with repeated ids: same grid, same gradients of the embedding tables."""
    gen = torch.Generator().manual_seed(5)
    dim = 8
    tables = [torch.randn(n, dim, generator=gen, dtype=torch.float64) for n in (6, 6, 9, 9)]
    users = torch.tensor([0, 1, 1, 4, 0, 5, 1])
    items = torch.tensor([2, 2, 7, 0, 7, 7, 3, 2, 8, 1])
    modulation = ModulationNet(dim).double()
    weights = torch.randn(len(users), len(items), generator=gen, dtype=torch.float64)

    def run(**kwargs):
        leaves = [t.clone().requires_grad_() for t in tables]
        p = F.normalize(leaves[0][users], dim=-1)
        e_u = leaves[1][users]
        q = F.normalize(leaves[2][items], dim=-1)
        e_i = leaves[3][items]
        modulation.zero_grad(set_to_none=True)
        grid = grid_scores(p, q, e_u, e_i, modulation, **kwargs)
        (grid * weights).sum().backward()
        grads = [t.grad for t in leaves] + [w.grad for w in modulation.parameters()]
        return grid.detach(), grads

    expected = run(impl="reference")
    actual = run(impl=impl, dedup=True)
    assert_close_all(actual, expected, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("modulated", [True, False])
def test_small_loss_matches_reference(modulated):
    """A contrastive-style loss (logsumexp over rows and columns) through both paths."""
    p, q, e_u, e_i, modulation = make_inputs(9, 14, 6, dtype=torch.float32, seed=7)
    modulation = modulation if modulated else None
    params = [p, q, e_u, e_i, *(modulation.parameters() if modulated else [])]

    def loss_and_grads(impl):
        for t in params:
            t.grad = None
        grid = grid_scores(p, q, e_u, e_i, modulation, chunk=4, impl=impl) / 0.1
        loss = grid.logsumexp(-1).mean() + grid.logsumexp(0).mean() - grid.diagonal().mean()
        loss.backward()
        return loss.detach(), [t.grad.clone() if t.grad is not None else None for t in params]

    loss_r, grads_r = loss_and_grads("reference")
    loss_f, grads_f = loss_and_grads("fused" if modulated else "auto")
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-5, atol=1e-6)
    for g_f, g_r in zip(grads_f, grads_r, strict=True):
        if g_r is None:
            assert g_f is None
        else:
            torch.testing.assert_close(g_f, g_r, rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_hdccf(tmp_path_factory, tiny_data_path):
    """A real HDCCF (tiny synthetic dataset, d = 16) and its first training batch."""
    from conftest import isolated, restored_root_logger, small_config

    folder = tmp_path_factory.mktemp("fused_grid_run")
    with restored_root_logger(), isolated(folder):
        run = build_run("HDCCF", small_config(tiny_data_path, folder / "saved"))
        batch = first_training_batch(run)
    run.model.double()
    return run.model, batch


@pytest.mark.parametrize("ablation", [None, *ABLATIONS])
def test_hdccf_loss_matches_reference_for_every_ablation(tiny_hdccf, ablation):
    """HDCCF's whole ``calculate_loss`` (float64) through the fused and reference grids."""
    model, batch = tiny_hdccf
    original = model.settings
    model.settings = dataclasses.replace(original, ablation=ablation).resolved()
    saved_modulation = model.modulation
    if not model.settings.modulation:
        model.modulation = None
    try:

        def loss_and_grads(impl):
            model.zero_grad(set_to_none=True)
            with grid_impl(impl):
                loss = total_loss(model.calculate_loss(batch))
            loss.backward()
            return loss.detach(), {
                name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None
            }

        loss_r, grads_r = loss_and_grads("reference")
        loss_f, grads_f = loss_and_grads("auto")
    finally:
        model.settings, model.modulation = original, saved_modulation
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-10, atol=1e-10)
    assert grads_f.keys() == grads_r.keys() and grads_r
    for name, grad in grads_r.items():
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.slow
@pytest.mark.skipif(
    not (REPO_ROOT.parent / "shared/datasets/ml-1m/ml-1m.inter").exists(),
    reason="ml-1m atomic files not found in ../shared/datasets",
)
def test_bench_speed_quick_smoke(capsys):
    """``python -m recbole_hdccf.bench_speed --quick`` runs end to end (about a minute)."""
    from recbole_hdccf import bench_speed

    assert bench_speed.main(["--quick", "--impl", "fused", "--steps", "2"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("SUMMARY fused: step")
