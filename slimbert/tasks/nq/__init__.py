"""Natural Questions: ``data`` (read, convert), ``features`` (windows), ``evaluate`` (post-processing),
``metric`` (official semantics). The student gets an answer-type head when the teacher has none."""

from __future__ import annotations

from functools import partial

from slimbert.models.answer_type import has_answer_type_head, nq_model_from
from slimbert.tasks.base import SPAN_LABELS, Task
from slimbert.tasks.nq.data import as_nq_source
from slimbert.tasks.nq.evaluate import evaluate_nq
from slimbert.tasks.nq.features import eval_features, training_features


def training_windows(data, tokenizer, tcfg):
    source = as_nq_source(data, "train", tcfg.max_train_examples)
    return training_features(source, tokenizer, tcfg.max_length, tcfg.doc_stride, tcfg.null_window_rate, tcfg.seed)


def scorer(data, tokenizer, tcfg):
    eval_set = eval_features(as_nq_source(data, "validation", tcfg.max_eval_examples), tokenizer, tcfg.max_length, tcfg.doc_stride)
    return partial(evaluate_nq, tokenizer=tokenizer, examples=eval_set, max_length=tcfg.max_length, doc_stride=tcfg.doc_stride)


def student(model):
    return model if has_answer_type_head(model) else nq_model_from(model)


TASK = Task("nq", training_windows, scorer, student, labels=SPAN_LABELS + ("answer_types",))
