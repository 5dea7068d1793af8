"""Collapse a gated model into a compact one: drop closed heads/units, fold gate values into weights.

With BERT's layer, the gated forward is (gates.py)
    attn = LN(z_attn · (W_O · concat_h(z_h · ctx_h) + b_O) + x)
    ffn  = LN(z_ffn  · (W_2 · (z_u ⊙ gelu(W_1 x + b_1)) + b_2) + x)
so a kept head keeps its Q/K/V rows and its W_O columns scaled by z_h · z_attn, b_O becomes
z_attn · b_O, a kept unit keeps its W_1 row and its W_2 column scaled by z_u · z_ffn, and b_2
becomes z_ffn · b_2. Eval-mode gates are used; exact zeros are removed. The gathers run in the C++
extension (csrc/collapse.cpp) when it builds, else in PyTorch; both give bit-identical weights.
"""

from __future__ import annotations

import torch
from torch import nn

from slimbert.pruning.ext import gather_scaled_many
from slimbert.models.arch import encoder_layers, head_dim
from slimbert.models.compact import SlimBertConfig, SlimBertForQuestionAnswering
from slimbert.pruning.gates import HardConcreteGate, get_gates


def _gate_values(gate: HardConcreteGate | None, n: int) -> torch.Tensor:
    return torch.ones(n) if gate is None else gate.deterministic().detach().float().cpu()


@torch.no_grad()
def layer_plan(model: nn.Module) -> list[dict]:
    """Per layer: kept head and unit indices and the scales that fold into W_O / W_2 and the biases."""
    gates = get_gates(model)
    if not gates:
        raise ValueError(
            "this model has no slimbert gates, so there is nothing to collapse. "
            "Call slimbert.add_gates(model) and train it (slimbert.prune does both) first."
        )
    plan = []
    for layer, g in zip(encoder_layers(model), gates):
        z_attn = _gate_values(g.attn_block, 1)[0]
        z_ffn = _gate_values(g.ffn_block, 1)[0]
        z_heads = _gate_values(g.heads, layer.attention.self.num_attention_heads) * z_attn
        z_units = _gate_values(g.units, layer.intermediate.dense.out_features) * z_ffn
        heads = torch.nonzero(z_heads > 0).flatten()
        units = torch.nonzero(z_units > 0).flatten()
        plan.append(
            dict(heads=heads, head_scale=z_heads[heads], units=units, unit_scale=z_units[units], z_attn=z_attn, z_ffn=z_ffn)
        )
    return plan


def _head_rows(heads: torch.Tensor, d_h: int) -> torch.Tensor:
    """Head indices -> the rows of Q/K/V (columns of W_O) they own."""
    return (heads[:, None] * d_h + torch.arange(d_h)[None, :]).flatten()  # (H_kept * d_h,)


@torch.no_grad()
def collapse(model: nn.Module, backend: str = "auto") -> SlimBertForQuestionAnswering:
    """The compact :class:`SlimBertForQuestionAnswering` equal (in eval mode) to gated ``model``.

    ``backend``: "auto" (C++ if it builds, else torch), "cpp" or "torch".
    """
    plan = layer_plan(model)
    d_h = head_dim(model.config)
    config = SlimBertConfig.from_base(
        model.config, num_heads=[len(p["heads"]) for p in plan], ffn_dims=[len(p["units"]) for p in plan]
    )
    compact = SlimBertForQuestionAnswering(config)

    prefix = model.base_model_prefix + "."
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("log_alpha") or ".encoder.layer." in name:
            continue
        state[("model." + name[len(prefix):]) if name.startswith(prefix) else name] = tensor

    jobs = {}  # state-dict name -> (weight, kept indices, dim, scale): every gather of the model, run in one call

    def gather(name, w, idx, dim, scale=None):
        jobs[name] = (w, idx.to(w.device), dim, None if scale is None else scale.to(w.device, w.dtype))

    for i, (layer, p) in enumerate(zip(encoder_layers(model), plan)):
        at = f"model.encoder.layer.{i}."
        rows = _head_rows(p["heads"], d_h)
        attn = layer.attention
        if len(p["heads"]):
            for proj in ("query", "key", "value"):
                lin = getattr(attn.self, proj)
                gather(f"{at}attention.self.{proj}.weight", lin.weight, rows, 0)
                gather(f"{at}attention.self.{proj}.bias", lin.bias, rows, 0)
        gather(f"{at}attention.output.dense.weight", attn.output.dense.weight, rows, 1, p["head_scale"].repeat_interleave(d_h))
        gather(f"{at}intermediate.dense.weight", layer.intermediate.dense.weight, p["units"], 0)
        gather(f"{at}intermediate.dense.bias", layer.intermediate.dense.bias, p["units"], 0)
        gather(f"{at}output.dense.weight", layer.output.dense.weight, p["units"], 1, p["unit_scale"])
        state[f"{at}attention.output.dense.bias"] = attn.output.dense.bias * p["z_attn"]
        state[f"{at}output.dense.bias"] = layer.output.dense.bias * p["z_ffn"]
        state.update({at + k: v for k, v in layer.state_dict().items() if "LayerNorm" in k})  # untouched
    state.update(zip(jobs, gather_scaled_many(list(jobs.values()), backend=backend)))

    compact.load_state_dict(state, strict=True)
    return compact.to(next(model.parameters()).device).eval()

