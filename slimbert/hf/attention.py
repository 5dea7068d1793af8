"""slimbert's attention function, registered with transformers' AttentionInterface.

One function serves the gated model (per-head gates read from ``module.head_gate``) and the compact
model (no gate). On CUDA it runs the Triton kernel from ``slimbert/kernels/attention.py`` (per-head scale
fused; ``SLIMBERT_KERNELS`` is the switch, slimbert/kernels/_utils.py); elsewhere transformers' own SDPA path, so an all-open
gated model is bit-for-bit the original. The sdpa mask function is registered under the same name:
without it the layers would receive no padding mask at all.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from slimbert.kernels import attention as triton_attention
from slimbert.kernels import use_triton

ATTN_IMPLEMENTATION = "slimbert"


def _key_padding(attention_mask: torch.Tensor | None, batch: int, kv_len: int) -> torch.Tensor | None:
    """(B, 1, Q, K) bidirectional mask -> (B, K) keep-mask; every query row of it is the same."""
    if attention_mask is None:
        return None
    if attention_mask.dtype != torch.bool:  # additive float mask
        attention_mask = attention_mask > torch.finfo(attention_mask.dtype).min / 2
    return attention_mask[:, 0, 0, :].expand(batch, kv_len)  # (B, K)


def slimbert_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """(B, H, T, d) q/k/v -> ((B, T, H, d) output, None), each head scaled by its gate."""
    gate = getattr(module, "head_gate", None)
    scale = gate() if gate is not None else None  # (H,)
    if use_triton(query):  # dropout, padding mask and head gate all fused in the kernel
        mask = _key_padding(attention_mask, query.shape[0], key.shape[2])
        out = triton_attention(query, key, value, key_padding_mask=mask, head_scale=scale, scaling=scaling, dropout_p=dropout)
        return out, None
    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if scale is not None:
        out = out * scale.to(out.dtype)[None, None, :, None]  # (B, T, H, d)
    return out, None


AttentionInterface.register(ATTN_IMPLEMENTATION, slimbert_attention)
AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
