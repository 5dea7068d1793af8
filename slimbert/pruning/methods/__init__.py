"""The pruning methods, each behind one function: ``find_structure(model, run) -> Found``.

    l0         hard-concrete gates learned with distillation and a size term (l0.py)
    posttrain  Kwon et al.'s Fisher mask, no retraining (posttrain.py)
    random     a random set of heads and units; uniform: every layer cut alike (baselines.py)

Each returns a gated copy of ``model`` whose eval-mode gates say what stays; ``prune`` collapses it,
then applies ``refine`` (posttrain's rescaling of what is left) to the compact model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


@dataclass
class Found:
    gated: nn.Module  # gated copy of the model: exact zeros are what collapse removes
    history: list = field(default_factory=list)  # per-step training rows (l0)
    refine: Callable | None = None  # compact model -> compact model, after collapse
    latency_tries: list = field(default_factory=list)  # --budget latency: table targets tried and fractions measured


def find_structure(model: nn.Module, run) -> Found:
    """Run ``run.cfg.method`` on ``model`` (a dense QA model) with ``run``'s data and settings."""
    from slimbert.pruning.methods import baselines, l0, posttrain

    methods = {"l0": l0, "posttrain": posttrain, "random": baselines, "uniform": baselines}
    return methods[run.cfg.method].find_structure(model, run)
