"""Fused feed-forward block of a pruned BERT layer: gelu(x @ w1.T + b1) * unit_scale @ w2.T + b2.

Holds:
  * ``_linear_kernel``: one tiled matmul ``A @ B (+ bias)`` with optional fusions, used twice:
    the up-projection with bias + exact (erf) GELU in the epilogue, and the down-projection
    with the per-unit gate ``unit_scale`` applied to the intermediate columns as they are loaded.
  * launchers, the custom op ``slimbert::ffn_fwd`` (autograd registered) and the front door ``ffn``.
  * ``reference_ffn``: the same math in plain PyTorch (CPU fallback and test oracle).

The forward is two Triton launches; the backward is plain PyTorch (cuBLAS matmuls plus
``aten.gelu_backward``) on the pre-activation saved by the up-projection kernel, so nothing is
recomputed with a matmul. Any intermediate width works, including odd widths and 0.
"""

import torch
import torch.nn.functional as F

from ._utils import (
    dot_dtype,
    dot_precision,
    is_exporting,
    matmul_configs,
    pow2_bucket,
    prune_matmul_configs,
    run_kernel,
    tl,
    triton,
    use_triton,
)


# Intermediate widths are padded to a multiple of this with exact zero units (GELU(0) = 0): a
# pruned width such as 397 makes the down-projection's rows misaligned, which stops the K loop
# from being software-pipelined and spills registers (bench/compile_check.py).
WIDTH_MULTIPLE = 16


@triton.autotune(configs=matmul_configs(), key=["N", "K", "M_BUCKET"],
                 prune_configs_by={"early_config_prune": prune_matmul_configs})
@triton.jit(do_not_specialize=["M_BUCKET"])  # a tuning key only: no kernel per value
def _linear_kernel(
    A, B, C, Bias, KScale, PreAct,
    M, N, K, M_BUCKET,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    HAS_BIAS: tl.constexpr, HAS_KSCALE: tl.constexpr, GELU: tl.constexpr, STORE_PREACT: tl.constexpr,
    DOT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr = 8,
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
    grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    _linear_kernel[grid](
        a, weight, out, bias, k_scale, pre,
        M, N, K, pow2_bucket(M),
        a.stride(0), a.stride(1), weight.stride(1), weight.stride(0),  # B = weight.T, no copy
        out.stride(0), out.stride(1),
        HAS_BIAS=bias is not None, HAS_KSCALE=k_scale is not None, GELU=gelu, STORE_PREACT=store_preact,
        DOT=dot_dtype(a.dtype), PRECISION=dot_precision(a.dtype),
    )
    return out, pre


def _pad_width(w1, b1, w2, unit_scale):
    """Zero units up to a multiple of WIDTH_MULTIPLE: zero weights and bias give GELU(0) = 0 into
    zero columns of w2, so the output is unchanged and autograd drops the padding's gradients.

    Without autograd the padded weights are kept on ``w1`` until a weight changes (version
    counters), so inference pays for the copy once, not per call.
    """
    pad = -w1.shape[0] % WIDTH_MULTIPLE
    if pad == 0:
        return w1, b1, w2, unit_scale
    unit_scale = F.pad(unit_scale, (0, pad)) if unit_scale is not None else None
    tracked = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (w1, b1, w2))
    try:
        key = None if tracked else tuple((id(t), t._version) for t in (w1, b1, w2) if t is not None)
    except RuntimeError:  # inference tensors have no version counter: pad every call
        key = None
    cached = getattr(w1, "_slimbert_padded", None)
    if key is not None and cached is not None and cached[0] == key:
        return (*cached[1], unit_scale)
    padded = (F.pad(w1, (0, 0, 0, pad)), F.pad(b1, (0, pad)) if b1 is not None else None, F.pad(w2, (0, pad)))
    if key is not None:
        w1._slimbert_padded = (key, padded)
    return (*padded, unit_scale)


@torch.library.custom_op("slimbert::ffn_fwd", mutates_args=())
def _ffn_op(x2: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor, b2: torch.Tensor | None,
            gate: torch.Tensor | None, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (M, D), pre-activation (M, padded F) when training, else empty): two Triton launches."""
    if w1.shape[0] == 0:  # no intermediate units left: the block is just its output bias
        y = x2.new_zeros((x2.shape[0], w2.shape[0])) if b2 is None else b2.expand(x2.shape[0], -1).clone()
        return y, x2.new_empty(0)
    w1, b1, w2, gate = _pad_width(w1, b1, w2, gate.contiguous() if gate is not None else None)
    h, pre = _linear(x2, w1, b1, gelu=True, store_preact=training)  # (M, F)
    y, _ = _linear(h, w2, b2, k_scale=gate)  # (M, D)
    return y, pre if pre is not None else x2.new_empty(0)


@_ffn_op.register_fake
def _(x2, w1, b1, w2, b2, gate, training):
    width = w1.shape[0] + (-w1.shape[0] % WIDTH_MULTIPLE)
    return x2.new_empty((x2.shape[0], w2.shape[0])), x2.new_empty((x2.shape[0], width) if training and w1.shape[0] else 0)


def _ffn_setup(ctx, inputs, output):
    x2, w1, b1, w2, b2, gate, training = inputs
    ctx.save_for_backward(x2, w1, b1, w2, output[1], gate)
    ctx.has_b1, ctx.has_b2 = b1 is not None, b2 is not None


def _ffn_backward(ctx, dy, _dpre):
    """Plain PyTorch (cuBLAS matmuls, aten.gelu_backward) on the saved pre-activation: no matmul is recomputed."""
    x2, w1, b1, w2, pre, gate = ctx.saved_tensors
    need_x, need_w1, need_b1, need_w2, need_b2, need_gate, _ = ctx.needs_input_grad
    dx = dw1 = db1 = dw2 = db2 = dgate = None
    if need_b2 and ctx.has_b2:
        db2 = dy.sum(0)
    if w1.shape[0] == 0:  # only the output bias was used
        zeros = lambda t, need: torch.zeros_like(t) if need else None  # noqa: E731
        return (zeros(x2, need_x), zeros(w1, need_w1), zeros(b1, need_b1 and ctx.has_b1), zeros(w2, need_w2), db2,
                zeros(gate, need_gate), None)
    pre = pre[:, : w1.shape[0]]  # drop the padding units (exact zeros)
    h = F.gelu(pre)  # (M, F), cheap elementwise recompute
    h_gated = h * gate.to(h.dtype) if gate is not None else h
    if need_w2:
        dw2 = dy.t() @ h_gated  # (D, F)
    if need_x or need_w1 or need_b1 or need_gate:
        dh_gated = dy @ w2  # (M, F)
        if need_gate:
            dgate = (dh_gated.float() * h.float()).sum(0).to(gate.dtype)
        dh = dh_gated * gate.to(dh_gated.dtype) if gate is not None else dh_gated
        dpre = torch.ops.aten.gelu_backward(dh, pre)  # exact-erf GELU derivative
        if need_x:
            dx = dpre @ w1
        if need_w1:
            dw1 = dpre.t() @ x2  # (F, D)
        if need_b1 and ctx.has_b1:
            db1 = dpre.sum(0)
    return dx, dw1, db1, dw2, db2, dgate, None


_ffn_op.register_autograd(_ffn_backward, setup_context=_ffn_setup)


def ffn(x, w1, b1, w2, b2, unit_scale=None):
    """gelu(x @ w1.T + b1) * unit_scale @ w2.T + b2 over x (..., D).

    w1 (F, D), b1 (F,), w2 (D, F), b2 (D,) in nn.Linear layout; unit_scale (F,) per-unit gate
    (differentiable) or None; biases may be None. Exact erf GELU. Runs the Triton kernels when
    ``use_triton(x)``, else ``reference_ffn``.
    """
    def reference():
        return reference_ffn(x, w1, b1, w2, b2, unit_scale)

    if not use_triton(x) or is_exporting():
        return reference()

    def kernel():
        # Casts happen outside the op so autograd returns grads in the callers' dtypes.
        p = [t if t is None else t.to(x.dtype) for t in (w1, b1, w2, b2)]
        training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *p, unit_scale))
        y, _ = _ffn_op(x.reshape(-1, x.shape[-1]), *p, unit_scale, training)
        return y.view(*x.shape[:-1], w2.shape[0])

    return run_kernel("ffn", kernel, reference)


def reference_ffn(x, w1, b1, w2, b2, unit_scale=None):
    """Plain PyTorch version of ``ffn``."""
    h = F.gelu(F.linear(x, w1, b1))  # (..., F)
    if unit_scale is not None:
        h = h * unit_scale.to(h.dtype)
    return F.linear(h, w2, b2)  # (..., D)
