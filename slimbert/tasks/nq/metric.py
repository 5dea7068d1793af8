"""Natural Questions scoring with the semantics of the official ``nq_eval.py``, rewritten here.

    gold = {"q1": [NQAnswer(long=(10, 50), short=[(12, 14)]), ...5 annotations...]}
    pred = {"q1": NQAnswer(long=(10, 50), short=[(12, 14)], long_score=3.2, short_score=3.2)}
    nq_score(gold, pred)  # long_/short_ precision, recall, f1, best_f1, best_threshold; n

Spans are document-token ``(start, end)`` pairs, end exclusive. The rules, as official:

* A gold long (short) answer exists only where at least 2 annotations are non-null; a short answer
  is non-null with a span or a yes/no. One annotation alone (train-style data, where the official
  script would count no gold at all) decides by itself.
* A long prediction is correct when its span equals the span of ANY non-null gold annotation; a
  short one when its span set equals an annotation's span set, or, for a yes/no prediction, when
  any annotation gave the same yes/no.
* precision = correct / predicted, recall = correct / gold, F1 their harmonic mean; the best
  threshold keeps the predictions scoring >= it and is searched over every score (ties together).

Scores are percentages, like :func:`slimbert.tasks.squad.metric.squad_v2_score`; thresholds are raw scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["NQAnswer", "score_long", "score_short", "prf", "best_threshold", "nq_score"]

YES_NO = ("NONE", "YES", "NO")


@dataclass
class NQAnswer:
    """One annotation (gold) or one prediction for an NQ example.

    ``long``: the long-answer token span or None; ``short``: short-answer spans (empty when none);
    ``yes_no``: "NONE", "YES" or "NO". Predictions carry ``long_score``/``short_score``.
    """

    long: tuple[int, int] | None = None
    short: list[tuple[int, int]] = field(default_factory=list)
    yes_no: str = "NONE"
    long_score: float = 0.0
    short_score: float = 0.0

    def __post_init__(self):
        self.yes_no = self.yes_no.upper()
        if self.yes_no not in YES_NO:
            raise ValueError(f"yes_no must be one of {YES_NO}, got {self.yes_no!r}")
        self.long = tuple(self.long) if self.long is not None else None
        self.short = [tuple(s) for s in self.short]

    @property
    def has_long(self) -> bool:
        return self.long is not None

    @property
    def has_short(self) -> bool:
        return bool(self.short) or self.yes_no != "NONE"


def _votes_needed(golds: Sequence[NQAnswer]) -> int:
    # Official: 2 of (5) annotators. With a single annotation that rule could never be met.
    return 1 if len(golds) == 1 else 2


def score_long(golds: Sequence[NQAnswer], pred: NQAnswer | None) -> tuple[bool, bool, bool, float]:
    """(gold has answer, prediction has answer, correct, score) for the long answer."""
    has_gold = sum(g.has_long for g in golds) >= _votes_needed(golds) if golds else False
    has_pred = pred is not None and pred.has_long
    correct = has_gold and has_pred and any(g.has_long and g.long == pred.long for g in golds)
    return has_gold, has_pred, correct, (pred.long_score if pred is not None else float("-inf"))


def score_short(golds: Sequence[NQAnswer], pred: NQAnswer | None) -> tuple[bool, bool, bool, float]:
    """(gold has answer, prediction has answer, correct, score) for the short answer."""
    if pred is not None and pred.yes_no != "NONE" and pred.short:
        raise ValueError("a prediction cannot hold both a yes/no answer and short-answer spans (as official)")
    has_gold = sum(g.has_short for g in golds) >= _votes_needed(golds) if golds else False
    has_pred = pred is not None and pred.has_short
    correct = False
    if has_gold and has_pred:
        if pred.yes_no != "NONE":
            correct = any(g.yes_no == pred.yes_no for g in golds)
        else:
            correct = any(set(g.short) == set(pred.short) for g in golds)
    return has_gold, has_pred, correct, (pred.short_score if pred is not None else float("-inf"))


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def _f1(p: float, r: float) -> float:
    return _safe_div(2 * p * r, p + r)


def prf(stats: Sequence[tuple[bool, bool, bool, float]]) -> tuple[float, float, float]:
    """(precision, recall, F1) as fractions of the predictions as they stand (scores ignored)."""
    correct = sum(s[2] for s in stats)
    p = _safe_div(correct, sum(s[1] for s in stats))
    r = _safe_div(correct, sum(s[0] for s in stats))
    return p, r, _f1(p, r)


def best_threshold(stats: Sequence[tuple[bool, bool, bool, float]]) -> tuple[float, float, float, float]:
    """(F1, precision, recall, threshold) at the score threshold with the best F1.

    Predictions are taken in decreasing score; all predictions of one score enter together. With no
    F1 above 0 the threshold is 0.0, as official.
    """
    total_gold = sum(s[0] for s in stats)
    by_score: dict[float, tuple[float, float]] = {}
    correct = predicted = 0
    for has_gold, has_pred, is_correct, score in sorted(stats, key=lambda s: -s[3]):
        correct += is_correct
        predicted += has_pred
        by_score[score] = (_safe_div(correct, predicted), _safe_div(correct, total_gold))
    best = (0.0, 0.0, 0.0, 0.0)
    for score, (p, r) in by_score.items():
        if _f1(p, r) > best[0]:
            best = (_f1(p, r), p, r, score)
    return best


def _cut(stats, threshold: float):
    # A prediction scoring below the threshold counts as no prediction.
    return [(g, p and sc >= threshold, c and sc >= threshold, sc) for g, p, c, sc in stats]


def nq_score(gold: Mapping[str, Sequence[NQAnswer]], predictions: Mapping[str, NQAnswer], threshold: float | None = None) -> dict:
    """Official-semantics NQ scores (percent): ``long_``/``short_`` + precision, recall, f1, best_f1,
    best_precision, best_recall, best_threshold; and ``n``.

    precision/recall/f1 count the predictions as given, or with ``threshold`` only those scoring
    >= it; the best-threshold figures always search all of them.

    Raises ValueError when the example ids of ``gold`` and ``predictions`` differ (as official).
    """
    if not gold:
        raise ValueError("gold is empty: no NQ examples to score")
    if set(gold) != set(predictions):
        diff = sorted(set(gold) ^ set(predictions), key=str)
        raise ValueError(
            f"gold and predictions cover different examples ({len(diff)} differ, e.g. {diff[0]!r}); "
            "predict every gold example and nothing else"
        )
    out: dict = {}
    for kind, score in (("long", score_long), ("short", score_short)):
        stats = [score(gold[k], predictions[k]) for k in gold]
        p, r, f = prf(stats if threshold is None else _cut(stats, threshold))
        bf, bp, br, bt = best_threshold(stats)
        out.update(
            {
                f"{kind}_precision": 100 * p,
                f"{kind}_recall": 100 * r,
                f"{kind}_f1": 100 * f,
                f"{kind}_best_f1": 100 * bf,
                f"{kind}_best_precision": 100 * bp,
                f"{kind}_best_recall": 100 * br,
                f"{kind}_best_threshold": bt,
            }
        )
    out["n"] = len(gold)
    return out
