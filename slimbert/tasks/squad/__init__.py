"""SQuAD 2.0: ``data`` (read, windows), ``metric`` (official EM/F1, post-processing), ``evaluate``."""

from __future__ import annotations

from functools import partial

import datasets

from slimbert.tasks.base import Task
from slimbert.tasks.squad.data import DataError, eval_features, load_squad, training_features
from slimbert.tasks.squad.evaluate import evaluate


def examples(data, split: str, limit: int = 0) -> datasets.Dataset:
    """``data`` as examples: a SQuAD 2.0 JSON path, a ``datasets.Dataset`` (hub schema), or None for the hub."""
    if data is None or isinstance(data, str):
        return load_squad(data, split=split, limit=limit)
    if limit:
        data = data.select(range(min(limit, len(data))))
    if len(data) == 0:
        raise DataError("empty data: no questions to train/evaluate on")
    return data


def training_windows(data, tokenizer, tcfg) -> datasets.Dataset:
    """Labelled windows of ``data`` plus ``tcfg.extra_train`` (more distillation data, e.g. SQuAD 1.x)."""
    train = examples(data, "train", tcfg.max_train_examples)
    if tcfg.extra_train:  # its windows get the teacher's soft labels like any other
        extra = load_squad(tcfg.extra_train, "train", tcfg.max_extra_examples).cast(train.features)
        train = datasets.concatenate_datasets([train, extra])
    return training_features(train, tokenizer, tcfg.max_length, tcfg.doc_stride)


def scorer(data, tokenizer, tcfg):
    """model -> official SQuAD 2.0 scores on ``data``, windowed once here."""
    ex = examples(data, "validation", tcfg.max_eval_examples)
    features = eval_features(ex, tokenizer, tcfg.max_length, tcfg.doc_stride)
    return partial(evaluate, tokenizer=tokenizer, examples=ex, features=features, max_length=tcfg.max_length)


TASK = Task("squad", training_windows, scorer)
