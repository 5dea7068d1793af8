"""Triton feed-forward block against the fp32 PyTorch reference: outputs and grads."""

import pytest
import torch

from slimbert.kernels import ffn, reference_ffn, use_triton

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Kernel in ``dtype`` vs reference in fp32 on the same rounded values (weights init ~ 1/sqrt(fan_in)).
TOL = {
    torch.float32: dict(atol=5e-5, rtol=1e-4),
    torch.float16: dict(atol=5e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=4e-2, rtol=3e-2),
}
D = 40  # not a multiple of the tile sizes, so every edge mask is exercised


def _params(D, F, dtype, device, bias=True, gate=True):
    """(x-less) parameter list in ``dtype``; the gate stays fp32 like a pruning mask parameter."""
    w1 = torch.randn(F, D, device=device) * D ** -0.5
    b1 = torch.randn(F, device=device) * 0.1 if bias else None
    w2 = torch.randn(D, F, device=device) * max(F, 1) ** -0.5
    b2 = torch.randn(D, device=device) * 0.1 if bias else None
    params = [t if t is None else t.to(dtype) for t in (w1, b1, w2, b2)]
    if gate:
        s = torch.rand(F, device=device) + 0.5
        if F > 1:
            s[0] = 0.0  # a pruned unit: it still needs a gradient
        params.append(s)
    else:
        params.append(None)
    return params


def _check(x, params, dtype):
    assert use_triton(x), "kernel tests must run the Triton path (CUDA or TRITON_INTERPRET=1)"
    leaves = [x] + params
    mine = [t if t is None else t.clone().requires_grad_() for t in leaves]
    ref = [t if t is None else t.detach().float().requires_grad_() for t in leaves]
    out = ffn(*mine)
    expected = reference_ffn(*ref)
    assert out.shape == x.shape[:-1] + (params[2].shape[0],) and out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, **TOL[dtype])

    g = torch.randn_like(expected).to(dtype)
    out.backward(g)
    expected.backward(g.float())
    rows = x.numel() // x.shape[-1]
    for name, got, want in zip(["x", "w1", "b1", "w2", "b2", "unit_scale"], mine, ref):
        if got is None:
            continue
        assert got.grad is not None and got.grad.dtype == got.dtype, name
        # Weight / bias / gate grads sum over all rows: widen atol with the row count.
        atol = TOL[dtype]["atol"] * (1 if name == "x" else max(rows, 1) ** 0.5)
        torch.testing.assert_close(got.grad.float(), want.grad, atol=atol, rtol=TOL[dtype]["rtol"],
                                   msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lead", [(1,), (2, 7), (3, 2, 5)], ids=str)
@pytest.mark.parametrize("F", [0, 1, 37, 397])
def test_ffn_matches_reference(F, lead, dtype, device):
    x = torch.randn(*lead, D, device=device).to(dtype)
    _check(x, _params(D, F, dtype, device), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ffn_without_bias_or_gate(dtype, device):
    x = torch.randn(6, D, device=device).to(dtype)
    _check(x, _params(D, 37, dtype, device, bias=False, gate=False), dtype)


def test_ffn_zero_width_is_output_bias(device):
    x = torch.randn(2, 3, D, device=device)
    w1, b1, w2, b2, s = _params(D, 0, torch.float32, device)
    out = ffn(x, w1, b1, w2, b2, s)
    torch.testing.assert_close(out, b2.expand(2, 3, D))


def test_ffn_no_rows(device):
    x = torch.randn(0, D, device=device, requires_grad=True)
    w1, b1, w2, b2, s = (t.requires_grad_() for t in _params(D, 37, torch.float32, device))
    out = ffn(x, w1, b1, w2, b2, s)
    assert out.shape == (0, D)
    out.sum().backward()
    assert torch.all(w1.grad == 0) and torch.all(b2.grad == 0)


def test_ffn_mixed_dtypes(device):
    # fp16 activations with fp32 master weights: compute in fp16, grads come back in fp32.
    x = torch.randn(5, D, device=device).half().requires_grad_()
    w1, b1, w2, b2, s = (t.requires_grad_() for t in _params(D, 37, torch.float32, device))
    out = ffn(x, w1, b1, w2, b2, s)
    assert out.dtype == torch.float16
    expected = reference_ffn(x.float(), *(t.half().float() for t in (w1, b1, w2, b2)), s)
    torch.testing.assert_close(out.float(), expected, **TOL[torch.float16])
    out.float().sum().backward()
    assert w1.grad.dtype == torch.float32 and s.grad.dtype == torch.float32 and x.grad.dtype == torch.float16


def test_ffn_strided_input(device):
    x = torch.randn(D, 6, device=device).t()  # (6, D), non-contiguous
    params = _params(D, 37, torch.float32, device)
    torch.testing.assert_close(ffn(x, *params), reference_ffn(x, *params), **TOL[torch.float32])


def test_padded_weights_follow_in_place_updates(device):
    # Odd widths run on zero-padded copies kept between inference calls; an in-place weight update
    # (an optimizer step, load_state_dict) must be seen by the next call.
    x = torch.randn(2, 5, D, device=device)
    w1, b1, w2, b2, _ = _params(D, 37, torch.float32, device, gate=False)
    with torch.no_grad():
        torch.testing.assert_close(ffn(x, w1, b1, w2, b2), reference_ffn(x, w1, b1, w2, b2), **TOL[torch.float32])
        w1.mul_(-2.0)
        b2.add_(1.0)
        torch.testing.assert_close(ffn(x, w1, b1, w2, b2), reference_ffn(x, w1, b1, w2, b2), **TOL[torch.float32])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="TF32 exists only on a GPU (the interpreter multiplies in fp32)")
def test_fp32_default_tf32_within_its_documented_tolerance(monkeypatch, device):
    monkeypatch.delenv("SLIMBERT_FP32_DOT")  # the default: TF32 tensor cores, relative error ~1e-3
    x = torch.randn(4, 384, 768, device=device)
    params = _params(768, 1536, torch.float32, device, gate=False)
    torch.testing.assert_close(ffn(x, *params), reference_ffn(x, *params), atol=2e-2, rtol=2e-2)
