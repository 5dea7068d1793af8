"""Triton kernels for pruned BERT/RoBERTa layers (per-layer head counts and FFN widths).

Every op has a pure-PyTorch ``reference_*`` twin that doubles as the CPU fallback; the front
doors (``attention``, ``attention_varlen``, ``ffn``) pick the Triton path when ``use_triton``
says it can run. ``import kernels`` works without triton installed (then only the references run).
"""

from ._utils import HAS_TRITON, use_triton
from .attention import attention, attention_varlen, dropout_mask, reference_attention, reference_attention_varlen
from .ffn import ffn, reference_ffn

__all__ = [
    "HAS_TRITON",
    "attention",
    "attention_varlen",
    "ffn",
    "dropout_mask",
    "reference_attention",
    "reference_attention_varlen",
    "reference_ffn",
    "use_triton",
]
