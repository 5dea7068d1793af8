"""What a structure costs: parameters per head and FFN unit (DESIGN.md), encoder FLOPs, and the
per-layer report of a dense, gated or compact QA model (``slimbert report``)."""

from __future__ import annotations

from torch import nn

from slimbert.models.arch import encoder_layers, head_dim


def unit_costs(model: nn.Module) -> tuple[int, int]:
    """Parameters one head and one FFN unit carry (DESIGN.md): 4·d·d_h + 3·d_h and 2·d + 1."""
    d, dh = model.config.hidden_size, head_dim(model.config)
    return 4 * d * dh + 3 * dh, 2 * d + 1


def prunable_parameters(model: nn.Module) -> int:
    """Parameters that heads and FFN units carry in the unpruned model (the denominator of --target)."""
    c_head, c_unit = unit_costs(model)
    cfg = model.config
    return cfg.num_hidden_layers * (cfg.num_attention_heads * c_head + cfg.intermediate_size * c_unit)


def item_costs(model: nn.Module, budget: str, seq_len: int) -> tuple[int, int]:
    """What keeping one head / one FFN unit costs: parameters, or encoder FLOPs at ``seq_len`` tokens."""
    if budget == "params":
        return unit_costs(model)
    if budget == "flops":
        d, d_h = model.config.hidden_size, head_dim(model.config)
        # encoder_flops is linear in each layer's heads and width, so these are exact per-item costs.
        return encoder_flops([(1, 0)], d, d_h, seq_len), encoder_flops([(0, 1)], d, d_h, seq_len)
    raise ValueError(f"budget must be 'params' or 'flops', got {budget!r}")


def count_parameters(model) -> int:
    """Parameters of the model itself (gate log_alphas excluded)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.endswith("log_alpha"))


def layer_shapes(model) -> list[tuple[int, int]]:
    """(heads, ffn width) of every encoder layer, read from the modules themselves."""
    return [(layer.attention.self.num_attention_heads, layer.intermediate.dense.out_features) for layer in encoder_layers(model)]


def encoder_flops(shapes, hidden: int, d_h: int, seq_len: int) -> int:
    """Multiply-adds x2 of the encoder layers for one sequence of ``seq_len`` tokens."""
    total = 0
    for heads, ffn in shapes:
        width = heads * d_h
        proj = 2 * seq_len * hidden * width * 4  # Q, K, V, O
        scores = 2 * 2 * seq_len * seq_len * width  # QK^T and P·V
        mlp = 2 * 2 * seq_len * hidden * ffn
        total += proj + scores + mlp
    return total


def model_report(model, seq_len: int = 384) -> dict:
    cfg = model.config
    d, d_h = cfg.hidden_size, head_dim(cfg)
    shapes = layer_shapes(model)
    dense = [(cfg.num_attention_heads, cfg.intermediate_size)] * cfg.num_hidden_layers
    params = count_parameters(model)
    per_layer = [
        {
            "layer": i,
            "heads": h,
            "ffn": f,
            "params": sum(p.numel() for n, p in layer.named_parameters() if not n.endswith("log_alpha")),
        }
        for i, ((h, f), layer) in enumerate(zip(shapes, encoder_layers(model)))
    ]
    dense_layer_params = 4 * d * d + 4 * d + 2 * d * cfg.intermediate_size + cfg.intermediate_size + d + 4 * d
    flops_before = encoder_flops(dense, d, d_h, seq_len)
    flops_after = encoder_flops(shapes, d, d_h, seq_len)
    params_before = params - sum(r["params"] for r in per_layer) + dense_layer_params * cfg.num_hidden_layers
    return {
        "model_type": cfg.model_type,
        "layers": per_layer,
        "params_before": params_before,
        "params_after": params,
        "encoder_flops_before": flops_before,
        "encoder_flops_after": flops_after,
        "flops_ratio": flops_before / max(flops_after, 1),
        "seq_len": seq_len,
    }


def format_report(r: dict) -> str:
    lines = [f"{'layer':>5} {'heads':>5} {'ffn':>6} {'params':>10}"]
    lines += [f"{x['layer']:>5} {x['heads']:>5} {x['ffn']:>6} {x['params']:>10,}" for x in r["layers"]]
    lines.append(f"parameters: {r['params_before']:,} -> {r['params_after']:,} ({r['params_after'] / r['params_before']:.3f})")
    lines.append(
        f"encoder GFLOPs per sequence of {r['seq_len']}: {r['encoder_flops_before'] / 1e9:.2f} -> "
        f"{r['encoder_flops_after'] / 1e9:.2f} ({r['flops_ratio']:.2f}x fewer)"
    )
    return "\n".join(lines)
