"""Shared launch helpers: the guarded triton import, ``use_triton``, the dot operand dtype /
precision choices, block-size / num_warps heuristics and the ``ensure_contiguous`` decorator."""

import functools
import os
from types import SimpleNamespace

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # CPU-only install: kernels never launch, but their modules must still import
    HAS_TRITON = False
    triton = SimpleNamespace(jit=lambda fn=None, **_: fn if fn is not None else (lambda f: f))
    tl = SimpleNamespace(constexpr=None)


SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # others run the references


def is_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def use_triton(t: torch.Tensor) -> bool:
    """Whether the Triton path runs for tensor ``t``: ``SLIMBERT_KERNELS``, the one switch, read at call time.

    ``auto`` (default): Triton for CUDA tensors, PyTorch elsewhere. ``torch``: always PyTorch.
    ``triton``: always Triton, on a CPU under ``TRITON_INTERPRET=1`` (how CI runs the kernels); where
    it cannot run, an error says why, never a silent fallback. Dtypes the kernels lack run PyTorch.
    """
    mode = os.environ.get("SLIMBERT_KERNELS", "auto")
    if mode not in ("auto", "torch", "triton"):
        raise ValueError(f"SLIMBERT_KERNELS must be auto, torch or triton, got {mode!r}")
    if mode == "torch" or t.dtype not in SUPPORTED_DTYPES:
        return False
    if mode == "auto":
        return HAS_TRITON and t.is_cuda
    if not HAS_TRITON:
        raise RuntimeError("SLIMBERT_KERNELS=triton but triton is not installed: pip install triton, or unset SLIMBERT_KERNELS")
    if not (t.is_cuda or is_interpreting()):
        raise RuntimeError("SLIMBERT_KERNELS=triton on a CPU tensor needs TRITON_INTERPRET=1 (set before triton is imported)")
    return True


def ensure_contiguous(fn):
    """Make every tensor argument contiguous before calling ``fn`` (autograd ctx passes through)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = [a.contiguous() if isinstance(a, torch.Tensor) else a for a in args]
        kwargs = {k: (v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        return fn(*args, **kwargs)

    return wrapper


def next_pow2(n: int, floor: int = 16) -> int:
    """Smallest power of two >= n, at least ``floor`` (tl.dot needs every dim >= 16)."""
    p = floor
    while p < n:
        p *= 2
    return p


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 dots follow torch's matmul setting: exact unless the user opted into TF32."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"  # ignored by the backend for fp16 / bf16 operands


def dot_dtype(dtype: torch.dtype):
    """Operand dtype the kernels feed tl.dot (their ``DOT`` constexpr): the input dtype, except
    bf16 under the interpreter, whose tl.dot multiplies bf16 as raw uint16 bits.

    Kernels round to the input dtype first and then cast to ``DOT``; bf16 -> fp32 is exact and the
    GPU accumulates bf16 products in fp32 anyway, so the interpreter matches the compiled kernel.
    """
    if dtype == torch.bfloat16 and is_interpreting():
        return tl.float32
    return {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}[dtype]


# ---------------------------------------------------------------------------------------------
# Block-size heuristics. Under the interpreter blocks are kept small (32 rows) so that the small
# test shapes (T = 33, F = 37, 397) still span several tiles and hit every edge mask and loop carry.
# On GPUs every config stays within 98 KiB of shared memory (checked by compiling for sm_80 /
# sm_90), so it also fits consumer parts (99 KiB per block); fp32 operands take smaller tiles.
# ---------------------------------------------------------------------------------------------


def attention_fwd_config(head_dim: int, dtype: torch.dtype) -> dict:
    block_d = next_pow2(head_dim)
    if is_interpreting():
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=block_d, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        if block_d <= 64:
            return dict(BLOCK_M=64, BLOCK_N=32, BLOCK_D=block_d, num_warps=4, num_stages=2)
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=block_d, num_warps=4 if block_d <= 128 else 8, num_stages=1)
    if block_d <= 64:
        return dict(BLOCK_M=128, BLOCK_N=64, BLOCK_D=block_d, num_warps=4, num_stages=3)
    if block_d <= 128:
        return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_D=block_d, num_warps=4, num_stages=2)
    return dict(BLOCK_M=64, BLOCK_N=32, BLOCK_D=block_d, num_warps=8, num_stages=2)


def attention_bwd_config(head_dim: int, dtype: torch.dtype) -> dict:
    block_d = next_pow2(head_dim)
    if is_interpreting():
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=block_d, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        if block_d <= 64:
            return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=block_d, num_warps=4, num_stages=2)
        return dict(BLOCK_M=16, BLOCK_N=32, BLOCK_D=block_d, num_warps=4 if block_d <= 128 else 8, num_stages=1)
    if block_d <= 64:
        return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_D=block_d, num_warps=4, num_stages=2)
    if block_d <= 128:
        return dict(BLOCK_M=32, BLOCK_N=64, BLOCK_D=block_d, num_warps=8, num_stages=2)
    return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=block_d, num_warps=8, num_stages=1)


def matmul_config(M: int, N: int, K: int, dtype: torch.dtype) -> dict:
    if is_interpreting():
        return dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, GROUP_M=4, num_warps=4, num_stages=1)
    # Skinny problems (few tokens at inference) waste most of a 128-row tile.
    block_m = 128 if M > 64 else 64 if M > 32 else 32 if M > 16 else 16
    block_n = 128 if N >= 128 else 64
    block_k = 64 if K >= 64 and dtype != torch.float32 else 32
    num_warps = 8 if block_m * block_n >= 128 * 128 else 4
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8, num_warps=num_warps,
                num_stages=3 if dtype != torch.float32 else 2)
