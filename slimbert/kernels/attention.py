"""Fused multi-head attention for pruned encoders (each layer keeps its own number of heads).

Holds:
  * ``_attn_fwd_kernel``: flash-attention style forward (online softmax) with the key-padding
    mask, the per-head gate ``head_scale`` and attention-probability dropout fused; the same kernel
    serves padded (B, H, T, d) batches and packed variable-length batches (``cu_seqlens``).
  * ``_attn_bwd_preprocess_kernel``, ``_attn_bwd_dkdv_kernel``, ``_attn_bwd_dq_kernel``: fused
    backward producing dq, dk, dv and the per-row terms from which d(head_scale) is summed.
  * launchers, the custom ops ``slimbert::attention_fwd`` / ``attention_bwd`` / ``attention_varlen``
    and the front doors ``attention`` / ``attention_varlen``.
  * ``reference_attention`` / ``reference_attention_varlen``: the same math in plain PyTorch,
    used as the CPU fallback and as the test oracle.

Dropout is counter-based (Philox, ``tl.rand``): whether probability (b, h, i, j) is dropped is a
pure function of (seed, b, h, i, j), so the backward regenerates the forward's mask instead of
storing it, and ``dropout_mask`` rebuilds it for the reference.

Constraints: head_dim <= 256 (any value; non powers of two are padded to the next power of two
inside the kernel and masked). The varlen path is forward only: when gradients are required
``attention_varlen`` falls back to the differentiable reference.
"""

import math

import torch

from ._utils import (
    attention_bwd_config,
    attention_fwd_configs,
    dot_dtype,
    dot_precision,
    is_exporting,
    next_pow2,
    pow2_bucket,
    prune_attention_fwd_configs,
    run_kernel,
    tl,
    triton,
    use_triton,
)

MAX_HEAD_DIM = 256
LOG2E = math.log2(math.e)


# ---------------------------------------------------------------------------------------------
# Kernels. Scores are kept in the log2 domain (qk_scale already includes log2(e)) so the softmax
# uses exp2; Lse is stored in that domain too and only ever read back by the backward kernels.
# ---------------------------------------------------------------------------------------------


@triton.jit
def _dropout_keep(seed, pid_bh, rows, cols, seq_len, dropout_p):
    """True where attention probability (pid_bh, row, col) survives dropout (any tile orientation)."""
    offs = (pid_bh.to(tl.int64) * seq_len + rows.to(tl.int64)) * seq_len + cols.to(tl.int64)
    return tl.rand(seed, offs) >= dropout_p


@triton.jit
def _tile(n_tiles):
    """(tile, batch*head) of this program in the 1-D grid tiles x (B*H): one axis has CUDA's 2^31-1
    limit for any batch and head count, and neighbouring programs share a head's K/V in L2."""
    pid = tl.program_id(0)
    return pid % n_tiles, pid // n_tiles


@triton.autotune(configs=attention_fwd_configs(), key=["head_dim", "SEQ_BUCKET", "BH_BUCKET"],
                 prune_configs_by={"early_config_prune": prune_attention_fwd_configs})
@triton.jit(do_not_specialize=["SEQ_BUCKET", "BH_BUCKET"])  # tuning keys only: no kernel per value
def _attn_fwd_kernel(
    Q, K, V, Out, OutRaw, Lse, KeyMask, HeadScale, CuSeqlens,
    qk_scale, seq_len, n_heads, head_dim, seed, dropout_p, dropout_scale, SEQ_BUCKET, BH_BUCKET,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_ob, stride_oh, stride_ot, stride_od,
    stride_mb, stride_mt,
    HAS_MASK: tl.constexpr, HAS_SCALE: tl.constexpr, STORE_RAW: tl.constexpr,
    STORE_LSE: tl.constexpr, IS_VARLEN: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    DOT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m, pid_bh = _tile(tl.cdiv(seq_len, BLOCK_M))  # seq_len: the longest sequence when varlen
    b = (pid_bh // n_heads).to(tl.int64)
    h = (pid_bh % n_heads).to(tl.int64)
    if IS_VARLEN:
        # Packed layout: sequence b owns tokens [start, start + len); stride_*b are 0.
        start = tl.load(CuSeqlens + b).to(tl.int64)
        seq_len = (tl.load(CuSeqlens + b + 1) - start).to(tl.int32)
    else:
        start = 0

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < seq_len
    d_ok = offs_d < head_dim

    q_ptrs = (Q + b * stride_qb + h * stride_qh + (start + offs_m)[:, None] * stride_qt
              + offs_d[None, :] * stride_qd)
    q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0).to(DOT)
    # K is read transposed, (BLOCK_D, BLOCK_N), so the score tile is a plain q @ kT.
    kt_base = K + b * stride_kb + h * stride_kh + start * stride_kt + offs_d[:, None] * stride_kd
    v_base = V + b * stride_vb + h * stride_vh + start * stride_vt + offs_d[None, :] * stride_vd

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)

    # Tiles past the end of a short (varlen) sequence have no rows: skip their key loop.
    hi = tl.where(pid_m * BLOCK_M < seq_len, seq_len, 0)
    for n0 in range(0, hi, BLOCK_N):
        cols = n0 + offs_n
        col_ok = cols < seq_len
        if HAS_MASK:
            keep = tl.load(KeyMask + b * stride_mb + cols * stride_mt, mask=col_ok, other=0)
            col_ok = col_ok & (keep != 0)
        kt = tl.load(kt_base + cols[None, :] * stride_kt, mask=d_ok[:, None] & (cols < seq_len)[None, :],
                     other=0.0).to(DOT)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        s = tl.where(col_ok[None, :], s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row that has seen only padded keys keeps m = -inf; subtract 0 instead so that
        # exp2 gives 0 rather than exp2(-inf - -inf) = NaN.
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_sub[:, None])
        alpha = tl.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)

        v = tl.load(v_base + cols[:, None] * stride_vt, mask=(cols < seq_len)[:, None] & d_ok[None, :],
                    other=0.0).to(DOT)
        if HAS_DROPOUT:  # after l_i: the softmax normaliser counts dropped probabilities too
            keep_p = _dropout_keep(seed, pid_bh, offs_m[:, None], cols[None, :], seq_len, dropout_p)
            p = tl.where(keep_p, p * dropout_scale, 0.0)
        p = p.to(V.dtype.element_ty).to(DOT)  # rounded to the input precision, as on the GPU
        acc = tl.dot(p, v, acc * alpha[:, None], input_precision=PRECISION)
        m_i = m_new

    # Rows with no real key have l = 0 and acc = 0: dividing by 1 returns exact zeros.
    l_div = tl.where(l_i == 0.0, 1.0, l_i)
    o = acc / l_div[:, None]

    o_offs = b * stride_ob + h * stride_oh + (start + offs_m)[:, None] * stride_ot + offs_d[None, :] * stride_od
    o_mask = row_ok[:, None] & d_ok[None, :]
    if STORE_RAW:  # un-gated output, needed for d(head_scale) even when the gate is 0
        tl.store(OutRaw + o_offs, o.to(OutRaw.dtype.element_ty), mask=o_mask)
    if HAS_SCALE:
        o = o * tl.load(HeadScale + h).to(tl.float32)
    tl.store(Out + o_offs, o.to(Out.dtype.element_ty), mask=o_mask)
    if STORE_LSE:
        m_fin = tl.where(m_i == float("-inf"), 0.0, m_i)
        tl.store(Lse + pid_bh.to(tl.int64) * seq_len + offs_m, m_fin + tl.log2(l_div), mask=row_ok)


@triton.jit
def _attn_bwd_preprocess_kernel(
    Out, DOut, Delta, DRow, HeadScale,
    seq_len, n_heads, head_dim,
    stride_ob, stride_oh, stride_ot, stride_od,
    stride_gb, stride_gh, stride_gt, stride_gd,
    RAW_OUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # Delta = rowsum(dOut * Out) = rowsum(head_scale * dOut * OutRaw). With RAW_OUT the kernel
    # reads OutRaw, and the un-gated rowsum (DRow), summed over batch and time, is d(head_scale):
    # reading OutRaw rather than dividing Out by the gate keeps that right when the gate is 0.
    pid_m, pid_bh = _tile(tl.cdiv(seq_len, BLOCK_M))
    b = (pid_bh // n_heads).to(tl.int64)
    h = (pid_bh % n_heads).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m < seq_len)[:, None] & (offs_d < head_dim)[None, :]
    o = tl.load(Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :] * stride_od,
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DOut + b * stride_gb + h * stride_gh + offs_m[:, None] * stride_gt + offs_d[None, :] * stride_gd,
                 mask=mask, other=0.0).to(tl.float32)
    row = tl.sum(o * do, 1)
    stat_offs = pid_bh.to(tl.int64) * seq_len + offs_m
    if RAW_OUT:
        tl.store(DRow + stat_offs, row, mask=offs_m < seq_len)
        row = row * tl.load(HeadScale + h).to(tl.float32)
    tl.store(Delta + stat_offs, row, mask=offs_m < seq_len)


@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DOut, DK, DV, Lse, Delta, KeyMask, HeadScale,
    qk_scale, sm_scale, seq_len, n_heads, head_dim, seed, dropout_p, dropout_scale,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_gb, stride_gh, stride_gt, stride_gd,
    stride_db, stride_dh, stride_dt, stride_dd,
    stride_mb, stride_mt,
    HAS_MASK: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    DOT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, TRANSPOSED_LOADS: tl.constexpr = False,
):
    # One program owns a block of keys and sweeps all queries, so dk / dv need no atomics.
    pid_n, pid_bh = _tile(tl.cdiv(seq_len, BLOCK_N))
    b = (pid_bh // n_heads).to(tl.int64)
    h = (pid_bh % n_heads).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    col_ok = offs_n < seq_len
    kv_mask = col_ok[:, None] & d_ok[None, :]
    if HAS_MASK:
        keep = tl.load(KeyMask + b * stride_mb + offs_n * stride_mt, mask=col_ok, other=0)
        col_ok = col_ok & (keep != 0)

    k = tl.load(K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :] * stride_kd,
                mask=kv_mask, other=0.0).to(DOT)
    v = tl.load(V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vt + offs_d[None, :] * stride_vd,
                mask=kv_mask, other=0.0).to(DOT)

    # The gate is a per-head scalar: the dots use the raw upstream gradient and the gate is applied
    # to their fp32 results, so gating adds no rounding of dO to the input precision.
    if HAS_SCALE:
        gate = tl.load(HeadScale + h).to(tl.float32)
    q_base = Q + b * stride_qb + h * stride_qh + offs_d[None, :] * stride_qd
    do_base = DOut + b * stride_gb + h * stride_gh + offs_d[None, :] * stride_gd
    stat_base = pid_bh.to(tl.int64) * seq_len

    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for m0 in range(0, seq_len, BLOCK_M):
        rows = m0 + offs_m
        row_ok = rows < seq_len
        q_mask = row_ok[:, None] & d_ok[None, :]
        q = tl.load(q_base + rows[:, None] * stride_qt, mask=q_mask, other=0.0).to(DOT)
        do = tl.load(do_base + rows[:, None] * stride_gt, mask=q_mask, other=0.0).to(Q.dtype.element_ty).to(DOT)
        lse = tl.load(Lse + stat_base + rows, mask=row_ok, other=0.0)
        delta = tl.load(Delta + stat_base + rows, mask=row_ok, other=0.0)

        # Transposed tiles, (BLOCK_N, BLOCK_M): keys on rows, queries on columns.
        if TRANSPOSED_LOADS:  # 32-bit operands: a transposed copy from shared memory blocks pipelining
            qt = tl.load(Q + b * stride_qb + h * stride_qh + offs_d[:, None] * stride_qd + rows[None, :] * stride_qt,
                         mask=d_ok[:, None] & row_ok[None, :], other=0.0).to(DOT)
            dot_ = DOut + b * stride_gb + h * stride_gh + offs_d[:, None] * stride_gd + rows[None, :] * stride_gt
            dot_t = tl.load(dot_, mask=d_ok[:, None] & row_ok[None, :], other=0.0).to(Q.dtype.element_ty).to(DOT)
        else:
            qt, dot_t = tl.trans(q), tl.trans(do)
        st = tl.dot(k, qt, input_precision=PRECISION)
        pt = tl.where(col_ok[:, None] & row_ok[None, :], tl.exp2(st * qk_scale - lse[None, :]), 0.0)
        dpt = tl.dot(v, dot_t, input_precision=PRECISION)
        if HAS_SCALE:
            dpt = dpt * gate
        if HAS_DROPOUT:  # O = (Z * P) V with Z the scaled keep-mask: dV = (Z * P)^T dO, dP = Z * (dO V^T)
            keep_p = _dropout_keep(seed, pid_bh, rows[None, :], offs_n[:, None], seq_len, dropout_p)
            dv = tl.dot(tl.where(keep_p, pt * dropout_scale, 0.0).to(Q.dtype.element_ty).to(DOT), do, dv,
                        input_precision=PRECISION)
            dpt = tl.where(keep_p, dpt * dropout_scale, 0.0)
        else:
            dv = tl.dot(pt.to(Q.dtype.element_ty).to(DOT), do, dv, input_precision=PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(Q.dtype.element_ty).to(DOT), q, dk, input_precision=PRECISION)

    dk = dk * sm_scale
    if HAS_SCALE:
        dv = dv * gate
    d_offs = b * stride_db + h * stride_dh + offs_n[:, None] * stride_dt + offs_d[None, :] * stride_dd
    tl.store(DK + d_offs, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + d_offs, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DOut, DQ, Lse, Delta, KeyMask, HeadScale,
    qk_scale, sm_scale, seq_len, n_heads, head_dim, seed, dropout_p, dropout_scale,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vd,
    stride_gb, stride_gh, stride_gt, stride_gd,
    stride_db, stride_dh, stride_dt, stride_dd,
    stride_mb, stride_mt,
    HAS_MASK: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    DOT: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program owns a block of queries and sweeps all keys (dq is written exactly once).
    pid_m, pid_bh = _tile(tl.cdiv(seq_len, BLOCK_M))
    b = (pid_bh // n_heads).to(tl.int64)
    h = (pid_bh % n_heads).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < head_dim
    row_ok = offs_m < seq_len
    q_mask = row_ok[:, None] & d_ok[None, :]

    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :] * stride_qd,
                mask=q_mask, other=0.0).to(DOT)
    do = tl.load(DOut + b * stride_gb + h * stride_gh + offs_m[:, None] * stride_gt + offs_d[None, :] * stride_gd,
                 mask=q_mask, other=0.0).to(Q.dtype.element_ty).to(DOT)
    if HAS_SCALE:  # applied to dp in fp32, see _attn_bwd_dkdv_kernel
        gate = tl.load(HeadScale + h).to(tl.float32)
    stat_offs = pid_bh.to(tl.int64) * seq_len + offs_m
    lse = tl.load(Lse + stat_offs, mask=row_ok, other=0.0)
    delta = tl.load(Delta + stat_offs, mask=row_ok, other=0.0)

    k_base = K + b * stride_kb + h * stride_kh + offs_d[None, :] * stride_kd
    v_base = V + b * stride_vb + h * stride_vh + offs_d[None, :] * stride_vd
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for n0 in range(0, seq_len, BLOCK_N):
        cols = n0 + offs_n
        col_in = cols < seq_len
        col_ok = col_in
        if HAS_MASK:
            keep = tl.load(KeyMask + b * stride_mb + cols * stride_mt, mask=col_in, other=0)
            col_ok = col_ok & (keep != 0)
        kv_mask = col_in[:, None] & d_ok[None, :]
        k = tl.load(k_base + cols[:, None] * stride_kt, mask=kv_mask, other=0.0).to(DOT)
        v = tl.load(v_base + cols[:, None] * stride_vt, mask=kv_mask, other=0.0).to(DOT)

        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        p = tl.where(row_ok[:, None] & col_ok[None, :], tl.exp2(s * qk_scale - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        if HAS_SCALE:
            dp = dp * gate
        if HAS_DROPOUT:
            keep_p = _dropout_keep(seed, pid_bh, offs_m[:, None], cols[None, :], seq_len, dropout_p)
            dp = tl.where(keep_p, dp * dropout_scale, 0.0)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(Q.dtype.element_ty).to(DOT), k, dq, input_precision=PRECISION)

    dq = dq * sm_scale
    tl.store(DQ + b * stride_db + h * stride_dh + offs_m[:, None] * stride_dt + offs_d[None, :] * stride_dd,
             dq.to(DQ.dtype.element_ty), mask=q_mask)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _keep_scale(dropout_p: float) -> float:
    return 1.0 / (1.0 - dropout_p) if dropout_p > 0 else 1.0


def _check_head_dim(d: int) -> None:
    if not 0 < d <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim must be in [1, {MAX_HEAD_DIM}], got {d}")


def _mask_args(key_padding_mask):
    """Mask as a zero-copy uint8 view (triton loads bytes) plus its strides; (None, 0, 0) if absent."""
    if key_padding_mask is None:
        return None, 0, 0
    if key_padding_mask.dtype != torch.bool:
        key_padding_mask = key_padding_mask != 0
    mask = key_padding_mask.view(torch.uint8)
    return mask, mask.stride(0), mask.stride(1)


def _attn_fwd(q, k, v, key_padding_mask, head_scale, scaling, store_lse, store_raw, dropout_p=0.0, seed=0):
    """Returns out (B, T, H, d), the un-gated out (or None) and lse (B, H, T) fp32 (or None)."""
    B, H, T, d = q.shape
    _check_head_dim(d)
    out = torch.empty((B, T, H, d), dtype=q.dtype, device=q.device)
    out_raw = torch.empty_like(out) if store_raw else None
    lse = torch.empty((B, H, T), dtype=torch.float32, device=q.device) if store_lse else None
    if out.numel() == 0:
        return out, out_raw, lse
    mask, stride_mb, stride_mt = _mask_args(key_padding_mask)
    grid = lambda meta: (triton.cdiv(T, meta["BLOCK_M"]) * B * H,)  # noqa: E731
    _attn_fwd_kernel[grid](
        q, k, v, out, out_raw, lse, mask, head_scale, None,
        scaling * LOG2E, T, H, d, seed, dropout_p, _keep_scale(dropout_p), pow2_bucket(T), pow2_bucket(B * H),
        *q.stride(), *k.stride(), *v.stride(),
        out.stride(0), out.stride(2), out.stride(1), out.stride(3),  # out is (B, T, H, d)
        stride_mb, stride_mt,
        HAS_MASK=mask is not None, HAS_SCALE=head_scale is not None, STORE_RAW=store_raw,
        STORE_LSE=store_lse, IS_VARLEN=False, HAS_DROPOUT=dropout_p > 0,
        DOT=dot_dtype(q.dtype), PRECISION=dot_precision(q.dtype), BLOCK_D=next_pow2(d),
    )
    return out, out_raw, lse


def _attn_varlen_fwd(q, k, v, cu_seqlens, max_seqlen, head_scale, scaling):
    total, H, d = q.shape
    _check_head_dim(d)
    B = cu_seqlens.numel() - 1
    # Zero-filled so tokens outside every sequence (a malformed cu_seqlens) read as 0, like the reference.
    out = torch.zeros((total, H, d), dtype=q.dtype, device=q.device)
    if out.numel() == 0 or B <= 0 or max_seqlen <= 0:
        return out
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    grid = lambda meta: (triton.cdiv(max_seqlen, meta["BLOCK_M"]) * B * H,)  # noqa: E731
    # Packed (total, H, d) tensors: batch stride 0, the token stride plays the time stride.
    _attn_fwd_kernel[grid](
        q, k, v, out, None, None, None, head_scale, cu,
        scaling * LOG2E, max_seqlen, H, d, 0, 0.0, 1.0, pow2_bucket(max_seqlen), pow2_bucket(B * H),
        0, q.stride(1), q.stride(0), q.stride(2),
        0, k.stride(1), k.stride(0), k.stride(2),
        0, v.stride(1), v.stride(0), v.stride(2),
        0, out.stride(1), out.stride(0), out.stride(2),
        0, 0,
        HAS_MASK=False, HAS_SCALE=head_scale is not None, STORE_RAW=False, STORE_LSE=False, IS_VARLEN=True,
        HAS_DROPOUT=False,
        DOT=dot_dtype(q.dtype), PRECISION=dot_precision(q.dtype), BLOCK_D=next_pow2(d),
    )
    return out


def _attn_bwd(dout, q, k, v, out_saved, lse, key_padding_mask, head_scale, scaling, need_dhead, dropout_p=0.0, seed=0):
    """Returns dq, dk, dv (B, H, T, d) and d(head_scale) (H,) fp32 or None.

    ``out_saved`` is the un-gated output when ``need_dhead``, else the (gated) output.
    """
    B, H, T, d = q.shape
    dq = torch.empty((B, H, T, d), dtype=q.dtype, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    delta = torch.empty((B, H, T), dtype=torch.float32, device=q.device)
    drow = torch.empty_like(delta) if need_dhead else None
    mask, stride_mb, stride_mt = _mask_args(key_padding_mask)
    cfg = attention_bwd_config(d, q.dtype)
    block_m, block_n, block_d = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_D"]
    launch = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    # dout and out_saved are (B, T, H, d): the kernels take (b, h, t, d) strides.
    o_strides = (out_saved.stride(0), out_saved.stride(2), out_saved.stride(1), out_saved.stride(3))
    g_strides = (dout.stride(0), dout.stride(2), dout.stride(1), dout.stride(3))

    _attn_bwd_preprocess_kernel[(triton.cdiv(T, block_m) * B * H,)](
        out_saved, dout, delta, drow, head_scale, T, H, d, *o_strides, *g_strides,
        RAW_OUT=need_dhead, BLOCK_M=block_m, BLOCK_D=block_d, **launch,
    )
    args = (lse, delta, mask, head_scale, scaling * LOG2E, scaling, T, H, d, seed, dropout_p, _keep_scale(dropout_p),
            *q.stride(), *k.stride(), *v.stride(), *g_strides, *dq.stride(), stride_mb, stride_mt)
    flags = dict(
        HAS_MASK=mask is not None, HAS_SCALE=head_scale is not None, HAS_DROPOUT=dropout_p > 0,
        DOT=dot_dtype(q.dtype), PRECISION=dot_precision(q.dtype),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, **launch,
    )
    _attn_bwd_dkdv_kernel[(triton.cdiv(T, block_n) * B * H,)](q, k, v, dout, dk, dv, *args, **flags,
                                                               TRANSPOSED_LOADS=q.dtype == torch.float32)
    _attn_bwd_dq_kernel[(triton.cdiv(T, block_m) * B * H,)](q, k, v, dout, dq, *args, **flags)
    dhead = drow.sum(dim=(0, 2)) if need_dhead else None
    return dq, dk, dv, dhead


# ---------------------------------------------------------------------------------------------
# Custom ops (torch.library): torch.compile sees each launch as one opaque op with a fake (shape)
# implementation instead of tracing into Triton, so a compiled model has no graph breaks here.
# Absent optional outputs are empty tensors (a custom op cannot return None).
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("slimbert::attention_fwd", mutates_args=())
def _attention_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
                      head_scale: torch.Tensor | None, scaling: float, dropout_p: float, seed: torch.Tensor,
                      training: bool, need_dhead: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gate = head_scale.contiguous() if head_scale is not None else None  # kernels index it densely
    out, raw, lse = _attn_fwd(q, k, v, key_padding_mask, gate, scaling, store_lse=training, store_raw=need_dhead,
                              dropout_p=dropout_p, seed=int(seed))
    return out, raw if raw is not None else q.new_empty(0), lse if lse is not None else q.new_empty(0, dtype=torch.float32)


@_attention_fwd_op.register_fake
def _(q, k, v, key_padding_mask, head_scale, scaling, dropout_p, seed, training, need_dhead):
    B, H, T, d = q.shape
    return (q.new_empty((B, T, H, d)), q.new_empty((B, T, H, d) if need_dhead else 0),
            q.new_empty((B, H, T) if training else 0, dtype=torch.float32))


@torch.library.custom_op("slimbert::attention_bwd", mutates_args=())
def _attention_bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out_saved: torch.Tensor,
                      lse: torch.Tensor, key_padding_mask: torch.Tensor | None, head_scale: torch.Tensor | None,
                      scaling: float, need_dhead: bool, dropout_p: float, seed: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gate = head_scale.contiguous() if head_scale is not None else None
    dq, dk, dv, dhead = _attn_bwd(dout.contiguous(), q, k, v, out_saved, lse, key_padding_mask, gate, scaling,
                                  need_dhead, dropout_p, int(seed))
    return dq, dk, dv, dhead.to(head_scale.dtype) if dhead is not None else q.new_empty(0)


@_attention_bwd_op.register_fake
def _(dout, q, k, v, out_saved, lse, key_padding_mask, head_scale, scaling, need_dhead, dropout_p, seed):
    grads = tuple(q.new_empty(q.shape) for _ in range(3))
    return (*grads, head_scale.new_empty(head_scale.shape) if need_dhead else q.new_empty(0))


def _attention_setup(ctx, inputs, output):
    q, k, v, key_padding_mask, head_scale, scaling, dropout_p, seed, training, need_dhead = inputs
    out, raw, lse = output
    ctx.save_for_backward(q, k, v, raw if need_dhead else out, lse, key_padding_mask, head_scale, seed)
    ctx.scaling, ctx.dropout_p, ctx.need_dhead = scaling, dropout_p, need_dhead


def _attention_backward(ctx, dout, _draw, _dlse):
    q, k, v, out_saved, lse, key_padding_mask, head_scale, seed = ctx.saved_tensors
    dq, dk, dv, dhead = _attention_bwd_op(dout, q, k, v, out_saved, lse, key_padding_mask, head_scale, ctx.scaling,
                                          ctx.need_dhead, ctx.dropout_p, seed)
    return dq, dk, dv, None, dhead if ctx.need_dhead else None, None, None, None, None, None


_attention_fwd_op.register_autograd(_attention_backward, setup_context=_attention_setup)


@torch.library.custom_op("slimbert::attention_varlen", mutates_args=())
def _attention_varlen_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                         head_scale: torch.Tensor | None, scaling: float) -> torch.Tensor:
    gate = head_scale.contiguous() if head_scale is not None else None
    return _attn_varlen_fwd(q, k, v, cu_seqlens, max_seqlen, gate, scaling)


@_attention_varlen_op.register_fake
def _(q, k, v, cu_seqlens, max_seqlen, head_scale, scaling):
    return q.new_empty(q.shape)


def attention(q, k, v, key_padding_mask=None, head_scale=None, scaling=None, dropout_p=0.0, seed=None):
    """Softmax attention over (B, H, T, d) inputs; returns (B, T, H, d) contiguous.

    key_padding_mask: (B, T) bool, True = real token (False keys are ignored; a row with no real
    key returns 0). head_scale: (H,) per-head output gate, differentiable. scaling: default d**-0.5.
    dropout_p: attention-probability dropout (training); ``seed`` fixes its mask (default: drawn
    from torch's global generator, so ``torch.manual_seed`` makes runs repeatable).
    Runs the Triton kernels when ``use_triton(q)``, else ``reference_attention``.
    """
    if scaling is None:
        scaling = q.shape[-1] ** -0.5
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")

    def reference():
        return reference_attention(q, k, v, key_padding_mask, head_scale, scaling, dropout_p=dropout_p)

    if not use_triton(q) or q.numel() == 0 or is_exporting():
        return reference()

    def kernel():
        # A seed tensor (not a Python int) keeps torch.compile from breaking the graph to read it.
        s = torch.tensor(seed) if seed is not None else torch.randint(0, 2**31 - 1, ()) if dropout_p > 0 else torch.tensor(0)
        grad = torch.is_grad_enabled()
        training = grad and any(t is not None and t.requires_grad for t in (q, k, v, head_scale))
        need_dhead = grad and head_scale is not None and head_scale.requires_grad
        # Casts happen outside the op so autograd returns grads in the callers' dtypes.
        return _attention_fwd_op(q, k.to(q.dtype), v.to(q.dtype), key_padding_mask, head_scale, float(scaling),
                                 float(dropout_p), s, training, need_dhead)[0]

    return run_kernel("attention", kernel, reference)


def dropout_mask(B, H, T, dropout_p, seed, device=None):
    """The (B, H, T, T) multiplier (0 or 1/(1-p)) that ``attention(..., dropout_p, seed)`` applies.

    Read back from the kernel itself (uniform probabilities, V = identity), so it is exact by
    construction; for tests and for ``reference_attention(..., dropout_mask=...)``.
    """
    if not use_triton(torch.empty(0, device=device)):
        raise RuntimeError("dropout_mask needs the Triton path (a CUDA device or TRITON_INTERPRET=1)")
    if not 0 < T <= MAX_HEAD_DIM:
        raise ValueError(f"dropout_mask reads the mask through V = identity, so T must be in [1, {MAX_HEAD_DIM}], got {T}")
    eye = torch.eye(T, device=device).expand(B, H, T, T)
    zeros = torch.zeros_like(eye)  # q = k = 0: every probability is 1/T
    out = attention(zeros, zeros, eye, dropout_p=dropout_p, seed=seed)  # (B, T, H, T): Z / T
    return (out.transpose(1, 2) > 0).float() * _keep_scale(dropout_p)


def attention_varlen(q, k, v, cu_seqlens, max_seqlen, head_scale=None, scaling=None):
    """Attention over packed sequences: q, k, v (total_tokens, H, d); cu_seqlens (B+1,) int32
    cumulative lengths; max_seqlen the longest length. Returns (total_tokens, H, d).

    Forward only: with gradients required it runs the (differentiable) reference instead.
    """
    if scaling is None:
        scaling = q.shape[-1] ** -0.5
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, head_scale))

    def reference():
        return reference_attention_varlen(q, k, v, cu_seqlens, max_seqlen, head_scale, scaling)

    if needs_grad or not use_triton(q) or is_exporting():
        return reference()
    return run_kernel("attention_varlen", lambda: _attention_varlen_op(
        q, k.to(q.dtype), v.to(q.dtype), cu_seqlens, int(max_seqlen), head_scale, float(scaling)), reference)


# ---------------------------------------------------------------------------------------------
# Reference (CPU fallback and test oracle)
# ---------------------------------------------------------------------------------------------


def reference_attention(q, k, v, key_padding_mask=None, head_scale=None, scaling=None, dropout_p=0.0, dropout_mask=None):
    """Plain PyTorch version of ``attention``; softmax in fp32.

    Dropout multiplies the probabilities by ``dropout_mask`` (B, H, T, T) when given (the kernel's
    own mask, see ``dropout_mask``), else by a fresh torch dropout mask of rate ``dropout_p``.
    """
    B, H, T, d = q.shape
    if scaling is None:
        scaling = d ** -0.5
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scaling  # (B, H, T, T)
    if key_padding_mask is not None:
        keep = key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        # finfo.min instead of -inf keeps softmax finite; zeroing afterwards makes an
        # all-padding row exactly 0 (softmax alone would spread it uniformly over the padding).
        scores = scores.masked_fill(~keep, torch.finfo(torch.float32).min)
        probs = torch.softmax(scores, dim=-1) * keep
    else:
        probs = torch.softmax(scores, dim=-1)
    if dropout_mask is not None:
        probs = probs * dropout_mask
    elif dropout_p > 0:
        probs = torch.nn.functional.dropout(probs, dropout_p)
    out = torch.matmul(probs.to(v.dtype), v)  # (B, H, T, d)
    if head_scale is not None:
        out = out * head_scale.to(out.dtype).view(1, H, 1, 1)
    return out.transpose(1, 2).contiguous()  # (B, T, H, d)


def reference_attention_varlen(q, k, v, cu_seqlens, max_seqlen, head_scale=None, scaling=None):
    """Plain PyTorch version of ``attention_varlen`` (one ``reference_attention`` per sequence)."""
    total, H, d = q.shape
    bounds = cu_seqlens.tolist()
    pieces = []
    if bounds and bounds[0] > 0:  # tokens before the first sequence belong to none: zeros
        pieces.append(q.new_zeros((bounds[0], H, d)))
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        seq = lambda t: t[start:end].transpose(0, 1).unsqueeze(0)  # (1, H, L, d)
        pieces.append(reference_attention(seq(q), seq(k), seq(v), None, head_scale, scaling)[0])  # (L, H, d)
    tail = total - (bounds[-1] if bounds else 0)
    if tail > 0:
        pieces.append(q.new_zeros((tail, H, d)))
    if not pieces:
        return q.new_zeros((total, H, d))
    return torch.cat(pieces, dim=0)
