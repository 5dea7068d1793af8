"""Unpadded inference for the compact model: a padded batch runs as one packed stream of real tokens.

    start, end = unpadded_logits(compact, input_ids, attention_mask, token_type_ids)

Real SQuAD windows vary in length, so a padded batch spends much of its work on padding. Here the
embeddings are computed as usual, the real tokens are gathered into (N, d), and every layer runs on
them: projections and the FFN on N rows, attention over each sequence through
``kernels.attention_varlen`` (cu_seqlens; Triton on CUDA, a per-sequence reference elsewhere). The
layers' own modules are called (projections, ``attention.output``, ``feed_forward_chunk``), so this
is the model's math, not a copy of its weights. Logits come back padded, PAD_LOGIT at padding.
"""

from __future__ import annotations

import torch

from slimbert.kernels import attention_varlen

from slimbert.models.compact import NoHeads
from slimbert.models.arch import PAD_LOGIT


def pack(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(B, T) right-padded mask -> flat indices of real tokens, cu_seqlens (B+1,) int32, max length."""
    lengths = attention_mask.sum(dim=1, dtype=torch.int32)  # (B,)
    if not bool((attention_mask.flip(1).cumsum(1).gt(0).sum(1) == lengths).all()):
        raise ValueError("unpadded_logits needs right-padded batches (real tokens first, then padding)")
    index = torch.nonzero(attention_mask.flatten(), as_tuple=False).flatten()  # (N,)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32, device=attention_mask.device)
    cu[1:] = torch.cumsum(lengths, 0)
    return index, cu, int(lengths.max()) if len(lengths) else 0


def _layer(layer, x: torch.Tensor, cu: torch.Tensor, max_len: int) -> torch.Tensor:
    """One BertLayer/RobertaLayer on packed tokens x (N, d)."""
    attn = layer.attention
    if isinstance(attn.self, NoHeads):
        ctx = x.new_zeros(x.shape[0], 0)  # (N, 0)
    else:
        sa = attn.self
        heads, d_h = sa.num_attention_heads, sa.attention_head_size
        q, k, v = (proj(x).view(-1, heads, d_h) for proj in (sa.query, sa.key, sa.value))  # (N, H, d_h)
        ctx = attention_varlen(q, k, v, cu, max_len, scaling=sa.scaling).reshape(x.shape[0], -1)  # (N, H*d_h)
    h = attn.output(ctx, x)
    return layer.feed_forward_chunk(h)


@torch.inference_mode()
def unpadded_logits(model, input_ids, attention_mask, token_type_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) start and end logits of a SlimBertForQuestionAnswering, computed without padding tokens."""
    base = model.model
    emb = base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)  # (B, T, d)
    index, cu, max_len = pack(attention_mask)
    x = emb.flatten(0, 1)[index]  # (N, d)
    for layer in base.encoder.layer:
        x = _layer(layer, x, cu, max_len)
    logits = model.qa_outputs(x)  # (N, 2)
    out = logits.new_full((input_ids.numel(), 2), PAD_LOGIT)
    out[index] = logits
    start, end = out.view(*input_ids.shape, 2).unbind(-1)  # (B, T) each
    return start.contiguous(), end.contiguous()
