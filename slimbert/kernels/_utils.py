"""Shared launch helpers: the guarded triton import, ``use_triton`` and the fallback ``run_kernel``,
the dot operand dtype / precision choices and the tile configs."""

import os
import warnings
from types import SimpleNamespace

import torch

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # CPU-only install: kernels never launch, but their modules must still import
    HAS_TRITON = False
    triton = SimpleNamespace(jit=lambda fn=None, **_: fn if fn is not None else (lambda f: f),
                             autotune=lambda *_, **__: (lambda f: f), Config=lambda *_, **__: None)
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


def is_exporting() -> bool:
    """ONNX / torch.export capture: the reference math exports everywhere, a Triton launch does not."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


_FAILED: set = set()  # ops whose kernel failed on this device: they run PyTorch from then on


def run_kernel(op: str, kernel, reference):
    """``kernel()``, or ``reference()`` with one warning if the kernel fails to compile or launch.

    Under ``SLIMBERT_KERNELS=auto`` a prune never dies inside a kernel: the op falls back to PyTorch
    for the rest of the process. ``SLIMBERT_KERNELS=triton`` (asked for the kernels) re-raises.
    """
    if op in _FAILED:
        return reference()
    try:
        return kernel()
    except torch.OutOfMemoryError:
        raise  # not the kernel's fault: PyTorch would need the memory too
    except Exception as e:  # noqa: BLE001 - compile / launch errors come as many types
        if os.environ.get("SLIMBERT_KERNELS", "auto") == "triton":
            raise
        _FAILED.add(op)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"slimbert: the Triton {op} kernel failed ({type(e).__name__}: {first}); {op} runs in PyTorch "
                      "from now on (SLIMBERT_KERNELS=torch avoids the kernels, =triton makes this an error)",
                      RuntimeWarning, stacklevel=3)
        return reference()


def next_pow2(n: int, floor: int = 16) -> int:
    """Smallest power of two >= n, at least ``floor`` (tl.dot needs every dim >= 16)."""
    p = floor
    while p < n:
        p *= 2
    return p


def dot_precision(dtype: torch.dtype) -> str:
    """How fp32 inputs multiply in the kernels' dots: ``SLIMBERT_FP32_DOT``, read at call time.

    ``tf32`` (default): tensor cores with 10-bit mantissas and fp32 accumulation, relative error
    about 1e-3 (the choice cuDNN makes for convolutions by default): ieee fp32 has no tensor-core
    path, runs on scalar FMA at a fraction of the speed and spills registers at useful tile sizes
    (bench/compile_check.py). ``ieee``: exact fp32 products, for bit-for-bit comparisons with a
    reference. fp16 / bf16 inputs ignore it. (The interpreter computes every dot in fp32.)
    """
    mode = os.environ.get("SLIMBERT_FP32_DOT", "tf32")
    if mode not in ("tf32", "ieee"):
        raise ValueError(f"SLIMBERT_FP32_DOT must be tf32 or ieee, got {mode!r}")
    return mode if dtype == torch.float32 else "tf32"


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
# Tile configs. On a GPU the forward kernels are autotuned (``autotune_configs``) over tiles that
# include small ones, so a batch-1 launch still fills the SMs; the candidates are pruned to those
# that fit 96 KiB of shared memory (consumer parts too) and, for the attention forward's training
# variant, to tiles that bench/compile_check.py found free of register spills. Under the interpreter
# one small config (32-row tiles) is used so that the tests' small shapes (T = 33, F = 37) still
# span several tiles and hit every edge mask and loop carry.
# ---------------------------------------------------------------------------------------------

SMEM_BUDGET = 96 * 1024


def pow2_bucket(n: int) -> int:
    """Autotuning key for a size that changes every batch (tokens, sequence length)."""
    return next_pow2(max(int(n), 1), floor=1)


def _config(num_warps, num_stages, **blocks):
    return triton.Config(blocks, num_warps=num_warps, num_stages=num_stages)


def matmul_configs() -> list:
    if is_interpreting():
        return [_config(4, 1, BLOCK_M=16, BLOCK_N=32, BLOCK_K=32)]
    return [_config(w, s, BLOCK_M=m, BLOCK_N=n, BLOCK_K=k) for m, n, k, w, s in (
        (128, 128, 64, 8, 3), (128, 128, 32, 8, 4), (128, 64, 64, 4, 3), (64, 128, 64, 4, 3),
        (64, 64, 64, 4, 3), (64, 64, 32, 4, 4), (32, 64, 64, 4, 3), (16, 64, 64, 4, 3),
    )]


def prune_matmul_configs(configs, named_args, **kwargs):
    """Drop tiles over the shared-memory budget (fp32 operands take twice the bytes) and tiles far
    taller than the problem (a 16-token batch gains nothing from 128-row tiles)."""
    size = named_args["A"].element_size()
    m = named_args["M"]
    keep = [c for c in configs
            if (c.kwargs["BLOCK_M"] + c.kwargs["BLOCK_N"]) * c.kwargs["BLOCK_K"] * size * c.num_stages <= SMEM_BUDGET
            and c.kwargs["BLOCK_M"] <= max(16, next_pow2(m, floor=16))]
    return keep or configs[-1:]


def attention_fwd_configs() -> list:
    if is_interpreting():
        return [_config(4, 1, BLOCK_M=32, BLOCK_N=32)]
    return [_config(w, s, BLOCK_M=m, BLOCK_N=n) for m, n, w, s in (
        (128, 64, 8, 3), (128, 64, 4, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 3), (32, 32, 4, 2),
    )]


def prune_attention_fwd_configs(configs, named_args, **kwargs):
    """Tiles within the shared-memory budget; with dropout (training), only the tiles that keep the
    extra random-number registers off the stack."""
    size = named_args["Q"].element_size()
    d = kwargs["BLOCK_D"]
    keep = []
    for c in configs:
        m, n = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        if (m * d + 2 * n * d * c.num_stages) * size > SMEM_BUDGET:
            continue
        if kwargs["HAS_DROPOUT"] and m * n > 64 * 32 and not is_interpreting():
            continue
        if not is_interpreting() and ((size == 4 and m > 64) or (m * d >= 128 * 64 and c.num_warps < 8)):
            continue  # fp32 (TF32) operands, and 128-row tiles of wide heads on 4 warps, spill registers
        keep.append(c)
    return keep or configs[-1:]


def attention_bwd_config(head_dim: int, dtype: torch.dtype) -> dict:
    """Backward tiles (not autotuned: training batches are large enough to fill the SMs)."""
    block_d = next_pow2(head_dim)
    if is_interpreting():
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=block_d, num_warps=4, num_stages=1)
    if dtype == torch.float32:  # TF32 operands: half the tile of fp16 / bf16
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=block_d, num_warps=4 if block_d <= 64 else 8, num_stages=3)
    if block_d <= 32:
        return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_D=block_d, num_warps=4, num_stages=2)
    if block_d <= 64:
        return dict(BLOCK_M=32, BLOCK_N=64, BLOCK_D=block_d, num_warps=8, num_stages=2)
    return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_D=block_d, num_warps=8, num_stages=2)  # 64-key tiles spill at d > 64
