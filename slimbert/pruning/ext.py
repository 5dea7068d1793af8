"""Weight-gather helper used by collapse, with an optional C++ extension.

`gather_scaled` selects the kept rows/columns of a weight (or kept entries of a
bias) and folds per-unit gate values into them. The C++ version in
csrc/collapse.cpp is compiled on first use; when it cannot be built or loaded the
pure-PyTorch fallback is used, which gives bit-identical results.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import torch

__all__ = ["load_extension", "gather_scaled", "gather_scaled_torch", "backend_name"]

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "collapse.cpp"
_EXT_NAME = "slimbert_collapse"
_DISABLE_ENV = "SLIMBERT_NO_CPP"
_BACKENDS = ("auto", "cpp", "torch")

# One load attempt per process: a failed compile takes a while and would fail again.
_lock = threading.Lock()
_ext: Any = None
_attempted = False
_failure: Optional[str] = None


def _disabled_by_env() -> bool:
    return os.environ.get(_DISABLE_ENV, "").strip() == "1"


def _reset_cache() -> None:
    """Forget any loaded module or failure, so the next call tries again (for tests)."""
    global _ext, _attempted, _failure
    with _lock:
        _ext, _attempted, _failure = None, False, None


def load_extension() -> Any:
    """Return the compiled C++ module, or None if disabled or unavailable.

    Compiles csrc/collapse.cpp on the first call (ninja, about a minute); the result,
    success or failure, is cached for the rest of the process. A failure is reported
    once with `warnings.warn`. Setting SLIMBERT_NO_CPP=1 skips the extension.
    """
    global _ext, _attempted, _failure
    # Checked before the cache so the variable can be flipped within a process.
    if _disabled_by_env():
        return None
    with _lock:
        if _attempted:
            return _ext
        _attempted = True
        try:
            if not _SOURCE.is_file():
                raise FileNotFoundError(
                    f"C++ source {_SOURCE} not found (a non-editable install does not ship csrc/)"
                )
            # Imported lazily: cpp_extension pulls in setuptools and friends.
            from torch.utils.cpp_extension import load

            logger.info("compiling slimbert C++ collapse extension (first use only)")
            start = time.perf_counter()
            _ext = load(
                name=_EXT_NAME,
                sources=[str(_SOURCE)],
                extra_cflags=["-O2"],
                verbose=False,
            )
            logger.info("slimbert C++ collapse extension ready in %.1f s", time.perf_counter() - start)
        except Exception as exc:  # any failure means "use the fallback", never crash
            _ext = None
            _failure = f"{type(exc).__name__}: {exc}".strip()
            warnings.warn(
                "slimbert C++ collapse extension unavailable, using the pure-PyTorch "
                f"fallback (results are identical, only slower). Reason: {_failure}",
                RuntimeWarning,
                stacklevel=2,
            )
        return _ext


def backend_name() -> str:
    """Which backend `backend="auto"` would use: "cpp" or "torch"."""
    return "cpp" if load_extension() is not None else "torch"


def _validate(weight: torch.Tensor, index: torch.Tensor, dim: int, scale: Optional[torch.Tensor]) -> int:
    """Check inputs with readable errors; return `dim` normalised to be non-negative."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"index must be a torch.Tensor, got {type(index).__name__}")
    ndim = weight.dim()
    if ndim < 1:
        raise ValueError("weight must have at least 1 dimension, got a 0-d tensor")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim {dim} is out of range for a weight of shape {tuple(weight.shape)}")
    dim %= ndim
    if index.dim() != 1:
        raise ValueError(f"index must be 1-D, got shape {tuple(index.shape)}")
    if index.dtype != torch.int64:
        raise ValueError(f"index must be int64 (torch.long), got {index.dtype}")
    if index.device != weight.device:
        raise ValueError(f"index is on {index.device} but weight is on {weight.device}")
    size = weight.shape[dim]
    if index.numel() > 0:
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= size:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"index value {bad} is out of bounds for dim {dim} of size {size} "
                f"(weight shape {tuple(weight.shape)}); valid indices are 0..{size - 1}"
            )
    if scale is not None:
        if not isinstance(scale, torch.Tensor):
            raise TypeError(f"scale must be a torch.Tensor or None, got {type(scale).__name__}")
        if scale.dim() != 1:
            raise ValueError(f"scale must be 1-D, got shape {tuple(scale.shape)}")
        if scale.shape[0] != index.shape[0]:
            raise ValueError(
                f"scale has length {scale.shape[0]} but index has length {index.shape[0]}; "
                "there must be one scale value per kept index"
            )
        if scale.dtype != weight.dtype:
            raise ValueError(f"scale dtype {scale.dtype} must match weight dtype {weight.dtype}")
        if scale.device != weight.device:
            raise ValueError(f"scale is on {scale.device} but weight is on {weight.device}")
    return dim


def gather_scaled_torch(
    weight: torch.Tensor, index: torch.Tensor, dim: int, scale: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Pure-PyTorch `weight.index_select(dim, index)`, each slice times its scale; contiguous.

    Inputs are assumed valid (see `gather_scaled`). The op order mirrors
    csrc/collapse.cpp exactly so both paths are bit-identical.
    """
    out = weight.index_select(dim, index)
    if scale is not None:
        shape = [1] * weight.dim()
        shape[dim] = scale.shape[0]
        out = out.mul(scale.reshape(shape))
    return out.contiguous()


def gather_scaled(
    weight: torch.Tensor,
    index: torch.Tensor,
    dim: int,
    scale: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Gather `index` along `dim` of `weight`, optionally scaling each selected slice.

    backend: "auto" (C++ if it loads, else torch), "cpp" (C++ required, RuntimeError
    if unavailable) or "torch". Bad inputs raise ValueError/TypeError here rather than
    inside the extension.
    """
    dim = _validate(weight, index, dim, scale)
    ext = _extension(backend)
    if ext is None:
        return gather_scaled_torch(weight, index, dim, scale)
    return ext.gather_scaled(weight, index, dim, scale)


def _extension(backend: str):
    """The loaded extension for ``backend``, or None for the torch path; RuntimeError when
    backend="cpp" cannot be had."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "torch":
        return None
    ext = load_extension()
    if ext is None and backend == "cpp":
        if _disabled_by_env():
            reason = f"it is disabled by the environment variable {_DISABLE_ENV}=1 (unset it)"
        else:
            reason = (
                f"it failed to compile or load ({_failure}); install a C++ compiler "
                "(g++/clang++) and ninja (`pip install ninja`), then restart Python"
            )
        raise RuntimeError(f"backend='cpp' requested but the slimbert C++ extension is unavailable: {reason}")
    return ext


def gather_scaled_many(jobs: list[tuple], backend: str = "auto") -> list[torch.Tensor]:
    """:func:`gather_scaled` for every ``(weight, index, dim, scale)`` job, in one call.

    The C++ backend runs all jobs in one parallel pass over the CPU threads; the torch backend
    loops. Results are bit-identical either way.
    """
    jobs = [(w, i, _validate(w, i, d, s), s) for w, i, d, s in jobs]
    ext = _extension(backend)
    if ext is None or not jobs:
        return [gather_scaled_torch(*job) for job in jobs]
    weights, indices, dims, scales = (list(x) for x in zip(*jobs))
    return ext.gather_scaled_many(weights, indices, dims, scales)
