"""Natural Questions windows: the BERT-for-NQ recipe over a streamed document.

    train = training_features(load_nq("train.jsonl.gz"), tokenizer)   # + start/end_positions, answer_types
    dev = eval_features(load_nq("dev.jsonl.gz"), tokenizer)           # dev.features, dev.candidates, dev.gold

The context is the document's non-HTML tokens joined by spaces; windows of ``max_length`` with
``doc_stride`` overlap, question first (as slimbert.tasks.squad.data). Each window's label is the example's
answer type (slimbert.models.answer_type.ANSWER_TYPES) and span when the target lies wholly inside the window, else
"none" at the first token. The target is the first short answer; for yes/no and long-only answers
it is the long answer. Training uses one annotation: the first with a short answer or yes/no, else
the first with a long answer. Documents are dropped once windowed, so a stream of any length fits
as long as its windows do (``null_window_rate`` thins the answerless ones, as BERT-for-NQ did).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

import datasets
import torch

from slimbert.tasks.squad.data import DataError, tokenize_windows
from slimbert.tasks.nq.data import Candidate, NQExample
from slimbert.tasks.nq.metric import NQAnswer
from slimbert.models.answer_type import LONG, NO, NONE, SHORT, YES

CHUNK = 32  # examples tokenized together: fast tokenizers batch well, documents stay few in memory


def _context(ex: NQExample) -> tuple[str, list[int], list[int]]:
    """(text, char start of each kept token, its document index); HTML and empty tokens are left out."""
    keep = [i for i, (t, h) in enumerate(zip(ex.tokens, ex.is_html)) if not h and t.strip()]
    starts, pos = [], 0
    for i in keep:
        starts.append(pos)
        pos += len(ex.tokens[i]) + 1
    return " ".join(ex.tokens[i] for i in keep), starts, keep


def training_target(ex: NQExample) -> tuple[int, tuple[int, int] | None]:
    """(answer type, document-token target span or None) from the example's annotations."""
    ann = next((a for a in ex.annotations if a.has_short), None) or next((a for a in ex.annotations if a.has_long), None)
    if ann is None:
        return NONE, None
    if ann.yes_no != "NONE":
        return (YES if ann.yes_no == "YES" else NO), ann.long
    if ann.short:
        return SHORT, ann.short[0]
    return LONG, ann.long


def _char_span(span, starts, keep, tokens) -> tuple[int, int] | None:
    """The context characters of a document-token span, or None when it holds no kept token."""
    lo = bisect.bisect_left(keep, span[0])
    hi = bisect.bisect_left(keep, span[1]) - 1
    if lo > hi:
        return None
    return starts[lo], starts[hi] + len(tokens[keep[hi]])


def _windows(examples: Iterable[NQExample], tokenizer, max_length: int, doc_stride: int):
    """Yield (example, encoding, window index, context starts, kept indices) per window, CHUNK examples at a time."""
    it = iter(examples)
    seen = set()
    while chunk := list(itertools.islice(it, CHUNK)):
        for ex in chunk:
            if ex.example_id in seen:
                raise DataError(f"duplicate example_id {ex.example_id!r}: every NQ example needs its own id")
            seen.add(ex.example_id)
        contexts = [_context(ex) for ex in chunk]
        enc = tokenize_windows(tokenizer, [ex.question for ex in chunk], [c[0] for c in contexts], max_length, doc_stride)
        for w, e in enumerate(enc["overflow_to_sample_mapping"]):
            yield chunk[e], enc, w, contexts[e][1], contexts[e][2]


def _inputs(enc, w: int) -> dict:
    return {k: enc[k][w] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def training_features(
    examples: Iterable[NQExample],
    tokenizer,
    max_length: int = 384,
    doc_stride: int = 128,
    null_window_rate: float = 1.0,
    seed: int = 0,
) -> datasets.Dataset:
    """Windows with ``start_positions``/``end_positions`` and ``answer_types``.

    A window without the target keeps label 0 ("none", first token) and survives with probability
    ``null_window_rate`` (seeded, so reruns and resumed runs see the same windows).
    """
    if not 0.0 < null_window_rate <= 1.0:
        raise DataError(f"null_window_rate must be in (0, 1], got {null_window_rate}")
    rng = random.Random(seed)
    rows: dict[str, list] = {}
    n_examples = 0
    last = None
    for ex, enc, w, starts, keep in _windows(examples, tokenizer, max_length, doc_stride):
        if ex is not last:
            n_examples, last = n_examples + 1, ex
            kind, target = training_target(ex)
            chars = _char_span(target, starts, keep, ex.tokens) if target is not None else None
        offsets, seq_ids = enc["offset_mapping"][w], enc.sequence_ids(w)
        ctx = [j for j, s in enumerate(seq_ids) if s == 1]
        start = end = 0
        label = NONE
        if chars is not None and ctx and offsets[ctx[0]][0] <= chars[0] and offsets[ctx[-1]][1] >= chars[1]:
            start = next(j for j in ctx if offsets[j][1] > chars[0])
            end = next(j for j in reversed(ctx) if offsets[j][0] < chars[1])
            label = kind
        if label == NONE and null_window_rate < 1.0 and rng.random() >= null_window_rate:
            continue
        row = _inputs(enc, w) | {"start_positions": start, "end_positions": end, "answer_types": label}
        for k, v in row.items():
            rows.setdefault(k, []).append(v)
    if not rows:
        raise DataError("no NQ training windows: the data holds no examples (or every window was dropped)")
    return datasets.Dataset.from_dict(rows)


@dataclass
class NQEvalSet:
    """Evaluation windows and what scoring needs of each example (its documents are gone)."""

    features: datasets.Dataset  # model inputs + example_id + token_map (document token per position, -1 outside)
    candidates: dict[str, list[Candidate]]
    gold: dict[str, list[NQAnswer]]
    skipped: int = 0  # bad lines skipped while reading (skip_bad=True)
    raw_ids: dict = field(default_factory=dict)  # example_id -> the id as the file has it (int in real NQ)

    def __len__(self) -> int:
        return len(self.gold)


def eval_features(examples: Iterable[NQExample], tokenizer, max_length: int = 384, doc_stride: int = 128) -> NQEvalSet:
    """Windows with ``example_id`` and ``token_map`` for post-processing, plus candidates and gold per example."""
    rows: dict[str, list] = {}
    candidates, gold, raw_ids = {}, {}, {}
    for ex, enc, w, starts, keep in _windows(examples, tokenizer, max_length, doc_stride):
        if ex.example_id not in gold:
            candidates[ex.example_id], gold[ex.example_id] = ex.candidates, ex.annotations
            raw_ids[ex.example_id] = ex.raw_id if ex.raw_id is not None else ex.example_id
        offsets, seq_ids = enc["offset_mapping"][w], enc.sequence_ids(w)
        token_map = [keep[bisect.bisect_right(starts, o[0]) - 1] if s == 1 else -1 for o, s in zip(offsets, seq_ids)]
        row = _inputs(enc, w) | {"example_id": ex.example_id, "token_map": token_map}
        for k, v in row.items():
            rows.setdefault(k, []).append(v)
    if not gold:
        raise DataError("no NQ examples to evaluate on")
    return NQEvalSet(datasets.Dataset.from_dict(rows), candidates, gold, getattr(examples, "skipped", 0), raw_ids)
