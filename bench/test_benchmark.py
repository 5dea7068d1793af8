"""pytest-benchmark twins of bench/latency.py (CPU-sized): ``pytest bench --benchmark-enable``.

Compare the groups' medians in one run; no assertion on time here (speed is reported, not tested).
"""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForQuestionAnswering

from slimbert.latency import make_inputs
from slimbert.pruning.methods.baselines import random_compact

TEACHER = Path(__file__).resolve().parent.parent / "slimbert" / "demo" / "teacher"


@pytest.fixture(scope="module")
def models():
    dense = AutoModelForQuestionAnswering.from_pretrained(TEACHER, dtype=torch.float32).eval()
    return {"dense": dense, "compact50": random_compact(dense, 0.5)}


@pytest.mark.parametrize("name", ["dense", "compact50"])
@pytest.mark.parametrize("batch,seq", [(1, 384), (8, 128)])
def test_forward(benchmark, models, name, batch, seq):
    model = models[name]
    inputs = make_inputs(model, batch, seq)
    benchmark.group = f"b{batch}-s{seq}"
    with torch.inference_mode():
        out = benchmark(lambda: model(**inputs))
    assert out.start_logits.shape == (batch, seq)
