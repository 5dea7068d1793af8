"""Fused feed-forward block of a pruned BERT layer: gelu(x @ w1.T + b1) * unit_scale @ w2.T + b2.

Holds:
  * ``_linear_kernel``: one tiled matmul ``A @ B (+ bias)`` with optional fusions, used twice:
    the up-projection with bias + exact (erf) GELU in the epilogue, and the down-projection
    with the per-unit gate ``unit_scale`` applied to the intermediate columns as they are loaded.
  * launchers, ``_FFNFunction`` and the front door ``ffn``.
  * ``reference_ffn``: the same math in plain PyTorch (CPU fallback and test oracle).

The forward is two Triton launches; the backward is plain PyTorch (cuBLAS matmuls plus
``aten.gelu_backward``) on the pre-activation saved by the up-projection kernel, so nothing is
recomputed with a matmul. Any intermediate width works, including odd widths and 0.
"""

import torch
import torch.nn.functional as F

from ._utils import (
    SUPPORTED_DTYPES,
    dot_dtype,
    dot_precision,
    ensure_contiguous,
    matmul_config,
    tl,
    triton,
    use_triton,
)


@triton.jit
def _linear_kernel(
    A, B, C, Bias, KScale, PreAct,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    HAS_BIAS: tl.constexpr, HAS_KSCALE: tl.constexpr, GELU: tl.constexpr, STORE_PREACT: tl.constexpr,
    DOT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    """C = epilogue((A * kscale[None, :]) @ B + bias) for A (M, K), B (K, N), fp32 accumulation."""
    # Grouped launch order: GROUP_M row tiles walk the column tiles together, so the B tiles
    # they share are still in L2 when the next row tile needs them.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    n_ok = offs_n < N
    a_ptrs = A + offs_m[:, None].to(tl.int64) * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = B + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + offs_k) < K
        a = tl.load(a_ptrs, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if HAS_KSCALE:  # gate the intermediate columns in the operand's own precision, as torch would
            s = tl.load(KScale + k0 + offs_k, mask=k_ok, other=0.0).to(tl.float32)
            a = (a.to(tl.float32) * s[None, :]).to(A.dtype.element_ty)
        acc = tl.dot(a.to(DOT), b.to(DOT), acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    if HAS_BIAS:
        acc += tl.load(Bias + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    c_offs = offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :] * stride_cn
    c_mask = m_ok[:, None] & n_ok[None, :]
    if STORE_PREACT:  # the backward needs gelu'(pre-activation)
        tl.store(PreAct + c_offs, acc.to(PreAct.dtype.element_ty), mask=c_mask)
    if GELU:  # exact erf GELU, BERT's "gelu"
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))  # x * Phi(x)
    tl.store(C + c_offs, acc.to(C.dtype.element_ty), mask=c_mask)


def _linear(a, weight, bias, k_scale=None, gelu=False, store_preact=False):
    """a (M, K) @ weight.T (+ bias) with weight (N, K) in nn.Linear layout.

    Returns (out (M, N), pre-activation (M, N) or None). K == 0 is fine (bias only).
    """
    M, K = a.shape
    N = weight.shape[0]
    out = torch.empty((M, N), dtype=a.dtype, device=a.device)
    pre = torch.empty_like(out) if store_preact else None
    if out.numel() == 0:
        return out, pre
    cfg = matmul_config(M, N, K, a.dtype)
    grid = (triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
    _linear_kernel[grid](
        a, weight, out, bias, k_scale, pre,
        M, N, K,
        a.stride(0), a.stride(1), weight.stride(1), weight.stride(0),  # B = weight.T, no copy
        out.stride(0), out.stride(1),
        HAS_BIAS=bias is not None, HAS_KSCALE=k_scale is not None, GELU=gelu, STORE_PREACT=store_preact,
        DOT=dot_dtype(a.dtype), PRECISION=dot_precision(a.dtype), **cfg,
    )
    return out, pre


class _FFNFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, unit_scale):
        D = x.shape[-1]
        x2 = x.reshape(-1, D)  # (M, D)
        training = any(ctx.needs_input_grad)
        gate = unit_scale.contiguous() if unit_scale is not None else None  # indexed densely
        h, pre = _linear(x2, w1, b1, gelu=True, store_preact=training)  # (M, F)
        if h.shape[1] == 0:  # no intermediate units left: the block is just its output bias
            y = x2.new_zeros((x2.shape[0], w2.shape[0])) if b2 is None else b2.expand(x2.shape[0], -1).clone()
        else:
            y, _ = _linear(h, w2, b2, k_scale=gate)  # (M, D)
        if training:
            ctx.save_for_backward(x2, w1, w2, pre, gate)
            ctx.has_b1, ctx.has_b2 = b1 is not None, b2 is not None
        return y.view(*x.shape[:-1], w2.shape[0])

    @staticmethod
    @ensure_contiguous
    def backward(ctx, dy):
        x2, w1, w2, pre, gate = ctx.saved_tensors
        need_x, need_w1, need_b1, need_w2, need_b2, need_gate = ctx.needs_input_grad
        x_shape = (*dy.shape[:-1], x2.shape[1])
        dy = dy.view(-1, dy.shape[-1])  # (M, D)
        h = F.gelu(pre)  # (M, F), cheap elementwise recompute from the saved pre-activation
        h_gated = h * gate.to(h.dtype) if gate is not None else h

        dx = dw1 = db1 = dw2 = db2 = dgate = None
        if need_w2:
            dw2 = dy.t() @ h_gated  # (D, F)
        if need_b2 and ctx.has_b2:
            db2 = dy.sum(0)
        if need_x or need_w1 or need_b1 or need_gate:
            dh_gated = dy @ w2  # (M, F)
            if need_gate:
                dgate = (dh_gated.float() * h.float()).sum(0).to(gate.dtype)
            dh = dh_gated * gate.to(dh_gated.dtype) if gate is not None else dh_gated
            dpre = torch.ops.aten.gelu_backward(dh, pre)  # exact-erf GELU derivative
            if need_x:
                dx = (dpre @ w1).view(x_shape)
            if need_w1:
                dw1 = dpre.t() @ x2  # (F, D)
            if need_b1 and ctx.has_b1:
                db1 = dpre.sum(0)
        return dx, dw1, db1, dw2, db2, dgate


def ffn(x, w1, b1, w2, b2, unit_scale=None):
    """gelu(x @ w1.T + b1) * unit_scale @ w2.T + b2 over x (..., D).

    w1 (F, D), b1 (F,), w2 (D, F), b2 (D,) in nn.Linear layout; unit_scale (F,) per-unit gate
    (differentiable) or None; biases may be None. Exact erf GELU. Runs the Triton kernels when
    ``use_triton(x)``, else ``reference_ffn``.
    """
    if not use_triton(x) or x.dtype not in SUPPORTED_DTYPES:
        return reference_ffn(x, w1, b1, w2, b2, unit_scale)
    # Casts happen outside the Function so autograd returns grads in the callers' dtypes.
    w1, b1, w2, b2 = (t if t is None else t.to(x.dtype) for t in (w1, b1, w2, b2))
    return _FFNFunction.apply(x, w1, b1, w2, b2, unit_scale)


def reference_ffn(x, w1, b1, w2, b2, unit_scale=None):
    """Plain PyTorch version of ``ffn``."""
    h = F.gelu(F.linear(x, w1, b1))  # (..., F)
    if unit_scale is not None:
        h = h * unit_scale.to(h.dtype)
    return F.linear(h, w2, b2)  # (..., D)
