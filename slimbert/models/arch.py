"""Which models slimbert understands, found by type (never by module-name regex)."""

from __future__ import annotations

from torch import nn
from transformers import BertForQuestionAnswering, RobertaForQuestionAnswering
from transformers.models.bert.modeling_bert import BertLayer
from transformers.models.roberta.modeling_roberta import RobertaLayer

PAD_LOGIT = -1e4  # the logit a padding position gets: never in the top-n spans, never the null score

SUPPORTED = (BertForQuestionAnswering, RobertaForQuestionAnswering)
LAYER_TYPES = (BertLayer, RobertaLayer)


class UnsupportedModelError(TypeError):
    pass


def base_model(model: nn.Module) -> nn.Module:
    """The encoder-bearing base model (``model.bert`` / ``model.roberta`` / compact ``model.model``)."""
    base = getattr(model, "base_model", None)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None or not all(isinstance(layer, LAYER_TYPES) for layer in layers):
        raise UnsupportedModelError(
            f"slimbert prunes BERT and RoBERTa extractive QA models (BertForQuestionAnswering, "
            f"RobertaForQuestionAnswering, or slimbert's compact model); got {type(model).__name__}. "
            "Load your checkpoint with transformers.AutoModelForQuestionAnswering.from_pretrained(...)."
        )
    return base


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    return list(base_model(model).encoder.layer)


def check_qa_model(model: nn.Module) -> None:
    """Raise a clear error unless ``model`` is a BERT/RoBERTa QA model slimbert can prune."""
    if not isinstance(model, SUPPORTED) and type(model).__name__ != "SlimBertForQuestionAnswering":
        raise UnsupportedModelError(
            f"expected a BertForQuestionAnswering or RobertaForQuestionAnswering, got {type(model).__name__}. "
            "slimbert prunes extractive QA models; fine-tune one with a QA head first."
        )
    base_model(model)


def max_tokens(config) -> int:
    """The longest window the model's position embeddings take (RoBERTa's start after padding_idx)."""
    base = getattr(config, "base_model_type", config.model_type)
    return config.max_position_embeddings - (config.pad_token_id + 1 if base == "roberta" else 0)


def head_dim(config) -> int:
    return config.hidden_size // config.num_attention_heads
