"""Evaluate a QA model on SQuAD 2.0 examples: windows -> logits -> post-processing -> official EM/F1."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import MODEL_INPUTS, Collator, eval_features
from .metrics import postprocess_predictions, squad_v2_score

PAD_LOGIT = -1e4  # logits of padding positions: never in the top-n spans, never the null score


@torch.no_grad()
def predict_logits(model, features, tokenizer, batch_size: int = 32, desc: str = "eval"):
    """(n_features, max_len) start and end logits (padding at PAD_LOGIT), and (n_features, n_types)
    answer-type logits, or None for a model without an answer-type head (NQ)."""
    model.eval()
    device = next(model.parameters()).device
    inputs = features.select_columns([c for c in MODEL_INPUTS if c in features.column_names])
    loader = DataLoader(inputs, batch_size=batch_size, collate_fn=Collator(tokenizer))
    width = max(len(ids) for ids in features["input_ids"])
    starts = np.full((len(features), width), PAD_LOGIT, dtype=np.float32)
    ends = np.full_like(starts, PAD_LOGIT)
    types, row = None, 0
    for batch in tqdm(loader, desc=desc, leave=False):
        out = model(**{k: v.to(device) for k, v in batch.items()})
        n, t = out.start_logits.shape
        keep = batch["attention_mask"].bool().numpy()
        starts[row : row + n, :t] = np.where(keep, out.start_logits.float().cpu().numpy(), PAD_LOGIT)
        ends[row : row + n, :t] = np.where(keep, out.end_logits.float().cpu().numpy(), PAD_LOGIT)
        type_logits = getattr(out, "answer_type_logits", None)
        if type_logits is not None:
            if types is None:
                types = np.zeros((len(features), type_logits.shape[-1]), dtype=np.float32)
            types[row : row + n] = type_logits.float().cpu().numpy()
        row += n
    return starts, ends, types


def evaluate(
    model,
    tokenizer,
    examples,
    batch_size: int = 32,
    max_length: int = 384,
    doc_stride: int = 128,
    null_threshold: float = 0.0,
    features=None,
) -> dict:
    """Official SQuAD 2.0 scores (percent) incl. HasAns/NoAns and best no-answer threshold, plus n and seconds."""
    t0 = time.perf_counter()
    features = features if features is not None else eval_features(examples, tokenizer, max_length, doc_stride)
    starts, ends, _ = predict_logits(model, features, tokenizer, batch_size)
    preds, null_diff, _ = postprocess_predictions(examples, features, starts, ends, null_threshold=null_threshold)
    gold = {ex_id: ans["text"] for ex_id, ans in zip(examples["id"], examples["answers"])}
    # na_prob only needs to order questions; squash so "no span at all" (+inf) stays finite in JSON
    na_probs = {k: float(1 / (1 + np.exp(-np.clip(v, -50, 50)))) for k, v in null_diff.items()}
    scores = squad_v2_score(gold, preds, na_probs)
    scores["n"] = len(examples)
    scores["seconds"] = round(time.perf_counter() - t0, 2)
    return scores
