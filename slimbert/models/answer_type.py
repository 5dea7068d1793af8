"""Natural Questions models: a SQuAD QA model turned into one with an answer-type head, and its losses.

    nq = nq_model_from(squad_model)   # dense SlimBertForQuestionAnswering, same encoder and span head
    out = nq(**batch)                 # start_logits, end_logits, answer_type_logits (B, 5)

Answer types per window, as in BERT-for-NQ: 0 no answer, 1 long answer only, 2 short span, 3 yes,
4 no. The head reads the first token's hidden state; gates attach to the encoder as usual and
:func:`slimbert.collapse` carries the head through unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from slimbert.models.arch import check_qa_model, encoder_layers
from slimbert.models.compact import SlimBertConfig, SlimBertForQuestionAnswering

ANSWER_TYPES = ("none", "long", "short", "yes", "no")
NONE, LONG, SHORT, YES, NO = range(len(ANSWER_TYPES))


def has_answer_type_head(model: nn.Module) -> bool:
    return bool(getattr(model.config, "num_answer_types", 0))


@torch.no_grad()
def nq_model_from(qa_model: nn.Module) -> SlimBertForQuestionAnswering:
    """A dense :class:`SlimBertForQuestionAnswering` with ``qa_model``'s weights and a fresh answer-type head.

    ``qa_model`` is a BertForQuestionAnswering / RobertaForQuestionAnswering (e.g. the SQuAD teacher)
    or a compact model; its start/end logits are reproduced exactly. The new head starts at zero, so
    every answer type is equally likely and post-processing trusts the span head until it is trained.
    """
    check_qa_model(qa_model)
    if has_answer_type_head(qa_model):
        raise ValueError("this model already has an answer-type head; use it as it is")
    layers = encoder_layers(qa_model)
    config = SlimBertConfig.from_base(
        qa_model.config,
        num_heads=[layer.attention.self.num_attention_heads for layer in layers],
        ffn_dims=[layer.intermediate.dense.out_features for layer in layers],
    )
    config.num_answer_types = len(ANSWER_TYPES)
    model = SlimBertForQuestionAnswering(config)
    prefix = qa_model.base_model_prefix + "."
    state = {("model." + k[len(prefix) :]) if k.startswith(prefix) else k: v for k, v in qa_model.state_dict().items()}
    nn.init.zeros_(model.answer_type.weight)
    nn.init.zeros_(model.answer_type.bias)
    state["answer_type.weight"], state["answer_type.bias"] = model.answer_type.weight, model.answer_type.bias
    model.load_state_dict(state, strict=True)
    return model.to(next(qa_model.parameters()).device).train(qa_model.training)
