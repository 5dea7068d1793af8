"""The compact model: a BERT/RoBERTa QA model whose every layer has its own head count and FFN width.

``SlimBertConfig`` (model_type ``slimbert``) is the base config plus ``base_model_type``, the
per-layer lists ``num_heads`` and ``ffn_dims``, and ``num_answer_types`` (> 0 adds the Natural
Questions answer-type head on the first token, slimbert/models/answer_type.py).
``SlimBertForQuestionAnswering`` builds the library's own ``BertModel``/``RobertaModel`` and only
resizes Linear layers; a layer with no heads swaps its self-attention for :class:`NoHeads`, because
transformers' ``view(..., -1, d_h)`` cannot infer a size from an empty tensor. Each layer is a real
subclass of the library's (``CompactBertLayer``) whose FFN runs the Triton kernel on CUDA. Both
classes are registered with the Auto classes on ``import slimbert`` (slimbert/hf/__init__.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    PreTrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    RobertaModel,
)
from transformers.activations import GELUActivation
from transformers.modeling_outputs import QuestionAnsweringModelOutput
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.roberta.modeling_roberta import RobertaLayer

from slimbert.hf.attention import ATTN_IMPLEMENTATION
from slimbert.kernels import ffn as triton_ffn
from slimbert.kernels import use_triton
from slimbert.train.losses import qa_loss

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


class _TritonFFN:
    """A layer's FFN with up-projection + bias + GELU and the down-projection in Triton (when
    ``use_triton``); otherwise the base layer's own FFN."""

    def feed_forward_chunk(self, attention_output):
        dense_in, out = self.intermediate.dense, self.output
        if use_triton(attention_output) and isinstance(self.intermediate.intermediate_act_fn, GELUActivation):
            hidden = triton_ffn(attention_output, dense_in.weight, dense_in.bias, out.dense.weight, out.dense.bias)
            return out.LayerNorm(out.dropout(hidden) + attention_output)
        return super().feed_forward_chunk(attention_output)


class CompactBertLayer(_TritonFFN, BertLayer):
    pass


class CompactRobertaLayer(_TritonFFN, RobertaLayer):
    pass


LAYERS = {"bert": CompactBertLayer, "roberta": CompactRobertaLayer}


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
        base, layers = self.model.config, self.model.encoder.layer
        for i, (h, f) in enumerate(zip(config.num_heads, config.ffn_dims)):
            # the library's layer with only the FFN's arithmetic overridden (a real subclass, so the
            # model pickles), then its Linear layers resized
            layers[i] = LAYERS[config.base_model_type](base, layer_idx=i)
            resize_layer(layers[i], h, f, head_size)
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
