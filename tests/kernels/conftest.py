"""Kernel tests: on CUDA when present, otherwise on CPU under the Triton interpreter.

TRITON_INTERPRET must be set before triton is first imported (``triton.jit`` picks the
interpreter at decoration time), which is why it happens here at import time.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_kernel_env(monkeypatch):
    torch.manual_seed(0)
    # These tests exist to exercise the Triton path (on a CPU: under the interpreter); a stray
    # SLIMBERT_KERNELS=torch would silently turn them into reference-vs-reference comparisons.
    monkeypatch.setenv("SLIMBERT_KERNELS", "triton")
    # fp32 cases check exactness against the fp32 reference; the TF32 default has its own test.
    monkeypatch.setenv("SLIMBERT_FP32_DOT", "ieee")


@pytest.fixture
def device():
    return "cuda" if torch.cuda.is_available() else "cpu"
