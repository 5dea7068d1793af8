"""Triton attention (padded and varlen) against the fp32 PyTorch reference: outputs and grads."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slimbert.kernels import attention, attention_varlen, dropout_mask, reference_attention, reference_attention_varlen, use_triton

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# The kernel runs in the given dtype and is compared with the reference run in fp32 on the
# same (already rounded) values, so these bound the kernel's own rounding only.
TOL = {
    torch.float32: dict(atol=2e-5, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}


def _inputs(B, H, T, d, dtype, device, gate=True):
    """q, k, v in ``dtype`` plus fp32 leaf copies of the same values, and a gate (fp32 leaves)."""
    qkv = [torch.randn(B, H, T, d, device=device).to(dtype).requires_grad_() for _ in range(3)]
    ref = [t.detach().float().requires_grad_() for t in qkv]
    hs = hs_ref = None
    if gate:
        hs0 = torch.rand(H, device=device) + 0.5
        if H > 1:
            hs0[1] = 0.0  # a pruned head: its output is 0 but its gate still needs a gradient
        hs, hs_ref = hs0.clone().requires_grad_(), hs0.clone().requires_grad_()
    return qkv, ref, hs, hs_ref


def _check_fwd_bwd(qkv, ref, hs, hs_ref, mask, dtype, scaling=None, grad_out=None, dropout_p=0.0, seed=None):
    q, k, v = qkv
    assert use_triton(q), "kernel tests must run the Triton path (CUDA or TRITON_INTERPRET=1)"
    B, H, T, d = q.shape
    out = attention(q, k, v, key_padding_mask=mask, head_scale=hs, scaling=scaling, dropout_p=dropout_p, seed=seed)
    drop = dropout_mask(B, H, T, dropout_p, seed, device=q.device) if dropout_p else None
    expected = reference_attention(*ref, key_padding_mask=mask, head_scale=hs_ref, scaling=scaling, dropout_mask=drop)
    assert out.shape == (B, T, H, d) and out.dtype == dtype and out.is_contiguous()
    torch.testing.assert_close(out.float(), expected, **TOL[dtype])

    g = grad_out if grad_out is not None else torch.randn_like(expected).to(dtype)
    out.backward(g)
    expected.backward(g.float())
    for name, got, want in zip("qkv", qkv, ref):
        assert got.grad.dtype == dtype, name
        torch.testing.assert_close(got.grad.float(), want.grad, **TOL[dtype], msg=lambda m: f"d{name}: {m}")
    if hs is not None:
        # d(head_scale) sums B*T*d products: compare relative to its scale.
        torch.testing.assert_close(hs.grad, hs_ref.grad, atol=TOL[dtype]["atol"] * B * T * d ** 0.5,
                                   rtol=TOL[dtype]["rtol"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize("T", [1, 7, 33])
@pytest.mark.parametrize("H", [0, 1, 5, 7, 12])
def test_attention_matches_reference(H, T, d, dtype, device):
    B = 2
    qkv, ref, hs, hs_ref = _inputs(B, H, T, d, dtype, device)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    mask[1, T // 2 + 1:] = False  # second sequence right-padded
    _check_fwd_bwd(qkv, ref, hs, hs_ref, mask, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_no_mask_no_gate(dtype, device):
    qkv, ref, _, _ = _inputs(2, 3, 20, 32, dtype, device, gate=False)
    _check_fwd_bwd(qkv, ref, None, None, None, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_all_padding_row_is_zero(dtype, device):
    B, H, T, d = 3, 2, 9, 32
    qkv, ref, hs, hs_ref = _inputs(B, H, T, d, dtype, device)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    mask[1, 4:] = False
    mask[2] = False  # every key padded: output and grads must be 0, never NaN
    _check_fwd_bwd(qkv, ref, hs, hs_ref, mask, dtype)
    out = attention(*(t.detach() for t in qkv), key_padding_mask=mask, head_scale=hs.detach())
    assert torch.all(out[2] == 0)
    for t in qkv:
        assert torch.isfinite(t.grad).all() and torch.all(t.grad[2] == 0)
    assert torch.isfinite(hs.grad).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d", [24, 80])
def test_attention_head_dim_not_power_of_two(d, dtype, device):
    B, T = 2, 18
    qkv, ref, hs, hs_ref = _inputs(B, 3, T, d, dtype, device)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    mask[0, 11:] = False
    _check_fwd_bwd(qkv, ref, hs, hs_ref, mask, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_strided_inputs_and_grad(dtype, device):
    # The model feeds (B, T, H, d) projections transposed to (B, H, T, d): no copy is required,
    # and a non-contiguous upstream gradient must work too.
    B, H, T, d = 2, 4, 17, 32
    qkv = [torch.randn(B, T, H, d, device=device).to(dtype).requires_grad_() for _ in range(3)]
    ref = [t.detach().float().requires_grad_() for t in qkv]
    views = [t.transpose(1, 2) for t in qkv]
    ref_views = [t.transpose(1, 2) for t in ref]
    hs = torch.rand(H, device=device).requires_grad_()
    hs_ref = hs.detach().clone().requires_grad_()
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    mask[1, 9:] = False
    g = torch.randn(B, H, T, d, device=device).to(dtype).transpose(1, 2)  # (B, T, H, d), strided
    out = attention(*views, key_padding_mask=mask, head_scale=hs, scaling=0.3)
    expected = reference_attention(*ref_views, key_padding_mask=mask, head_scale=hs_ref, scaling=0.3)
    torch.testing.assert_close(out.float(), expected, **TOL[dtype])
    out.backward(g)
    expected.backward(g.float())
    for got, want in zip(qkv, ref):
        torch.testing.assert_close(got.grad.float(), want.grad, **TOL[dtype])
    torch.testing.assert_close(hs.grad, hs_ref.grad, atol=TOL[dtype]["atol"] * B * T * d ** 0.5,
                               rtol=TOL[dtype]["rtol"])


def test_attention_integer_mask_and_mixed_dtypes(device):
    # A 0/1 long mask (HF attention_mask) and fp32 k / v with an fp16 q: k, v follow q's dtype.
    B, H, T, d = 2, 2, 10, 32
    q = torch.randn(B, H, T, d, device=device).half()
    k, v = torch.randn(B, H, T, d, device=device), torch.randn(B, H, T, d, device=device)
    mask = torch.ones(B, T, dtype=torch.long, device=device)
    mask[0, 6:] = 0
    out = attention(q, k, v, key_padding_mask=mask)
    expected = reference_attention(q.float(), k.half().float(), v.half().float(), key_padding_mask=mask.bool())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), expected, **TOL[torch.float16])


def test_attention_zero_heads(device):
    q, k, v = (torch.randn(2, 0, 5, 32, device=device, requires_grad=True) for _ in range(3))
    hs = torch.ones(0, device=device, requires_grad=True)
    out = attention(q, k, v, head_scale=hs)
    assert out.shape == (2, 5, 0, 32)
    out.sum().backward()
    assert q.grad.shape == q.shape and hs.grad.shape == (0,)


# ---------------------------------------------------------------------------------------------
# Attention dropout (the gated model trains with BERT's attention_probs_dropout_prob)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T", [7, 33])
@pytest.mark.parametrize("H", [1, 5])
def test_attention_dropout_matches_reference_with_the_kernels_mask(H, T, dtype, device):
    B, d, p = 2, 32, 0.3
    qkv, ref, hs, hs_ref = _inputs(B, H, T, d, dtype, device)
    mask = torch.ones(B, T, dtype=torch.bool, device=device)
    mask[1, T // 2 + 1:] = False
    _check_fwd_bwd(qkv, ref, hs, hs_ref, mask, dtype, dropout_p=p, seed=1234)


def test_dropout_mask_rate_and_seeds(device):
    B, H, T, p = 2, 4, 64, 0.1
    z = dropout_mask(B, H, T, p, seed=7, device=device)
    assert z.shape == (B, H, T, T)
    dropped = (z == 0).float().mean().item()
    assert abs(dropped - p) < 0.01, dropped  # 32,768 draws: 6 standard deviations
    assert torch.equal(z, dropout_mask(B, H, T, p, seed=7, device=device))
    assert not torch.equal(z, dropout_mask(B, H, T, p, seed=8, device=device))
    assert not torch.equal(z[0, 0], z[0, 1]) and not torch.equal(z[0, 0], z[1, 0])  # heads, sequences differ


def test_attention_dropout_follows_torch_seed_and_rejects_bad_rate(device):
    q, k, v = (torch.randn(2, 3, 9, 32, device=device) for _ in range(3))
    torch.manual_seed(0)
    a = attention(q, k, v, dropout_p=0.2)
    torch.manual_seed(0)
    b = attention(q, k, v, dropout_p=0.2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, attention(q, k, v))
    with pytest.raises(ValueError, match="dropout_p"):
        attention(q, k, v, dropout_p=1.0)


# ---------------------------------------------------------------------------------------------
# Variable length (packed) forward
# ---------------------------------------------------------------------------------------------


def _pack_reference(q, k, v, lengths, head_scale):
    """Padded (B, H, T, d) fp32 reference with a key mask, unpacked back to (total, H, d)."""
    total, H, d = q.shape
    B, T = len(lengths), max(max(lengths), 1)
    padded = [q.new_zeros(B, H, T, d).float() for _ in range(3)]
    mask = torch.zeros(B, T, dtype=torch.bool, device=q.device)
    start = 0
    for i, n in enumerate(lengths):
        for dst, src in zip(padded, (q, k, v)):
            dst[i, :, :n] = src[start:start + n].transpose(0, 1).float()
        mask[i, :n] = True
        start += n
    out = reference_attention(*padded, key_padding_mask=mask, head_scale=head_scale)  # (B, T, H, d)
    return torch.cat([out[i, :n] for i, n in enumerate(lengths)], dim=0)


def _cu(lengths, device):
    return torch.tensor([0] + lengths, device=device).cumsum(0).to(torch.int32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize("H", [1, 5])
def test_varlen_matches_padded_reference(H, d, dtype, device):
    lengths = [5, 0, 19, 1, 33]  # includes an empty sequence
    total = sum(lengths)
    q, k, v = (torch.randn(total, H, d, device=device).to(dtype) for _ in range(3))
    hs = torch.rand(H, device=device) + 0.5
    cu = _cu(lengths, device)
    expected = _pack_reference(q, k, v, lengths, hs)
    with torch.no_grad():
        out = attention_varlen(q, k, v, cu, max(lengths), head_scale=hs)
    assert out.shape == (total, H, d) and out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, **TOL[dtype])
    ref = reference_attention_varlen(q.float(), k.float(), v.float(), cu, max(lengths), head_scale=hs)
    torch.testing.assert_close(ref, expected, **TOL[torch.float32])


def test_varlen_all_empty_and_no_gate(device):
    q = torch.randn(0, 3, 32, device=device)
    out = attention_varlen(q, q, q, _cu([0, 0], device), 0)
    assert out.shape == (0, 3, 32)
    lengths = [0, 7]
    q, k, v = (torch.randn(7, 2, 32, device=device) for _ in range(3))
    out = attention_varlen(q, k, v, _cu(lengths, device), 7, scaling=0.2)
    expected = reference_attention(*(t.transpose(0, 1)[None] for t in (q, k, v)), scaling=0.2)[0]
    torch.testing.assert_close(out, expected, **TOL[torch.float32])


def test_varlen_with_grad_uses_differentiable_reference(device):
    lengths = [3, 6]
    q, k, v = (torch.randn(9, 2, 32, device=device, requires_grad=True) for _ in range(3))
    out = attention_varlen(q, k, v, _cu(lengths, device), 6)
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------


def test_use_triton_env_override(monkeypatch, device):
    t = torch.zeros(1, device=device)
    assert use_triton(t)
    monkeypatch.setenv("SLIMBERT_KERNELS", "torch")
    assert not use_triton(t)


def test_import_without_triton():
    # kernels must import (and fall back to the references) on installs without triton.
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\nimport slimbert.kernels as kernels\n"
        "assert not kernels.HAS_TRITON and not kernels.use_triton(torch.zeros(1))\n"
        "q = torch.randn(1, 2, 3, 32)\n"
        "assert kernels.attention(q, q, q).shape == (1, 3, 2, 32)\n"
        "w = torch.randn(5, 32)\n"
        "assert kernels.ffn(q, w, None, w.t(), None).shape == q.shape\n"
    )
    env = dict(os.environ, TRITON_INTERPRET="1", SLIMBERT_KERNELS="auto")
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
