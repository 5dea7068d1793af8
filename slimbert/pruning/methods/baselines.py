"""Baseline structures for the speed/accuracy sweep: ``method="random"`` and ``method="uniform"``.

Neither trains. Each chooses which heads and FFN units stay so that the kept fraction of prunable
parameters is ``target`` or just under it; ``prune()`` then collapses the model and, with
``finetune_steps``, fine-tunes it exactly as it does every other method's output.

* random: each pruned head and unit gets an independent uniform score (seeded by ``seed``) and
  :func:`slimbert.snap_gates` keeps them in score order while they fit. The kept set is therefore a
  prefix of a uniformly random order of all heads and units: each kind keeps about ``target`` of its
  count in expectation, spread over the layers at random. It ends under the target by less than
  one head's cost.
* uniform: every layer keeps the same number of heads (round(target·H), as near as the budget allows)
  and as many FFN units as the rest of the layer's budget pays for. It keeps the first ones: the
  order of the heads and units within a trained layer means nothing, so this choice is no better or
  worse than any other, and the baseline measures what a learned per-layer allocation adds.
  With both kinds pruned it ends under the target by less than one unit per layer.

``prune_heads=False`` keeps every head and cuts only the FFN; ``prune_ffn=False`` does the reverse.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from slimbert.pruning.cost import prunable_parameters, unit_costs
from slimbert.pruning.gates import HARD, get_gates, snap_gates
from slimbert.pruning.masks import apply_mask, check_dense, open_gated_copy
from slimbert.pruning.methods import Found


def min_size(model: nn.Module, cfg) -> float:
    """The smallest kept fraction reachable when only the kinds ``cfg`` prunes are removed (heads, units)."""
    c_head, c_unit = unit_costs(model)
    conf = model.config
    kept = (not cfg.prune_heads) * conf.num_attention_heads * c_head + (not cfg.prune_ffn) * conf.intermediate_size * c_unit
    return conf.num_hidden_layers * kept / prunable_parameters(model)


def uniform_masks(model: nn.Module, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep-masks ``(L, H)`` and ``(L, F)`` with the same first heads and units kept in every layer."""
    conf = model.config
    L, H, F = conf.num_hidden_layers, conf.num_attention_heads, conf.intermediate_size
    c_head, c_unit = unit_costs(model)
    per_layer = cfg.target * (H * c_head + F * c_unit) + 1e-9  # the same slack as snap_gates
    if not cfg.prune_heads:
        heads = H
    elif not cfg.prune_ffn:
        heads = math.floor((per_layer - F * c_unit) / c_head)
    else:
        # As near target·H as possible, but never so few that even the whole FFN leaves budget unused.
        fewest = max(0, math.ceil((per_layer - F * c_unit) / c_head))
        heads = min(max(round(cfg.target * H), fewest), math.floor(per_layer / c_head), H)
    units = min(F, math.floor((per_layer - heads * c_head) / c_unit)) if cfg.prune_ffn else F
    head_mask = (torch.arange(H) < heads).expand(L, H)
    unit_mask = (torch.arange(F) < units).expand(L, F)
    return head_mask, unit_mask


@torch.no_grad()
def baseline_gates(model: nn.Module, cfg, seed: int = 0) -> nn.Module:
    """A gated copy of dense ``model`` whose hard 0/1 gates keep ``cfg.method``'s choice at ``cfg.target``."""
    check_dense(model)
    if not (cfg.prune_heads or cfg.prune_ffn):
        raise ValueError(f"method={cfg.method!r} removes heads and FFN units; enable prune_heads or prune_ffn")
    floor = min_size(model, cfg)
    if cfg.target < floor:
        kind = "heads" if cfg.prune_heads else "FFN units"
        raise ValueError(
            f"target {cfg.target} is out of reach: pruning only {kind} leaves at least {floor:.3f} of the prunable "
            "parameters; raise the target or prune both heads and FFN units"
        )
    gated = open_gated_copy(model)
    if cfg.method == "random":
        g = torch.Generator().manual_seed(seed)
        for layer in get_gates(gated):
            for gate, pruned in ((layer.heads, cfg.prune_heads), (layer.units, cfg.prune_ffn)):
                # i.i.d. continuous scores give a uniformly random order; HARD ranks a kept kind first
                score = torch.rand(gate.log_alpha.shape, generator=g) if pruned else torch.full(gate.log_alpha.shape, HARD)
                gate.log_alpha.copy_(score)
        snap_gates(gated, cfg.target)
    elif cfg.method == "uniform":
        apply_mask(gated, *uniform_masks(model, cfg))
    else:
        raise ValueError(f"baseline_gates builds method 'random' or 'uniform', got {cfg.method!r}")
    return gated


def find_structure(model: nn.Module, run) -> Found:
    """The method interface (pruning/methods/__init__.py): no training, hard gates at the target."""
    return Found(baseline_gates(model, run.cfg, run.tcfg.seed))


def random_compact(model: nn.Module, target: float, seed: int = 0) -> nn.Module:
    """A compact model with a random structure at ``target``: for timing (bench/), meaningless for accuracy."""
    from slimbert.config import PruneConfig
    from slimbert.pruning.collapse import collapse

    return collapse(baseline_gates(model, PruneConfig(method="random", target=target), seed).eval())
