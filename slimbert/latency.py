"""Latency of a QA model on synthetic inputs of a fixed shape (median of repeats, after warm-up).

CUDA timings use CUDA events; CPU timings use perf_counter. Used by ``bench/latency.py`` and the demo.
"""

from __future__ import annotations

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


def compare(models: dict, batch: int, seq_len: int, repeats: int = 10, rounds: int = 3) -> dict:
    """Median latency of each model on the same inputs, interleaved over ``rounds`` so drift hits all alike."""
    first = next(iter(models.values()))
    inputs = make_inputs(first, batch, seq_len)
    runs = {name: [] for name in models}
    for _ in range(rounds):
        for name, m in models.items():
            runs[name].append(measure(m, inputs, repeats=max(1, repeats // rounds), warmup=1)["median_ms"])
    return {name: statistics.median(v) for name, v in runs.items()}
