"""Hard masks on a gated model: the form every pruning method hands to collapse.

A mask keeps (True) or removes (False) each head and FFN unit; on a gated copy of the dense model it
becomes log_alpha = ±HARD, so the eval-mode gates are exactly 1 or 0 and collapse keeps the unchanged
weights of what stays.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from slimbert.config import PruneConfig
from slimbert.models.arch import check_qa_model
from slimbert.pruning.gates import HARD, add_gates, deterministic_size, get_gates


def check_dense(model: nn.Module) -> None:
    """A method that starts from the dense teacher refuses a gated or already compact model."""
    check_qa_model(model)
    if get_gates(model) or model.config.model_type == "slimbert":
        raise ValueError(
            "this method prunes a dense BERT/RoBERTa QA model, but this one is already gated or compact; "
            "pass the original (unpruned) model."
        )


def open_gated_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with a gate per head and per FFN unit, every gate exactly 1, eval mode."""
    gated = add_gates(copy.deepcopy(model), PruneConfig(prune_blocks=False))
    with torch.no_grad():
        for g in get_gates(gated):
            g.heads.log_alpha.fill_(HARD)
            g.units.log_alpha.fill_(HARD)
    return gated.eval().requires_grad_(False)


@torch.no_grad()
def apply_mask(gated: nn.Module, head_mask, unit_mask) -> float:
    """Set every head/unit gate of ``gated`` to exactly 1 (keep) or 0 (remove); returns the kept fraction."""
    gates = get_gates(gated)
    if not gates or any(g.heads is None or g.units is None for g in gates):
        raise ValueError("apply_mask needs a gate on every head and FFN unit; build the model with open_gated_copy(model)")
    for g, heads, units in zip(gates, head_mask, unit_mask):
        g.heads.log_alpha.copy_(torch.where(heads.to(g.heads.log_alpha.device), HARD, -HARD))
        g.units.log_alpha.copy_(torch.where(units.to(g.units.log_alpha.device), HARD, -HARD))
        for block in (g.attn_block, g.ffn_block):
            if block is not None:
                block.log_alpha.fill_(HARD)
    return deterministic_size(gated)
