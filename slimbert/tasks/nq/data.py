"""Natural Questions data: a streaming reader for the NQ JSON-lines formats, the hub, and a SQuAD converter.

    for ex in load_nq("nq-dev.jsonl.gz"):          # NQExample, one line at a time (plain or gzip)
        ex.question, ex.tokens, ex.candidates, ex.annotations
    squad_to_nq("squad2/dev.json", "dev-as-nq.jsonl.gz")   # real text in the NQ format

Each line is one example: ``question_text``, the document as ``document_text`` (simplified format,
tokens joined by single spaces) or ``document_tokens`` (original format, with ``html_token``),
``long_answer_candidates`` (``start_token``/``end_token``, end exclusive, ``top_level``) and
``annotations`` (``long_answer`` with ``candidate_index``, ``short_answers``, ``yes_no_answer``).
A bad line is a :class:`DataError` naming the file and line; with ``skip_bad=True`` it is skipped,
counted in ``source.skipped`` and logged. Nothing reads more than one line ahead, so a multi-GB
file never sits in memory; iterating the source again re-reads the file.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from slimbert.tasks.squad.data import DataError, _read_squad_file
from slimbert.tasks.nq.metric import NQAnswer

log = logging.getLogger(__name__)
HUB_DATASET = "google-research-datasets/natural_questions"
_HTML = re.compile(r"^<[^<>\s]*>$")  # simplified-format HTML tokens: <P>, </Table>, <Td_colspan=2> ...
_WORD = re.compile(r"\w+|[^\w\s]")  # BERT-style word/punctuation split for converted text


@dataclass
class Candidate:
    start: int
    end: int  # exclusive
    top_level: bool = True
    start_byte: int = -1  # byte offsets in the original format's HTML (-1: not given)
    end_byte: int = -1


@dataclass
class NQExample:
    example_id: str
    question: str
    tokens: list[str]
    is_html: list[bool]
    candidates: list[Candidate]
    annotations: list[NQAnswer]  # one per annotator; gold spans in document tokens
    raw_id: object = None  # example_id as the file has it (an integer in real NQ): prediction files repeat it


# ----------------------------------------------------------------------------- parsing one line
def _int(d: dict, key: str, where: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{where} needs an integer '{key}', got {v!r}")
    return v


def _span(d: dict, n: int, where: str) -> tuple[int, int] | None:
    start, end = _int(d, "start_token", where), _int(d, "end_token", where)
    if start < 0 and end < 0:
        return None
    if not 0 <= start < end <= n:
        raise ValueError(f"{where} token span [{start}, {end}) is out of range for a document of {n} tokens")
    return start, end


def parse_example(obj) -> NQExample:
    """One decoded JSON line -> NQExample; ValueError says what is missing or out of range."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("example_id", "question_text", "long_answer_candidates", "annotations") if k not in obj]
    if "document_text" not in obj and "document_tokens" not in obj:
        missing.append("document_text (or document_tokens)")
    if missing:
        raise ValueError(f"missing field(s) {missing}")
    if "document_tokens" in obj:
        toks = obj["document_tokens"]
        if not isinstance(toks, list) or not all(isinstance(t, dict) and isinstance(t.get("token"), str) for t in toks):
            raise ValueError("document_tokens must be a list of objects with a string 'token'")
        tokens = [t["token"] for t in toks]
        is_html = [bool(t.get("html_token", False)) for t in toks]
    else:
        if not isinstance(obj["document_text"], str):
            raise ValueError("document_text must be a string")
        # split(" "), not split(): the simplified format joins tokens with single spaces, and token
        # indices must stay those of the original document.
        tokens = obj["document_text"].split(" ")
        is_html = [bool(_HTML.match(t)) for t in tokens]
    n = len(tokens)
    if not isinstance(obj["question_text"], str) or not obj["question_text"].strip():
        raise ValueError("question_text must be a non-empty string")
    if not isinstance(obj["long_answer_candidates"], list) or not isinstance(obj["annotations"], list):
        raise ValueError("long_answer_candidates and annotations must be lists")

    candidates = []
    for i, c in enumerate(obj["long_answer_candidates"]):
        where = f"long_answer_candidates[{i}]"
        if not isinstance(c, dict):
            raise ValueError(f"{where} must be an object")
        span = _span(c, n, where)
        if span is None:
            raise ValueError(f"{where} has a null span")
        start_byte, end_byte = c.get("start_byte", -1), c.get("end_byte", -1)
        if not (isinstance(start_byte, int) and isinstance(end_byte, int)):
            raise ValueError(f"{where} byte offsets must be integers")
        candidates.append(Candidate(*span, top_level=bool(c.get("top_level", True)), start_byte=start_byte, end_byte=end_byte))

    annotations = []
    for i, a in enumerate(obj["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(a, dict) or not isinstance(a.get("long_answer"), dict) or not isinstance(a.get("short_answers"), list):
            raise ValueError(f"{where} needs a 'long_answer' object and a 'short_answers' list")
        la = a["long_answer"]
        long = _span(la, n, f"{where}.long_answer")
        idx = la.get("candidate_index", -1 if long is None else None)
        if long is not None:
            if not isinstance(idx, int) or not 0 <= idx < len(candidates):
                raise ValueError(f"{where}.long_answer.candidate_index {idx!r} is not one of the {len(candidates)} candidates")
            c = candidates[idx]
            if (c.start, c.end) != long:
                raise ValueError(f"{where}.long_answer {list(long)} differs from its candidate {idx} [{c.start}, {c.end})")
        short = []
        for j, s in enumerate(a["short_answers"]):
            if not isinstance(s, dict):
                raise ValueError(f"{where}.short_answers[{j}] must be an object")
            span = _span(s, n, f"{where}.short_answers[{j}]")
            if span is not None:
                short.append(span)
        yes_no = a.get("yes_no_answer", "NONE")
        if not isinstance(yes_no, str) or yes_no.upper() not in ("NONE", "YES", "NO"):
            raise ValueError(f"{where}.yes_no_answer must be YES, NO or NONE, got {yes_no!r}")
        annotations.append(NQAnswer(long=long, short=short, yes_no=yes_no))
    return NQExample(str(obj["example_id"]), obj["question_text"], tokens, is_html, candidates, annotations, obj["example_id"])


# ----------------------------------------------------------------------------- reading files
def _open_text(path: str):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"  # gzip by content, whatever the file is called
    return gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8")


class NQSource:
    """A re-iterable stream of NQExample from a JSON-lines file (or the hub), at most ``limit`` of them.

    ``skipped`` counts the bad lines of the last pass (only with ``skip_bad``); ``errors`` keeps the
    first few messages.
    """

    def __init__(self, path: str | None, limit: int = 0, skip_bad: bool = False, rows: Iterable | None = None):
        self.path, self.limit, self.skip_bad, self._rows = path, limit, skip_bad, rows
        self.skipped, self.errors = 0, []

    def __iter__(self) -> Iterator[NQExample]:
        self.skipped, self.errors = 0, []
        examples = self._hub() if self._rows is not None else self._file()
        return itertools.islice(examples, self.limit or None)

    def _bad(self, where: str, problem: str):
        msg = f"{where}: {problem}"
        if not self.skip_bad:
            raise DataError(f"{msg}. Fix or remove the line, or pass skip_bad=True (--skip-bad-lines) to skip and count bad lines.")
        self.skipped += 1
        if len(self.errors) < 5:
            self.errors.append(msg)
        log.warning("skipping %s", msg)

    def _file(self) -> Iterator[NQExample]:
        try:
            with _open_text(self.path) as f:
                lineno = 0
                while True:
                    try:
                        line = f.readline()
                    except (UnicodeDecodeError, EOFError, OSError) as e:  # undecodable or truncated
                        raise DataError(f"{self.path}: unreadable after line {lineno} ({e}); the file is corrupt or truncated.") from e
                    if not line:
                        break
                    lineno += 1
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        self._bad(f"{self.path}:{lineno}", f"not valid JSON ({e})")
                        continue
                    try:
                        ex = parse_example(obj)
                    except ValueError as e:
                        self._bad(f"{self.path}:{lineno}", str(e))
                        continue
                    yield ex
        finally:
            if self.skipped:
                log.warning("skipped %d bad line(s) of %s", self.skipped, self.path)

    def _hub(self) -> Iterator[NQExample]:
        for i, row in enumerate(self._rows):
            try:
                ex = parse_example(hub_row_to_simplified(row))
            except (ValueError, KeyError, TypeError) as e:
                self._bad(f"{HUB_DATASET} row {i}", f"{type(e).__name__}: {e}")
                continue
            yield ex


def _records(x) -> list[dict]:
    # The hub stores a sequence of structs as a dict of lists; accept either layout.
    if isinstance(x, dict):
        keys = list(x)
        return [dict(zip(keys, vals)) for vals in zip(*(x[k] for k in keys))]
    return list(x)


def hub_row_to_simplified(row: dict) -> dict:
    """A row of the hub's ``natural_questions`` -> one line of the original NQ JSON format."""
    toks = row["document"]["tokens"]
    yes_no = {-1: "NONE", 0: "NO", 1: "YES"}
    annotations = []
    for a in _records(row["annotations"]):
        shorts = a["short_answers"]
        shorts = _records(shorts) if isinstance(shorts, dict) else shorts
        yn = a["yes_no_answer"]
        annotations.append(
            {
                "long_answer": a["long_answer"],
                "short_answers": [{"start_token": s["start_token"], "end_token": s["end_token"]} for s in shorts],
                "yes_no_answer": yes_no.get(yn, yn) if isinstance(yn, int) else yn,
            }
        )
    return {
        "example_id": row["id"],
        "question_text": row["question"]["text"],
        "document_tokens": [{"token": t, "html_token": h} for t, h in zip(toks["token"], toks["is_html"])],
        "long_answer_candidates": _records(row["long_answer_candidates"]),
        "annotations": annotations,
    }


def load_nq(path: str | None = None, split: str = "validation", limit: int = 0, skip_bad: bool = False) -> NQSource:
    """NQ examples from a local JSON-lines file (plain or gzip), or streamed from the hub when ``path`` is None."""
    if path is None:
        import datasets

        try:
            rows = datasets.load_dataset(HUB_DATASET, split=split, streaming=True)
        except Exception as e:  # offline, hub down, no cache: all mean the same to the user
            raise DataError(
                f"could not load '{HUB_DATASET}' from the Hugging Face hub ({type(e).__name__}: {e}). "
                "Offline? Pass a local NQ JSON-lines file instead (--train/--eval/--data PATH.jsonl.gz)."
            ) from e
        return NQSource(None, limit, skip_bad, rows=rows)
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}. Pass an NQ JSON-lines file (.jsonl or .jsonl.gz).")
    return NQSource(path, limit, skip_bad)


def as_nq_source(data, split: str, limit: int = 0) -> Iterable[NQExample]:
    """A path, None (the hub), an NQSource or any iterable of NQExample, cut to ``limit`` examples."""
    if data is None or isinstance(data, (str, os.PathLike)):
        return load_nq(None if data is None else os.fspath(data), split=split, limit=limit)
    if isinstance(data, NQSource):
        if limit and (not data.limit or limit < data.limit):
            return NQSource(data.path, limit, data.skip_bad, rows=data._rows)
        return data
    return list(itertools.islice(data, limit or None))


# ----------------------------------------------------------------------------- SQuAD -> NQ
def _words(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _WORD.finditer(text)]


def squad_article_to_nq(article: dict, original: bool = False) -> Iterator[dict]:
    """One SQuAD article -> one NQ-format line per question.

    The document is the title in ``<H1>`` and each paragraph in ``<P>``…``</P>``; every paragraph is
    a top-level candidate. Each distinct SQuAD answer (its span widened to whole tokens) is one
    annotation, with its paragraph as long answer, so several distinct answers act like several
    annotators and a repeated answer counts once; an unanswerable question gets one null annotation.

    ``original=False``: the simplified format (``document_text``). ``original=True``: the original
    format that the official ``nq_eval.py`` reads: ``document_tokens`` (``token``, ``start_byte``,
    ``end_byte``, ``html_token``), ``document_html`` (the tokens joined by spaces, which the byte
    offsets index as UTF-8), ``question_tokens``, and byte offsets on candidates and answers.
    """
    title = (article.get("title") or "untitled").replace("_", " ")
    tokens = ["<H1>", *(title[a:b] for a, b in _words(title)), "</H1>"]
    paragraphs = []  # (candidate index, first token, word char spans)
    for para in article["paragraphs"]:
        spans = _words(para["context"])
        if not spans:
            continue
        start = len(tokens)
        tokens += ["<P>", *(para["context"][a:b] for a, b in spans), "</P>"]
        paragraphs.append((len(paragraphs), start, spans, para))
    html = " ".join(tokens)
    byte_starts, pos = [], 0
    for t in tokens:
        byte_starts.append(pos)
        pos += len(t.encode("utf-8")) + 1

    def span(start: int, end: int) -> dict:  # document-token span [start, end), with bytes in the original format
        if not original:
            return {"start_token": start, "end_token": end}
        if start < 0:
            return {"start_token": -1, "end_token": -1, "start_byte": -1, "end_byte": -1}
        end_byte = byte_starts[end - 1] + len(tokens[end - 1].encode("utf-8"))
        return {"start_token": start, "end_token": end, "start_byte": byte_starts[start], "end_byte": end_byte}

    candidates = [span(s, s + len(w) + 2) | {"top_level": True} for _, s, w, _ in paragraphs]
    document = {"document_text": html} if not original else {
        "document_title": title,
        "document_html": html,
        "document_tokens": [{"token": t, "start_byte": b, "end_byte": b + len(t.encode("utf-8")), "html_token": bool(_HTML.match(t))}
                            for t, b in zip(tokens, byte_starts)],
    }
    for ci, first, spans, para in paragraphs:
        cand = candidates[ci]
        long = span(cand["start_token"], cand["end_token"]) | {"candidate_index": ci}
        for qa in para["qas"]:
            answers = [] if qa.get("is_impossible") else (qa.get("answers") or [])
            shorts = {}  # token span -> its annotation: a repeated answer is one annotator, not two
            for a in answers:
                lo, hi = int(a["answer_start"]), int(a["answer_start"]) + len(a["text"])
                inside = [k for k, (s, e) in enumerate(spans) if s < hi and e > lo]
                if inside:  # an answer of only spaces has no token: it is no annotation
                    shorts.setdefault((first + 1 + inside[0], first + 2 + inside[-1]), None)
            annotations = [{"long_answer": long, "short_answers": [span(*k)], "yes_no_answer": "NONE"} for k in shorts]
            if not annotations:
                null = span(-1, -1) | {"candidate_index": -1}
                annotations.append({"long_answer": null, "short_answers": [], "yes_no_answer": "NONE"})
            for i, a in enumerate(annotations):
                a["annotation_id"] = i
            line = {"example_id": str(qa["id"]), "question_text": qa["question"], "document_url": ""}
            if original:
                line["question_tokens"] = [qa["question"][a:b] for a, b in _words(qa["question"])]
            yield line | document | {"long_answer_candidates": candidates, "annotations": annotations}


def squad_to_nq(src: str, dst: str, limit: int = 0, original: bool = False) -> dict:
    """Convert a SQuAD 2.0 JSON file to NQ JSON lines (gzip when ``dst`` ends in .gz); returns counts.

    ``original=True`` writes the original NQ format (document tokens with byte offsets) that the
    official ``nq_eval.py`` reads as gold; it wants the file gzipped, so name it ``.jsonl.gz``.
    """
    articles = _read_squad_file(src)
    counts = {"examples": 0, "answerable": 0, "unanswerable": 0, "articles": 0}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".tmp"
    opener = gzip.open if dst.endswith(".gz") else open
    try:
        with opener(tmp, "wt", encoding="utf-8") as out:
            for title, paragraphs in zip(articles["title"], articles["paragraphs"]):
                counts["articles"] += 1
                for line in squad_article_to_nq({"title": title, "paragraphs": paragraphs}, original):
                    if limit and counts["examples"] >= limit:
                        break
                    out.write(json.dumps(line) + "\n")
                    counts["examples"] += 1
                    counts["answerable" if line["annotations"][0]["short_answers"] else "unanswerable"] += 1
                if limit and counts["examples"] >= limit:
                    break
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)  # a killed conversion leaves no half file under the final name
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return counts | {"out": dst}
