"""SQuAD 2.0 evaluation and span post-processing for extractive QA.

Two parts, both pure Python + numpy (torch tensors are accepted but torch is
never imported here):

* The official SQuAD 2.0 metric semantics (``evaluate-v2.0.py``), rewritten
  for this project: :func:`normalize_answer`, :func:`exact_match`, :func:`f1`
  and :func:`squad_v2_score`, including the no-answer threshold and the
  best-threshold search.
* :func:`postprocess_predictions`, which turns per-feature start/end logits
  of sliding-window features back into one answer string per example, using
  the usual BERT/RoBERTa SQuAD 2.0 recipe (n-best start x end search, null
  score at the CLS token).
"""

from __future__ import annotations

import collections
import re
import string
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "normalize_answer",
    "exact_match",
    "f1",
    "squad_v2_score",
    "postprocess_predictions",
]

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


# ---------------------------------------------------------------------------
# SQuAD 2.0 metric
# ---------------------------------------------------------------------------


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, squash spaces."""
    s = s.lower()
    # Punctuation goes before articles, as in the official script, so "a-b"
    # becomes the word "ab" rather than the article "a" plus "b".
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def exact_match(gold: str, pred: str) -> int:
    """1 if the normalized strings are equal, else 0."""
    return int(normalize_answer(gold) == normalize_answer(pred))


def f1(gold: str, pred: str) -> float:
    """Token-overlap F1 of the normalized strings.

    If either side has no tokens the score is 1.0 when both are empty and
    0.0 otherwise (an unanswerable question is only matched by no answer).
    """
    gold_toks = _tokens(gold)
    pred_toks = _tokens(pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _subset_eval(exact: dict, f1s: dict, qids: list, prefix: str = "") -> dict:
    total = len(qids)
    return {
        f"{prefix}exact": 100.0 * sum(exact[q] for q in qids) / total,
        f"{prefix}f1": 100.0 * sum(f1s[q] for q in qids) / total,
        f"{prefix}total": total,
    }


def _find_best_thresh(preds, scores, na_probs, has_ans) -> tuple[float, float]:
    # Threshold t means "answer nothing when na_prob > t". Start from answering
    # nothing anywhere (every NoAns question right), then switch questions to
    # their prediction in order of increasing na_prob, tracking the running
    # score. Ties in na_prob keep na_probs' order (stable sort), as official.
    cur = sum(1 for q in scores if not has_ans[q])
    best, best_thresh = cur, 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            # Answering an unanswerable question loses its point; an empty
            # prediction keeps it.
            diff = -1 if preds[qid] else 0
        cur += diff
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), float(best_thresh)


def squad_v2_score(
    gold_answers: dict[str, list[str]],
    predictions: dict[str, str],
    na_probs: dict[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict:
    """Official SQuAD 2.0 scores, as percentages.

    ``gold_answers`` maps question id -> gold answer texts. A question is in
    HasAns iff it has any gold answer at all (the official ``bool(qa["answers"])``);
    for scoring, golds that normalize to "" are dropped and a question left with
    none is scored against [""]. Each question scores the max over its golds.

    With ``na_probs``, a question whose ``na_prob > na_prob_thresh`` is
    scored as if the prediction were "", and ``best_exact``/``best_f1`` with
    their thresholds are added (computed on the un-thresholded scores).

    Returns ``exact``, ``f1``, ``total``; ``HasAns_*`` / ``NoAns_*``
    (exact, f1, total) for whichever subsets are non-empty; and with
    ``na_probs`` also ``best_exact``, ``best_exact_thresh``, ``best_f1``,
    ``best_f1_thresh``.

    Raises ValueError if ``gold_answers`` is empty or any question lacks a
    prediction (or an na_prob); extra prediction ids only warn.
    """
    if not gold_answers:
        raise ValueError("gold_answers is empty")
    missing = [q for q in gold_answers if q not in predictions]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(gold_answers)} questions have no prediction "
            f"(e.g. {missing[0]!r}); predictions for every question are required"
        )
    extra = [q for q in predictions if q not in gold_answers]
    if extra:
        warnings.warn(
            f"ignoring {len(extra)} predictions for unknown question ids "
            f"(e.g. {extra[0]!r})",
            stacklevel=2,
        )
    if na_probs is not None:
        missing_na = [q for q in gold_answers if q not in na_probs]
        if missing_na:
            raise ValueError(
                f"{len(missing_na)} questions have no na_prob (e.g. {missing_na[0]!r})"
            )

    has_ans: dict[str, bool] = {}
    exact_raw: dict[str, int] = {}
    f1_raw: dict[str, float] = {}
    for qid, answers in gold_answers.items():
        has_ans[qid] = bool(answers)
        golds = [a for a in answers if normalize_answer(a)] or [""]
        pred = predictions[qid]
        exact_raw[qid] = max(exact_match(g, pred) for g in golds)
        f1_raw[qid] = max(f1(g, pred) for g in golds)

    if na_probs is None:
        exact_s, f1_s = exact_raw, f1_raw
    else:
        # Predicting "" scores 1 on NoAns questions and 0 on HasAns ones.
        exact_s, f1_s = {}, {}
        for qid in gold_answers:
            if na_probs[qid] > na_prob_thresh:
                exact_s[qid] = f1_s[qid] = float(not has_ans[qid])
            else:
                exact_s[qid], f1_s[qid] = exact_raw[qid], f1_raw[qid]

    qids = list(gold_answers)
    result = _subset_eval(exact_s, f1_s, qids)
    has_qids = [q for q in qids if has_ans[q]]
    no_qids = [q for q in qids if not has_ans[q]]
    if has_qids:
        result.update(_subset_eval(exact_s, f1_s, has_qids, "HasAns_"))
    if no_qids:
        result.update(_subset_eval(exact_s, f1_s, no_qids, "NoAns_"))

    if na_probs is not None:
        preds = {q: predictions[q] for q in qids}
        best_exact, exact_thresh = _find_best_thresh(preds, exact_raw, na_probs, has_ans)
        best_f1, f1_thresh = _find_best_thresh(preds, f1_raw, na_probs, has_ans)
        result.update(
            best_exact=best_exact,
            best_exact_thresh=exact_thresh,
            best_f1=best_f1,
            best_f1_thresh=f1_thresh,
        )
    return result


# ---------------------------------------------------------------------------
# Span post-processing
# ---------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    # Duck-type torch tensors so this module never needs torch; .float()
    # first because numpy has no bfloat16.
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if hasattr(x, "float"):
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _column(rows: Any, name: str) -> list:
    # A datasets.Dataset hands out whole columns far faster than row dicts.
    if hasattr(rows, "column_names"):
        return list(rows[name])
    return [row[name] for row in rows]


def _best_span(
    start: np.ndarray,
    end: np.ndarray,
    offsets: Sequence,
    n_best: int,
    max_answer_len: int,
) -> tuple[float, int, int] | None:
    """Best valid (score, start_tok, end_tok) of one feature, or None."""
    k = min(n_best, start.shape[0])
    # Stable sort: among equal logits the earlier token ranks first, so ties
    # resolve deterministically.
    s_idx = np.argsort(-start, kind="stable")[:k]
    e_idx = np.argsort(-end, kind="stable")[:k]
    n_off = len(offsets)
    # Only the 2k candidate tokens need their offsets looked up.
    s_ctx = np.fromiter((i < n_off and offsets[i] is not None for i in s_idx), bool, k)
    e_ctx = np.fromiter((i < n_off and offsets[i] is not None for i in e_idx), bool, k)
    length = e_idx[None, :] - s_idx[:, None] + 1
    valid = s_ctx[:, None] & e_ctx[None, :] & (length >= 1) & (length <= max_answer_len)
    if not valid.any():
        return None
    scores = np.where(valid, start[s_idx][:, None] + end[e_idx][None, :], -np.inf)
    i, j = divmod(int(np.argmax(scores)), k)
    return float(scores[i, j]), int(s_idx[i]), int(e_idx[j])


def postprocess_predictions(
    examples: Sequence[Mapping],
    features: Sequence[Mapping],
    start_logits: Any,
    end_logits: Any,
    n_best: int = 20,
    max_answer_len: int = 30,
    null_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, float], dict[str, float]]:
    """Pick one answer per example from sliding-window feature logits.

    ``examples`` rows need ``id`` and ``context``; ``features`` rows need
    ``example_id`` and ``offset_mapping`` (a ``[start_char, end_char]`` per
    context token, None for every other token). Logits are arrays (or torch
    tensors) of shape (n_features, seq_len), CLS at index 0.

    Per example: null score = min over its features of start[0] + end[0];
    the best span is the highest start + end logit among the top-``n_best``
    starts x top-``n_best`` ends of each feature, both on context tokens,
    end >= start, at most ``max_answer_len`` tokens.

    Returns ``(predictions, null_score_diff, best_span_score)`` keyed by
    example id. ``null_score_diff = null score - best span score`` and the
    prediction is "" when it exceeds ``null_threshold``, else the span text.
    If an example has no valid span (or no feature at all) its best span
    score is ``-inf``, its diff ``+inf`` and its prediction "" (serialize
    with ``json.dumps``' default ``allow_nan=True`` or map them first).
    Features whose example is not in ``examples`` are ignored with a warning.
    """
    if n_best < 1 or max_answer_len < 1:
        raise ValueError("n_best and max_answer_len must be >= 1")
    start_all = _to_numpy(start_logits)
    end_all = _to_numpy(end_logits)
    if start_all.ndim != 2 or start_all.shape != end_all.shape:
        raise ValueError(
            f"start/end logits must be 2-D and equal in shape, got "
            f"{start_all.shape} and {end_all.shape}"
        )
    feat_ids = _column(features, "example_id")
    feat_offsets = _column(features, "offset_mapping")
    if len(feat_ids) != start_all.shape[0]:
        raise ValueError(
            f"{len(feat_ids)} features but logits for {start_all.shape[0]}"
        )

    ex_ids = _column(examples, "id")
    contexts = _column(examples, "context")
    if len(set(ex_ids)) != len(ex_ids):
        raise ValueError("examples contain duplicate ids")

    by_example: dict[Any, list[int]] = {eid: [] for eid in ex_ids}
    orphans = 0
    for fi, eid in enumerate(feat_ids):
        if eid in by_example:
            by_example[eid].append(fi)
        else:
            orphans += 1
    if orphans:
        warnings.warn(
            f"ignoring {orphans} features whose example_id is not in examples",
            stacklevel=2,
        )

    predictions: dict[str, str] = {}
    null_diff: dict[str, float] = {}
    span_score: dict[str, float] = {}
    for eid, context in zip(ex_ids, contexts):
        null_score = np.inf
        best: tuple[float, int, int] | None = None
        best_offsets = None
        for fi in by_example[eid]:
            # float64 so the logit sums do not round differently per dtype.
            start = start_all[fi].astype(np.float64, copy=False)
            end = end_all[fi].astype(np.float64, copy=False)
            null_score = min(null_score, float(start[0] + end[0]))
            cand = _best_span(start, end, feat_offsets[fi], n_best, max_answer_len)
            # Strict ">" keeps the earliest feature on ties.
            if cand is not None and (best is None or cand[0] > best[0]):
                best, best_offsets = cand, feat_offsets[fi]
        if best is None:
            predictions[eid] = ""
            null_diff[eid] = float("inf")
            span_score[eid] = float("-inf")
            continue
        score, s_tok, e_tok = best
        text = context[best_offsets[s_tok][0] : best_offsets[e_tok][1]]
        diff = null_score - score
        predictions[eid] = "" if diff > null_threshold else text
        null_diff[eid] = diff
        span_score[eid] = score
    return predictions, null_diff, span_score
