"""Latency of QA models on synthetic inputs of a fixed shape (median of repeats, after warm-up).

CUDA timings use CUDA events; CPU timings use perf_counter. The one latency helper: the demo, the
sweep and ``bench/latency.py`` all time through :func:`compare`.
"""

from __future__ import annotations

import os
import statistics
import time

import torch


def make_inputs(model, batch: int, seq_len: int, device=None, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    ids = torch.randint(5, vocab, (batch, seq_len), generator=g)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return {k: v.to(device or next(model.parameters()).device) for k, v in inputs.items()}


@torch.inference_mode()
def measure(model, inputs: dict, repeats: int = 10, warmup: int = 2) -> dict:
    """{"median_ms", "min_ms", "max_ms", "repeats"} of ``model(**inputs)`` (a module or any callable)."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    cuda = inputs["input_ids"].is_cuda
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(**inputs)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            model(**inputs)
            times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeats": repeats}


def _set_kernels(value: str | None) -> None:
    if value is None:
        os.environ.pop("SLIMBERT_KERNELS", None)
    else:
        os.environ["SLIMBERT_KERNELS"] = value


def compare(models: dict, batch: int, seq_len: int, repeats: int = 10, rounds: int = 3) -> dict:
    """{name: {"median_ms", "min_ms", "max_ms"}} over the same inputs, the models interleaved round by
    round so drift hits all alike. A value may be ``(model, kernels)``: ``SLIMBERT_KERNELS`` while it runs."""
    models = {n: m if isinstance(m, tuple) else (m, None) for n, m in models.items()}
    inputs = make_inputs(next(iter(models.values()))[0], batch, seq_len)
    runs = {name: [] for name in models}
    saved = os.environ.get("SLIMBERT_KERNELS")
    try:
        for _ in range(rounds):
            for name, (model, kernels) in models.items():
                _set_kernels(kernels or saved)
                runs[name].append(measure(model, inputs, repeats=max(1, repeats // rounds), warmup=1)["median_ms"])
    finally:
        _set_kernels(saved)
    return {n: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v)} for n, v in runs.items()}
