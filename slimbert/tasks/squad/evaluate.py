"""Evaluate a QA model on SQuAD 2.0 examples: windows -> logits -> post-processing -> official EM/F1."""

from __future__ import annotations

import os
import time

import numpy as np

from slimbert.io import atomic_write_json
from slimbert.tasks.base import predict_logits
from slimbert.tasks.squad.data import check_max_length, eval_features
from slimbert.tasks.squad.metric import postprocess_predictions, squad_v2_score


def evaluate(
    model,
    tokenizer,
    examples,
    batch_size: int = 32,
    max_length: int = 384,
    doc_stride: int = 128,
    null_threshold: float = 0.0,
    features=None,
    predictions_dir: str | None = None,
) -> dict:
    """Official SQuAD 2.0 scores (percent) incl. HasAns/NoAns and best no-answer threshold, plus n and seconds.

    With ``predictions_dir``: ``predictions.json`` (question id -> answer text, "" for no answer) and
    ``na_prob.json`` (question id -> no-answer probability) written there, the files the official
    script reads: ``evaluate-v2.0.py dev.json predictions.json --na-prob-file na_prob.json``.
    """
    check_max_length(model, max_length)
    t0 = time.perf_counter()
    features = features if features is not None else eval_features(examples, tokenizer, max_length, doc_stride)
    starts, ends, _ = predict_logits(model, features, tokenizer, batch_size)
    preds, null_diff, _ = postprocess_predictions(examples, features, starts, ends, null_threshold=null_threshold)
    gold = {ex_id: ans["text"] for ex_id, ans in zip(examples["id"], examples["answers"])}
    # na_prob only needs to order questions; squash so "no span at all" (+inf) stays finite in JSON
    na_probs = {k: float(1 / (1 + np.exp(-np.clip(v, -50, 50)))) for k, v in null_diff.items()}
    scores = squad_v2_score(gold, preds, na_probs)
    if predictions_dir:
        os.makedirs(predictions_dir, exist_ok=True)
        atomic_write_json(preds, os.path.join(predictions_dir, "predictions.json"))
        atomic_write_json(na_probs, os.path.join(predictions_dir, "na_prob.json"))
    scores["n"] = len(examples)
    scores["seconds"] = round(time.perf_counter() - t0, 2)
    return scores
