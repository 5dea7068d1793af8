"""The compact model: a BERT/RoBERTa QA model whose every layer has its own head count and FFN width.

``SlimBertConfig`` (model_type ``slimbert``) is the base config plus ``base_model_type``, the
per-layer lists ``num_heads`` and ``ffn_dims``, and ``num_answer_types`` (> 0 adds the Natural
Questions answer-type head on the first token, slimbert/nq_model.py).
``SlimBertForQuestionAnswering`` builds the library's own ``BertModel``/``RobertaModel`` and only
resizes Linear layers; a layer with no heads swaps its self-attention for :class:`NoHeads`, because
transformers' ``view(..., -1, d_h)`` cannot infer a size from an empty tensor. Both are registered
with the Auto classes on ``import slimbert``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import MethodType

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    BertConfig,
    BertModel,
    PreTrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    RobertaModel,
)
from transformers.activations import GELUActivation
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from kernels import ffn as triton_ffn

from .attention import ATTN_IMPLEMENTATION
from .backend import triton_enabled

BASES = {"bert": (BertConfig, BertModel), "roberta": (RobertaConfig, RobertaModel)}


class SlimBertConfig(PreTrainedConfig):
    """Base BERT/RoBERTa config fields + ``base_model_type``, per-layer ``num_heads`` and ``ffn_dims``."""

    model_type = "slimbert"
    base_model_type: str = "bert"
    num_heads: list | None = None
    ffn_dims: list | None = None
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12  # of the unpruned model: fixes the head size d / H
    intermediate_size: int = 3072
    vocab_size: int = 30522
    num_answer_types: int = 0  # > 0: an answer-type classifier on the first token (NQ)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.base_model_type not in BASES:
            raise ValueError(f"base_model_type must be one of {sorted(BASES)}, got {self.base_model_type!r}")
        n = self.num_hidden_layers
        self.num_heads = list(self.num_heads) if self.num_heads is not None else [self.num_attention_heads] * n
        self.ffn_dims = list(self.ffn_dims) if self.ffn_dims is not None else [self.intermediate_size] * n
        if len(self.num_heads) != n or len(self.ffn_dims) != n:
            raise ValueError(f"num_heads and ffn_dims need one entry per layer ({n})")

    @classmethod
    def from_base(cls, base: PreTrainedConfig, num_heads: list[int], ffn_dims: list[int]) -> SlimBertConfig:
        drop = ("model_type", "architectures", "transformers_version", "num_heads", "ffn_dims")
        fields = {k: v for k, v in base.to_dict().items() if k not in drop}
        # A SlimBertConfig (a dense or once-pruned compact model) keeps its own base type.
        base_type = fields.pop("base_model_type", base.model_type)
        return cls(base_model_type=base_type, num_heads=list(num_heads), ffn_dims=list(ffn_dims), **fields)

    def to_base_config(self) -> PreTrainedConfig:
        base_cls = BASES[self.base_model_type][0]
        d = {k: v for k, v in self.to_dict().items() if k not in ("model_type", "base_model_type", "num_heads", "ffn_dims", "num_answer_types", "architectures", "transformers_version")}
        base = base_cls.from_dict(d)
        base._attn_implementation = ATTN_IMPLEMENTATION
        return base


@dataclass
class SlimBertQAOutput(QuestionAnsweringModelOutput):
    """QA output plus ``answer_type_logits`` (B, num_answer_types) when the model has that head."""

    answer_type_logits: torch.Tensor | None = None


class NoHeads(nn.Module):
    """Self-attention of a layer whose heads were all pruned: an empty context, (B, T, 0)."""

    num_attention_heads = 0

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states.new_zeros(*hidden_states.shape[:-1], 0), None


def _feed_forward_chunk(layer, attention_output):
    """BertLayer's FFN with up-projection + bias + GELU and the down-projection in Triton on CUDA."""
    dense_in, out = layer.intermediate.dense, layer.output
    if triton_enabled(attention_output) and isinstance(layer.intermediate.intermediate_act_fn, GELUActivation):
        hidden = triton_ffn(attention_output, dense_in.weight, dense_in.bias, out.dense.weight, out.dense.bias)
        return out.LayerNorm(out.dropout(hidden) + attention_output)
    return out(layer.intermediate(attention_output), attention_output)


def resize_layer(layer: nn.Module, heads: int, ffn_dim: int, head_size: int) -> None:
    """Give one BertLayer/RobertaLayer ``heads`` heads and an FFN of width ``ffn_dim`` (new weights)."""
    attn, d = layer.attention, layer.attention.output.dense.out_features
    width = heads * head_size
    if heads == 0:
        attn.self = NoHeads()
    else:
        for name in ("query", "key", "value"):
            setattr(attn.self, name, nn.Linear(d, width))
        attn.self.num_attention_heads, attn.self.all_head_size = heads, width
    attn.output.dense = nn.Linear(width, d)
    layer.intermediate.dense = nn.Linear(d, ffn_dim)
    layer.output.dense = nn.Linear(ffn_dim, d)


class SlimBertPreTrainedModel(PreTrainedModel):
    config_class = SlimBertConfig
    base_model_prefix = "model"
    _supports_sdpa = True
    _supports_attention_backend = True


class CheckpointError(ValueError):
    pass


class SlimBertForQuestionAnswering(SlimBertPreTrainedModel):
    """Extractive QA head over a BERT/RoBERTa encoder with per-layer heads and FFN widths."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, but a checkpoint that does not fit is an error, never a
        silently re-initialised layer."""
        want_info = kwargs.pop("output_loading_info", False)
        where = os.path.join(str(pretrained_model_name_or_path), "model.safetensors")
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        except SafetensorError as e:
            raise CheckpointError(f"{where} is corrupt or truncated ({e}); save the model again (or restore it).") from e
        except RuntimeError as e:
            if "mismatch" not in str(e):
                raise
            raise CheckpointError(
                f"{where} does not match the per-layer num_heads/ffn_dims in config.json next to it. "
                "Keep config.json and model.safetensors from the same save_pretrained call."
            ) from e
        bad = {k: v for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
        if bad:
            raise CheckpointError(f"{where} does not fit its config.json: {bad}. Save the model again with save_pretrained.")
        return (model, info) if want_info else model

    def __init__(self, config: SlimBertConfig):
        super().__init__(config)
        base_cls = BASES[config.base_model_type][1]
        self.model = base_cls(config.to_base_config(), add_pooling_layer=False)
        head_size = config.hidden_size // config.num_attention_heads
        for layer, h, f in zip(self.model.encoder.layer, config.num_heads, config.ffn_dims):
            resize_layer(layer, h, f, head_size)
            # an instance method, not a forked layer class: only the FFN's arithmetic changes
            layer.feed_forward_chunk = MethodType(_feed_forward_chunk, layer)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        if config.num_answer_types:
            self.answer_type = nn.Linear(config.hidden_size, config.num_answer_types)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        start_positions=None,
        end_positions=None,
        answer_types=None,
        **kwargs,
    ) -> QuestionAnsweringModelOutput:
        if self.config.base_model_type == "roberta" and token_type_ids is not None and self.config.type_vocab_size == 1:
            token_type_ids = None
        out = self.model(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        logits = self.qa_outputs(out.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = (t.squeeze(-1).contiguous() for t in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = qa_loss(start_logits, end_logits, start_positions, end_positions)
        states = dict(hidden_states=out.hidden_states, attentions=out.attentions)
        if not self.config.num_answer_types:
            return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits, **states)
        type_logits = self.answer_type(out.last_hidden_state[:, 0])  # (B, num_answer_types), first token
        if loss is not None and answer_types is not None:
            # BERT-for-NQ: the mean of the start, end and answer-type cross-entropies.
            loss = (2 * loss + nn.functional.cross_entropy(type_logits, answer_types)) / 3
        return SlimBertQAOutput(loss=loss, start_logits=start_logits, end_logits=end_logits, answer_type_logits=type_logits, **states)


def qa_loss(start_logits, end_logits, start_positions, end_positions) -> torch.Tensor:
    """Mean of start and end cross-entropy; positions outside the window are ignored (as in transformers)."""
    ignored = start_logits.size(1)
    ce = nn.CrossEntropyLoss(ignore_index=ignored)
    return (ce(start_logits, start_positions.clamp(0, ignored)) + ce(end_logits, end_positions.clamp(0, ignored))) / 2


AutoConfig.register(SlimBertConfig.model_type, SlimBertConfig)
AutoModelForQuestionAnswering.register(SlimBertConfig, SlimBertForQuestionAnswering)
