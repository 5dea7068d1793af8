"""Evaluate a QA model on Natural Questions: windows -> logits -> one NQ prediction per example -> scores.

    scores = evaluate_nq(model, tokenizer, load_nq("dev.jsonl.gz"))   # long_/short_ P, R, F1, best F1; n

Post-processing follows BERT-for-NQ: per window the best start+end span (top-``n_best`` starts x
ends, on document tokens, at most ``max_answer_len`` word pieces) scored against that window's
first-token null score; the example takes its best window. The long answer is the first top-level
candidate containing the span (else the smallest containing one). The answer-type head, when the
model has one, may turn the short answer into yes/no or nothing (long answer only); it must beat
"short" to do so, so an untrained (all-equal) head changes nothing. Both answers share the score
span - null, which the best-threshold search ranks.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable

import numpy as np

from slimbert.io import atomic_write_json
from slimbert.tasks.squad.data import DataError, check_max_length
from slimbert.tasks.squad.evaluate import predict_logits
from slimbert.tasks.squad.metric import _best_span, _to_numpy
from slimbert.tasks.nq.data import Candidate, NQExample
from slimbert.tasks.nq.features import NQEvalSet, eval_features
from slimbert.tasks.nq.metric import NQAnswer, nq_score
from slimbert.models.answer_type import LONG, NO, SHORT, YES


PREDICTIONS = "predictions.json"
SCORE_FLOOR = -1e30  # JSON has no -inf: "no span at all" is written as this, below every real score


def _long_answer(candidates: list[Candidate], start: int, end: int) -> tuple[int, int] | None:
    containing = [c for c in candidates if c.start <= start and c.end >= end]
    if not containing:
        return None
    top = [c for c in containing if c.top_level]
    c = top[0] if top else min(containing, key=lambda c: c.end - c.start)
    return c.start, c.end


def _answer_type(logits: np.ndarray | None) -> int:
    if logits is None:
        return SHORT
    other = max((LONG, YES, NO), key=lambda k: logits[k])
    return other if logits[other] > logits[SHORT] else SHORT


def postprocess_nq(
    eval_set: NQEvalSet,
    start_logits,
    end_logits,
    type_logits=None,
    n_best: int = 20,
    max_answer_len: int = 30,
) -> dict[str, NQAnswer]:
    """One :class:`NQAnswer` per example of ``eval_set`` from per-window logits (document-token spans).

    Every example with a valid span gets a prediction; thresholds are applied in scoring. One with
    no valid span at all is null with score -inf.
    """
    starts, ends = _to_numpy(start_logits), _to_numpy(end_logits)
    types = _to_numpy(type_logits) if type_logits is not None else None
    feats = eval_set.features
    if starts.shape[0] != len(feats) or starts.shape != ends.shape:
        raise ValueError(f"{len(feats)} windows but start/end logits of shape {starts.shape} / {ends.shape}")
    best: dict[str, tuple[float, int, int, int]] = {}  # example -> (score, first token, last token, window)
    for w, (eid, token_map) in enumerate(zip(feats["example_id"], feats["token_map"])):
        s, e = starts[w].astype(np.float64), ends[w].astype(np.float64)
        offsets = [t if t >= 0 else None for t in token_map]
        cand = _best_span(s, e, offsets, n_best, max_answer_len)
        if cand is None:
            continue
        score = cand[0] - float(s[0] + e[0])
        if eid not in best or score > best[eid][0]:  # strict: the earliest window wins ties
            best[eid] = (score, token_map[cand[1]], token_map[cand[2]], w)

    preds = {}
    for eid in eval_set.gold:
        if eid not in best:
            preds[eid] = NQAnswer(long_score=float("-inf"), short_score=float("-inf"))
            continue
        score, first, last, w = best[eid]
        kind = _answer_type(types[w] if types is not None else None)
        preds[eid] = NQAnswer(
            long=_long_answer(eval_set.candidates[eid], first, last + 1),
            short=[(first, last + 1)] if kind == SHORT else [],
            yes_no={YES: "YES", NO: "NO"}.get(kind, "NONE"),
            long_score=score,
            short_score=score,
        )
    return preds


def evaluate_nq(
    model,
    tokenizer,
    examples: Iterable[NQExample] | NQEvalSet,
    batch_size: int = 32,
    max_length: int = 384,
    doc_stride: int = 128,
    null_threshold: float = 0.0,
    predictions_dir: str | None = None,
) -> dict:
    """Official-semantics NQ scores (percent; slimbert.tasks.nq.metric.nq_score) plus n, seconds, skipped.

    ``long_f1``/``short_f1`` count a prediction only where its null score does not beat its span by
    more than ``null_threshold`` (the meaning of SQuAD's ``--null-threshold``); ``*_best_f1`` is the
    best over all score thresholds (the figure NQ papers report). With ``predictions_dir`` the
    predictions are written there as ``predictions.json`` (:func:`write_nq_predictions`).
    """
    check_max_length(model, max_length)
    t0 = time.perf_counter()
    eval_set = examples if isinstance(examples, NQEvalSet) else eval_features(examples, tokenizer, max_length, doc_stride)
    starts, ends, types = predict_logits(model, eval_set.features, tokenizer, batch_size, desc="nq eval")
    preds = postprocess_nq(eval_set, starts, ends, types)
    if predictions_dir:
        os.makedirs(predictions_dir, exist_ok=True)
        write_nq_predictions(preds, eval_set, os.path.join(predictions_dir, PREDICTIONS))
    scores = nq_score(eval_set.gold, preds, threshold=-null_threshold)  # score = span - null
    scores["skipped"] = eval_set.skipped
    scores["seconds"] = round(time.perf_counter() - t0, 2)
    return scores


def _span_json(span: tuple[int, int] | None, candidates: list[Candidate] = ()) -> dict:
    """A token span as the official format writes it; byte offsets where the data gave them (a
    candidate's), else -1, which nq_eval.py reads as "compare token offsets"."""
    if span is None:
        return {"start_token": -1, "end_token": -1, "start_byte": -1, "end_byte": -1}
    cand = next((c for c in candidates if (c.start, c.end) == tuple(span)), None)
    return {"start_token": span[0], "end_token": span[1],
            "start_byte": cand.start_byte if cand else -1, "end_byte": cand.end_byte if cand else -1}


def write_nq_predictions(preds: dict[str, NQAnswer], eval_set: NQEvalSet, path: str) -> None:
    """The official NQ predictions file (what ``nq_eval.py --predictions_path`` reads), atomically:

        {"predictions": [{"example_id", "long_answer": {start_token, end_token, start_byte, end_byte},
          "long_answer_score", "short_answers": [spans], "short_answers_score", "yes_no_answer"}]}

    ``example_id`` as the data file has it; no answer is a span of -1s and no short answers.
    """
    rows = []
    for eid, p in preds.items():
        rows.append({
            "example_id": eval_set.raw_ids.get(eid, eid),
            "long_answer": _span_json(p.long, eval_set.candidates.get(eid, ())),
            "long_answer_score": max(p.long_score, SCORE_FLOOR),
            "short_answers": [_span_json(s) for s in p.short],
            "short_answers_score": max(p.short_score, SCORE_FLOOR),
            "yes_no_answer": p.yes_no,
        })
    atomic_write_json({"predictions": rows}, path)


def read_nq_predictions(path: str) -> dict[str, NQAnswer]:
    """An official NQ predictions file -> {example_id (as text): NQAnswer}, as nq_eval.py reads it."""
    try:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)["predictions"]
        preds = {}
        for r in rows:
            long = r.get("long_answer", {})
            preds[str(r["example_id"])] = NQAnswer(
                long=(long["start_token"], long["end_token"]) if long.get("start_token", -1) >= 0 else None,
                short=[(s["start_token"], s["end_token"]) for s in r.get("short_answers", []) if s["start_token"] >= 0],
                yes_no=r.get("yes_no_answer", "NONE"),
                long_score=float(r["long_answer_score"]),
                short_score=float(r["short_answers_score"]),
            )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not an NQ predictions file ({type(e).__name__}: {e}); expected {{'predictions': [...]}}") from e
    return preds
