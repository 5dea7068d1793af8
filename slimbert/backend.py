"""Which implementation runs a layer: the Triton kernels (kernels/) or PyTorch.

``SLIMBERT_KERNELS``: ``auto`` (default) runs Triton for CUDA tensors and PyTorch elsewhere;
``torch`` always PyTorch; ``triton`` always Triton (on a CPU only under ``TRITON_INTERPRET=1``,
which is how CI checks the dispatch). Read at call time, so a benchmark can switch per run.
"""

from __future__ import annotations

import os

import torch

from kernels import HAS_TRITON


def triton_enabled(t: torch.Tensor) -> bool:
    mode = os.environ.get("SLIMBERT_KERNELS", "auto")
    if mode not in ("auto", "torch", "triton"):
        raise ValueError(f"SLIMBERT_KERNELS must be auto, torch or triton, got {mode!r}")
    if mode == "torch" or not HAS_TRITON or t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    return mode == "triton" or t.is_cuda
