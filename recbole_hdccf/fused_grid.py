"""Fused modulated-similarity grid: ``f(u_a, i_b)`` for every pair, forward and backward.

For the paper's single-linear-layer ``g`` (``ModulationNet(d, hidden=[])``) the grid is

    ``pre[a, c, b] = sum_k (W_x[c, k] e_u[a, k] + W_i[c, k]) e_i[b, k] + (W_u e_u[a])_c + bias_c``
    ``m = sigmoid(pre)``,  ``f[a, b] = sum_c m[a, c, b]^2 p[a, c] q[b, c]``.

The first line is one GEMM per block of users: ``U[a, c, k] = W_x[c, k] e_u[a, k] + W_i[c, k]``
(``[a * d, d]``) times ``e_i^T`` (``[d, B]``), with the per-(user, channel) term added as a column
bias. The item term ``W_i e_i`` rides inside the GEMM and ``e_i * e_u`` is never formed.

The backward pass is hand-written. With ``G = dL/df`` and ``S = dL/dpre = 2 p_c q_c m_c^2
(1 - m_c) G``:

    ``dp[a, c]   = sum_b G m^2 q``              ``dq[b, c] = sum_a G m^2 p``
    ``T[a, c, k] = sum_b S[a, c, b] e_i[b, k]``  (GEMM)
    ``dW_x[c, k] = sum_a T e_u[a, k]``          ``dW_i = sum_a T``
    ``de_u[a, k] = sum_c T W_x[c, k] + (S_a W_u)[a, k]`` with ``S_a[a, c] = sum_b S``
    ``dW_u = S_a^T e_u``                        ``dbias = sum_a S_a``
    ``de_i[b, k] = sum_{a, c} S[a, c, b] U[a, c, k]``  (GEMM)

Blocks of ``chunk`` users keep the live ``[chunk, d, B]`` buffers small (cache-sized on a CPU).
``m`` is kept from the forward pass in block-sized tensors while the whole grid's ``m`` fits in
``KEEP_M_BYTES`` (32 MiB per grid at M=256, P=2, d=64); beyond that, and for a second backward
pass, it is recomputed block by block, so no ``[A, d, B]`` tensor outlives a block. Every
operation is a plain tensor op, so the same code runs on CUDA. ``gemm_dtype=torch.bfloat16`` runs
the three GEMMs in bfloat16 (opt-in: it changes scores by ~1e-3; see docs/speed.md).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# Elements of one [chunk, d, B] buffer: ~1 MiB of float32 per buffer keeps a CPU block in L2.
CPU_BLOCK_ELEMENTS = 2**18
# On an accelerator the block only bounds memory (two live buffers of this many elements).
DEVICE_BLOCK_ELEMENTS = 2**25
# Largest ``m`` (A * d * B elements) kept from forward to backward; above it, recompute.
KEEP_M_BYTES = 2**28


def auto_chunk(n_rows: int, n_cols: int, dim: int, device: torch.device) -> int:
    """Users per block so one ``[chunk, dim, n_cols]`` buffer holds about a block's elements."""
    budget = CPU_BLOCK_ELEMENTS if device.type == "cpu" else DEVICE_BLOCK_ELEMENTS
    return max(1, min(n_rows, budget // max(1, dim * n_cols)))


def single_layer_params(modulation) -> tuple[torch.Tensor, ...]:
    """``(W_i, bias, W_u, W_x)`` of a ``ModulationNet`` with no hidden layer, each [d, d] / [d]."""
    return (
        modulation.item_proj.weight,
        modulation.item_proj.bias,
        modulation.user_proj.weight,
        modulation.cross_proj.weight,
    )


def is_single_layer(modulation) -> bool:
    """Whether ``modulation`` is ``sigmoid(W_i e_i + b + W_u e_u + W_x (e_i * e_u))``: a
    ``ModulationNet`` without hidden layers."""
    try:
        return (
            len(modulation.rest) == 0
            and modulation.item_proj.bias is not None
            and modulation.user_proj.bias is None
            and modulation.cross_proj.bias is None
        )
    except (AttributeError, TypeError):
        return False


def cross_weights(e_u: torch.Tensor, w_cross: torch.Tensor, w_item: torch.Tensor) -> torch.Tensor:
    """``U[a, c, k] = W_x[c, k] e_u[a, k] + W_i[c, k]``: ``e_u`` [a, d], weights [d, d] -> [a, d, d]."""
    return torch.addcmul(w_item, e_u.unsqueeze(1), w_cross)


def preactivation(
    u: torch.Tensor,
    e_i_t: torch.Tensor,
    row_bias: torch.Tensor,
    out: torch.Tensor,
    gemm_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``pre = U e_i^T + row_bias`` into ``out``.

    ``u`` [a, d, d]; ``e_i_t`` [d, B] (already in ``gemm_dtype``); ``row_bias`` [a, d];
    ``out`` [a * d, B] -> ``out`` viewed [a, d, B]."""
    a, d, _ = u.shape
    rows = u.reshape(a * d, d)
    if gemm_dtype is not None and gemm_dtype != out.dtype:
        out.copy_(rows.to(gemm_dtype) @ e_i_t)
        out.add_(row_bias.reshape(a * d, 1))
    else:
        torch.addmm(row_bias.reshape(a * d, 1), rows, e_i_t, out=out)
    return out.view(a, d, -1)


def _blocks(n_rows: int, chunk: int):
    for start in range(0, n_rows, chunk):
        yield slice(start, min(start + chunk, n_rows))


def grid_forward(p, q, e_u, e_i, weights, chunk, gemm_dtype=None, keep_m=False):
    """``(f [A, B], m_blocks)``: ``p``, ``e_u`` [A, d]; ``q``, ``e_i`` [B, d]; ``weights =
    (W_i, bias, W_u, W_x)``. With ``keep_m``, ``m_blocks`` lists each block's ``m`` [a, d, B]
    (separate block-sized tensors: on a CPU one fresh [A, d, B] allocation costs more in page
    faults than the GEMM it saves); else ``None``."""
    w_item, bias, w_user, w_cross = weights
    n_rows, dim = p.shape
    n_cols = q.shape[0]
    out = p.new_empty(n_rows, n_cols)
    if n_rows == 0 or n_cols == 0:
        return out.zero_(), None
    e_i_t = e_i.T.to(gemm_dtype or e_i.dtype)
    q_t = q.T.contiguous()  # [d, B]
    row_bias = torch.addmm(bias, e_u, w_user.T)  # [A, d]
    buf = p.new_empty(min(chunk, n_rows) * dim, n_cols)
    m_blocks = [] if keep_m else None
    for sl in _blocks(n_rows, chunk):
        a = sl.stop - sl.start
        u = cross_weights(e_u[sl], w_cross, w_item)
        if keep_m:
            m = preactivation(u, e_i_t, row_bias[sl], p.new_empty(a * dim, n_cols), gemm_dtype)
            m_blocks.append(m.sigmoid_())
            m2q = torch.mul(m, m, out=buf[: a * dim].view(m.shape))
        else:
            m2q = preactivation(u, e_i_t, row_bias[sl], buf[: a * dim], gemm_dtype).sigmoid_()
            m2q.mul_(m2q)
        m2q.mul_(q_t)  # m^2 q
        torch.bmm(p[sl].unsqueeze(1), m2q, out=out[sl].unsqueeze(1))
    return out, m_blocks


def grid_backward(grad, p, q, e_u, e_i, weights, chunk, gemm_dtype=None, m_blocks=None):
    """Gradients of ``sum(grad * f)`` w.r.t. ``(p, q, e_u, e_i, W_i, bias, W_u, W_x)``; ``grad``
    [A, B], the rest as in :func:`grid_forward`. ``m`` comes from ``m_blocks`` (the forward's,
    same ``chunk``) or is recomputed block by block."""
    w_item, bias, w_user, w_cross = weights
    n_rows, dim = p.shape
    n_cols = q.shape[0]
    grads = [torch.zeros_like(t) for t in (p, q, e_u, e_i, *weights)]
    d_p, d_q, d_eu, d_ei, d_wi, d_b, d_wu, d_wx = grads
    if n_rows == 0 or n_cols == 0:
        return grads
    e_i_gemm = e_i.to(gemm_dtype or e_i.dtype)
    e_i_t = e_i_gemm.T
    q_t = q.T.contiguous()  # [d, B]
    d_q_t, d_ei_t = q.new_zeros(dim, n_cols), q.new_zeros(dim, n_cols)  # dq^T, de_i^T
    row_bias = torch.addmm(bias, e_u, w_user.T)
    block = min(chunk, n_rows) * dim
    buf_m, buf_s, buf_w = (p.new_empty(block, n_cols) for _ in range(3))
    s_rows = p.new_empty(n_rows, dim)  # S_a
    for k, sl in enumerate(_blocks(n_rows, chunk)):
        a = sl.stop - sl.start
        shape = (a, dim, n_cols)
        e_u_blk, two_p = e_u[sl], 2.0 * p[sl]
        u = cross_weights(e_u_blk, w_cross, w_item)
        if m_blocks is None:
            m = preactivation(u, e_i_t, row_bias[sl], buf_m[: a * dim], gemm_dtype).sigmoid_()
        else:
            m = m_blocks[k]
        z = torch.mul(m, grad[sl].unsqueeze(1), out=buf_s[: a * dim].view(shape))
        z.mul_(m)  # G m^2
        d_q_t.add_(torch.mul(z, p[sl].unsqueeze(-1), out=buf_w[: a * dim].view(shape)).sum(0))
        z.mul_(q_t)  # G m^2 q
        d_p[sl] = z.sum(-1)
        z.addcmul_(z, m, value=-1.0)  # G m^2 q (1 - m) = S / (2 p)
        s_rows[sl] = z.sum(-1).mul_(two_p)
        z_rows = z.view(a * dim, n_cols)
        z_gemm = z_rows if gemm_dtype is None else z_rows.to(gemm_dtype)
        t = torch.mm(z_gemm, e_i_gemm).view(a, dim, dim).to(p.dtype).mul_(two_p.unsqueeze(-1))
        d_wi.add_(t.sum(0))
        d_wx.add_((t * e_u_blk.unsqueeze(1)).sum(0))
        d_eu[sl] = (t * w_cross).sum(1)
        u.mul_(two_p.unsqueeze(-1))  # S = 2 p z: fold 2 p into U instead of into z
        u_rows = u.view(a * dim, dim)
        if gemm_dtype is None:
            d_ei_t.addmm_(u_rows.T, z_rows)
        else:
            d_ei_t.add_(torch.mm(u_rows.T.to(gemm_dtype), z_gemm))
    d_q.copy_(d_q_t.T)
    d_ei.copy_(d_ei_t.T)
    d_eu.addmm_(s_rows, w_user)
    d_wu.copy_(s_rows.T @ e_u)
    d_b.copy_(s_rows.sum(0))
    return grads


def _no_autocast(device: torch.device):
    """Autocast off: under RecBole's ``enable_amp`` the kernel still runs in its inputs' dtype
    (``gemm_dtype`` is its own precision switch)."""
    return torch.autocast(device_type=device.type, enabled=False)


class FusedModulatedGrid(torch.autograd.Function):
    """``f`` [A, B] for the single-layer modulation, with a hand-written backward.

    ``apply(p, q, e_u, e_i, W_i, bias, W_u, W_x, chunk, keep_m, gemm_dtype)``: ``p``, ``e_u``
    [A, d]; ``q``, ``e_i`` [B, d]; ``W_*`` [d, d] (``nn.Linear`` weights, out x in); ``bias`` [d].
    ``keep_m``: keep ``m`` (``A * d * B`` floats, in block-sized tensors) for the backward pass,
    which then skips its recomputation (a GEMM and a sigmoid per block); else nothing
    ``[A, d, B]``-sized outlives a block. The backward pass frees what was kept; a second
    backward pass (``retain_graph``) recomputes."""

    @staticmethod
    def forward(ctx, p, q, e_u, e_i, w_item, bias, w_user, w_cross, chunk, keep_m, gemm_dtype):
        weights = (w_item, bias, w_user, w_cross)
        keep_m = keep_m and any(ctx.needs_input_grad)
        with _no_autocast(p.device):  # the blocks' out= buffers keep the inputs' dtype
            out, ctx.m_blocks = grid_forward(p, q, e_u, e_i, weights, chunk, gemm_dtype, keep_m)
        ctx.save_for_backward(p, q, e_u, e_i, *weights)
        ctx.chunk, ctx.gemm_dtype = chunk, gemm_dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        p, q, e_u, e_i, *weights = ctx.saved_tensors
        m_blocks, ctx.m_blocks = ctx.m_blocks, None
        with _no_autocast(p.device):
            grads = grid_backward(
                grad.to(p.dtype).contiguous(),
                p,
                q,
                e_u,
                e_i,
                weights,
                ctx.chunk,
                ctx.gemm_dtype,
                m_blocks,
            )
        grads = [g if need else None for g, need in zip(grads, ctx.needs_input_grad, strict=False)]
        return (*grads, None, None, None)


def fused_grid_scores(
    p_u, q_i, e_u, e_i, modulation, chunk=None, keep_m=None, gemm_dtype=None
) -> torch.Tensor:
    """``f`` for every (user, item) pair with a single-layer ``modulation``: ``p_u``, ``e_u``
    [A, d]; ``q_i``, ``e_i`` [B, d] -> [A, B].

    ``chunk``: users per block (default :func:`auto_chunk`). ``keep_m``: keep ``m`` for the
    backward pass (default: when it takes at most ``KEEP_M_BYTES``; else recompute).
    ``gemm_dtype``: run the GEMMs in this dtype (``torch.bfloat16``; opt-in)."""
    if not is_single_layer(modulation):
        raise ValueError("the fused grid needs a ModulationNet without hidden layers")
    n_rows, dim = p_u.shape
    n_cols = q_i.shape[0]
    dtype = p_u.dtype
    weights = tuple(w.to(dtype) for w in single_layer_params(modulation))
    chunk = int(chunk or auto_chunk(n_rows, n_cols, dim, p_u.device))
    if keep_m is None:
        keep_m = n_rows * dim * n_cols * p_u.element_size() <= KEEP_M_BYTES
    params = (p_u, q_i, e_u, e_i, *weights)
    keep_m = keep_m and torch.is_grad_enabled() and any(t.requires_grad for t in params)
    tensors = tuple(t.contiguous() for t in (p_u, q_i, e_u, e_i))
    return FusedModulatedGrid.apply(*tensors, *weights, chunk, bool(keep_m), gemm_dtype)
