"""What every task shares: model inputs, the one collator, the one batching path, one logits pass,
and the small interface (``Task``) through which the training loop and ``prune`` use a task.

A task is SQuAD 2.0 (``slimbert/tasks/squad/``) or Natural Questions (``slimbert/tasks/nq/``); each
folder holds its whole story: reading, windows, post-processing, metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from slimbert.config import ConfigError
from slimbert.models.arch import PAD_LOGIT

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SPAN_LABELS = ("start_positions", "end_positions")


class Collator:
    """Pads a list of windows to the longest of them; keeps the model inputs and ``labels``."""

    def __init__(self, tokenizer, labels: Sequence[str] = SPAN_LABELS):
        self.pad = DataCollatorWithPadding(tokenizer, return_tensors="pt")
        self.keep = MODEL_INPUTS + tuple(labels)

    def __call__(self, features) -> dict[str, torch.Tensor]:
        return self.pad([{k: v for k, v in f.items() if k in self.keep} for f in features])


def batches(features, collate: Callable, batch_size: int, order: Sequence[int] | None = None, device=None) -> Iterator[tuple[list[int], dict]]:
    """(indices, padded batch on ``device``) over ``features`` in ``order`` (default: as stored)."""
    order = range(len(features)) if order is None else order
    for start in range(0, len(order), batch_size):
        idx = list(order[start : start + batch_size])
        batch = collate([features[i] for i in idx])
        yield idx, {k: v.to(device) for k, v in batch.items()} if device is not None else batch


@torch.no_grad()
def predict_logits(model, features, tokenizer, batch_size: int = 32, desc: str = "eval"):
    """(n_features, max_len) start and end logits (padding at PAD_LOGIT), and (n_features, n_types)
    answer-type logits, or None for a model without an answer-type head (NQ)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    model.eval()
    device = next(model.parameters()).device
    width = max(len(ids) for ids in features["input_ids"])
    starts = np.full((len(features), width), PAD_LOGIT, dtype=np.float32)
    ends = np.full_like(starts, PAD_LOGIT)
    types = None
    n_batches = (len(features) + batch_size - 1) // batch_size
    for idx, batch in tqdm(batches(features, Collator(tokenizer, labels=()), batch_size, device=device), total=n_batches, desc=desc, leave=False):
        out = model(**batch)
        rows, t = slice(idx[0], idx[-1] + 1), out.start_logits.shape[1]
        keep = batch["attention_mask"].bool().cpu().numpy()
        starts[rows, :t] = np.where(keep, out.start_logits.float().cpu().numpy(), PAD_LOGIT)
        ends[rows, :t] = np.where(keep, out.end_logits.float().cpu().numpy(), PAD_LOGIT)
        type_logits = getattr(out, "answer_type_logits", None)
        if type_logits is not None:
            if types is None:
                types = np.zeros((len(features), type_logits.shape[-1]), dtype=np.float32)
            types[rows] = type_logits.float().cpu().numpy()
    return starts, ends, types


@dataclass
class Task:
    """How ``prune`` and the training loop use a task, without naming it.

    ``training_windows(data, tokenizer, tcfg)`` -> labelled windows (a ``datasets.Dataset``);
    ``scorer(data, tokenizer, tcfg)`` -> a function model -> scores dict;
    ``student(model)`` -> the model to prune (e.g. with a task head added);
    ``labels``: the label columns the collator keeps; ``name`` as in ``TrainConfig.task``.
    """

    name: str
    training_windows: Callable
    scorer: Callable
    student: Callable = lambda model: model
    labels: tuple = SPAN_LABELS

    def collator(self, tokenizer) -> Collator:
        return Collator(tokenizer, self.labels)
