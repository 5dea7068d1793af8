"""Hard-concrete gates (Louizos, Welling & Kingma 2018) attached to an unmodified BERT/RoBERTa.

Per encoder layer: one gate per attention head, one per FFN intermediate unit, and one per whole
sub-layer (attention block, FFN block). Nothing in transformers is forked:

* head gates are read by slimbert's attention function (``slimbert/attention.py``) from
  ``layer.attention.self.head_gate``; the model's attention implementation is switched to it;
* unit gates scale the output of ``layer.intermediate`` in a forward hook;
* block gates scale the output of the sub-layer's output projection (``*.output.dense``, bias
  included) in a forward hook, so a closed block leaves exactly ``LayerNorm(x)``.

Each gate's parameter is called ``log_alpha``. In training mode every forward draws a fresh sample;
in eval mode gates are deterministic, and exact zeros are what :func:`slimbert.collapse` removes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from slimbert.models.arch import encoder_layers
from slimbert.pruning.cost import layer_shapes, prunable_parameters, unit_costs

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


class HardConcreteGate(nn.Module):
    """``n`` independent hard-concrete gates with learnable ``log_alpha``."""

    def __init__(self, n: int, init_log_alpha: float):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((n,), float(init_log_alpha)))

    def forward(self) -> torch.Tensor:
        if self.training:
            u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
            s = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / BETA)
        else:
            s = torch.sigmoid(self.log_alpha)
        return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def prob_open(self) -> torch.Tensor:
        """P(z != 0), differentiable in ``log_alpha``: the L0 norm's expectation."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA))

    @torch.no_grad()
    def deterministic(self) -> torch.Tensor:
        """The eval-mode gate value, whatever mode the module is in."""
        return (torch.sigmoid(self.log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)

    def kept(self) -> torch.Tensor:
        """1.0 where the eval-mode gate is non-zero (what collapse keeps), else 0.0."""
        return (self.deterministic() > 0).float()

    def extra_repr(self) -> str:
        return f"n={self.log_alpha.numel()}"


@dataclass
class LayerGates:
    """The four gate groups of one encoder layer (any may be None when not gated)."""

    heads: HardConcreteGate | None
    attn_block: HardConcreteGate | None
    units: HardConcreteGate | None
    ffn_block: HardConcreteGate | None


def _scale_by_gate(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    # A module-level function (not a closure) so deepcopy/pickle of the gated model keep working.
    return output * module.gate().to(output.dtype)


def _attach(module: nn.Module, gate: HardConcreteGate) -> None:
    module.gate = gate
    module.register_forward_hook(_scale_by_gate)


def init_log_alpha(keep_prob: float) -> float:
    """log_alpha at which a sampled gate is non-zero with probability exactly ``keep_prob``.

    P(z != 0) = sigmoid(log_alpha - BETA·log(-GAMMA/ZETA)) (``prob_open``), so log_alpha is
    logit(p) + BETA·log(-GAMMA/ZETA) ≈ logit(p) - 1.599, not logit(p).
    """
    keep_prob = min(max(keep_prob, 1e-6), 1 - 1e-6)
    return math.log(keep_prob / (1 - keep_prob)) + BETA * math.log(-GAMMA / ZETA)


def add_gates(model: nn.Module, cfg=None) -> nn.Module:
    """Attach hard-concrete gates to a BERT/RoBERTa model in place and return it.

    ``cfg`` is a :class:`slimbert.PruneConfig` (or None for its defaults); its ``prune_heads``,
    ``prune_ffn``, ``prune_blocks`` and ``gate_init_keep`` fields are read.
    """
    from slimbert.config import PruneConfig

    cfg = cfg or PruneConfig()
    layers = encoder_layers(model)
    if get_gates(model):
        raise ValueError("this model already has slimbert gates; call add_gates once per model")
    init = init_log_alpha(cfg.gate_init_keep)
    for layer in layers:
        attn = layer.attention
        if cfg.prune_heads:
            attn.self.head_gate = HardConcreteGate(attn.self.num_attention_heads, init)
        if cfg.prune_ffn:
            _attach(layer.intermediate, HardConcreteGate(layer.intermediate.dense.out_features, init))
        if cfg.prune_blocks:
            _attach(attn.output.dense, HardConcreteGate(1, init))
            _attach(layer.output.dense, HardConcreteGate(1, init))
    from slimbert.hf.attention import ATTN_IMPLEMENTATION

    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    return model


def get_gates(model: nn.Module) -> list[LayerGates]:
    """The gates of every encoder layer, or [] for a model without gates."""
    out = []
    for layer in encoder_layers(model):
        out.append(
            LayerGates(
                heads=getattr(layer.attention.self, "head_gate", None),
                attn_block=getattr(layer.attention.output.dense, "gate", None),
                units=getattr(layer.intermediate, "gate", None),
                ffn_block=getattr(layer.output.dense, "gate", None),
            )
        )
    if all(g.heads is None and g.attn_block is None and g.units is None and g.ffn_block is None for g in out):
        return []
    return out


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.endswith("log_alpha")]


# ----------------------------------------------------------------------------- sizes
def _one_or_ones(gate: HardConcreteGate | None, n: int, fn: str, like: torch.Tensor) -> torch.Tensor:
    if gate is None:
        return torch.ones(n, device=like.device, dtype=like.dtype)
    return getattr(gate, fn)()


def _size(model: nn.Module, fn: str, table=None) -> torch.Tensor:
    """Remaining prunable parameters with gate statistic ``fn`` (prob_open or kept-mask); with a
    latency ``table`` (pruning/latency_table.py), the model's predicted ms at those counts instead."""
    c_head, c_unit = unit_costs(model)
    like = next(model.parameters())
    total = like.new_full((), table.outside_ms if table is not None else 0.0, dtype=torch.float32)
    for layer, g in zip(encoder_layers(model), get_gates(model)):
        n_heads = layer.attention.self.num_attention_heads
        n_units = layer.intermediate.dense.out_features
        heads = _one_or_ones(g.heads, n_heads, fn, total)
        units = _one_or_ones(g.units, n_units, fn, total)
        attn = _one_or_ones(g.attn_block, 1, fn, total)
        ffn = _one_or_ones(g.ffn_block, 1, fn, total)
        if table is None:
            total = total + attn.sum() * heads.sum() * c_head + ffn.sum() * units.sum() * c_unit
        else:  # the time at the expected counts: E[latency] where it is linear, near it elsewhere
            total = total + table.attn_ms(attn.sum() * heads.sum()) + table.ffn_ms(ffn.sum() * units.sum())
    return total


@torch.no_grad()
def kept_shapes(model: nn.Module) -> list[tuple[int, int]]:
    """(heads, FFN units) that collapse would keep in every layer of a gated model (eval-mode gates)."""
    like = next(model.parameters())
    shapes = []
    for layer, g in zip(encoder_layers(model), get_gates(model)):
        n_heads, n_units = layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features
        heads = _one_or_ones(g.heads, n_heads, "kept", like).sum() * _one_or_ones(g.attn_block, 1, "kept", like).sum()
        units = _one_or_ones(g.units, n_units, "kept", like).sum() * _one_or_ones(g.ffn_block, 1, "kept", like).sum()
        shapes.append((int(heads), int(units)))
    return shapes


def _whole(model: nn.Module, table=None) -> float:
    """The denominator of a size: the unpruned prunable parameters, or the dense model's predicted ms."""
    return prunable_parameters(model) if table is None else table.dense_ms(model.config.num_hidden_layers)


def expected_size(model: nn.Module, table=None) -> torch.Tensor:
    """E[remaining prunable parameters] / unpruned count (with a latency ``table``: predicted
    latency / the dense model's); differentiable in every log_alpha."""
    return _size(model, "prob_open", table) / _whole(model, table)


@torch.no_grad()
def snap_gates(model: nn.Module, target: float, table=None) -> float:
    """Make every gate exactly 0 or 1, keeping the most-likely-open heads/units up to ``target``.

    A short run leaves many gates between open and closed (P(open) near 1/2, eval value near 0), where
    the eval-mode value is a poor stand-in for what training saw. Snapping ranks heads and units by
    P(open) (times their block's), keeps them greedily until the next one would pass the target, and
    sets log_alpha to ±HARD so the eval gate is exactly 1 or 0. Returns the exact size reached.
    With a latency ``table`` the target counts predicted latency: an item's cost is what it adds to
    its layer's time at the counts kept so far, and the fixed time (empty blocks, outside) is paid first.
    """
    c_head, c_unit = unit_costs(model)
    total, candidates = _whole(model, table), []
    kept, keep = (table.outside_ms if table is not None else 0.0), set()
    counts = {}  # (id(gate), kind) -> items kept so far, for the table's marginal costs
    for layer, g in zip(encoder_layers(model), get_gates(model)):
        n_heads, n_units = layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features
        attn = float(g.attn_block.prob_open()) if g.attn_block is not None else 1.0
        ffn = float(g.ffn_block.prob_open()) if g.ffn_block is not None else 1.0
        heads = g.heads.prob_open().tolist() if g.heads is not None else [1.0] * n_heads
        units = g.units.prob_open().tolist() if g.units is not None else [1.0] * n_units
        head_key, unit_key = (id(layer), "attn"), (id(layer), "ffn")
        candidates += [(p * attn, c_head, g.heads, i, head_key) for i, p in enumerate(heads)]
        candidates += [(p * ffn, c_unit, g.units, i, unit_key) for i, p in enumerate(units)]
        if table is not None:
            kept += table.attn_ms(0) + table.ffn_ms(0)
            counts[head_key] = counts[unit_key] = 0
    candidates.sort(key=lambda c: -c[0])
    for _, cost, gate, i, key in candidates:
        if table is not None:
            block_ms, n = (table.attn_ms if key[1] == "attn" else table.ffn_ms), counts[key]
            cost = block_ms(n + 1) - block_ms(n)
        if kept + cost <= target * total + 1e-9 or gate is None:  # ungated units always stay
            kept += cost
            keep.add((id(gate), i))
            if table is not None:
                counts[key] += 1
    for g in get_gates(model):
        for gate in (g.heads, g.units):
            if gate is not None:
                mask = torch.tensor([(id(gate), i) in keep for i in range(gate.log_alpha.numel())])
                gate.log_alpha.copy_(torch.where(mask, HARD, -HARD).to(gate.log_alpha))
        for gate, part in ((g.attn_block, g.heads), (g.ffn_block, g.units)):
            if gate is not None:  # a block stays on iff anything in it stays
                on = part is None or bool((part.log_alpha > 0).any())
                gate.log_alpha.fill_(HARD if on else -HARD)
    return deterministic_size(model, table)


HARD = 20.0  # |log_alpha| past which a gate is exactly 0 or 1 in eval mode


@torch.no_grad()
def deterministic_size(model: nn.Module, table=None) -> float:
    """Exact fraction of prunable parameters kept: what collapse would keep of a gated model (eval-mode
    gates), or what a dense or compact model has. With a latency ``table``: its predicted latency fraction."""
    if get_gates(model):
        return float(_size(model, "kept", table)) / _whole(model, table)
    if table is not None:
        return table.fraction(layer_shapes(model))
    c_head, c_unit = unit_costs(model)
    return sum(h * c_head + f * c_unit for h, f in layer_shapes(model)) / prunable_parameters(model)
