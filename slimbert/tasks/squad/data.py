"""SQuAD 2.0 data: load (local JSON or the hub) and turn examples into sliding-window features.

    examples = load_squad("../shared/data/squad2/dev.json")       # datasets.Dataset, hub schema
    train_features = training_features(examples, tokenizer)        # input_ids, start/end_positions
    eval_features = eval_features(examples, tokenizer)             # + example_id, offset_mapping

Windows follow the standard BERT recipe: question first, the context truncated with a stride;
a window that does not contain the answer (or an unanswerable question) is labelled at CLS (0).
"""

from __future__ import annotations

import json
import os

import datasets
from transformers import PreTrainedTokenizerBase

HUB_DATASET = "squad_v2"


class DataError(ValueError):
    pass


def _flatten_articles(batch):
    """SQuAD JSON articles -> one row per question, in the hub's squad_v2 schema."""
    out = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for title, paragraphs in zip(batch["title"], batch["paragraphs"]):
        for para in paragraphs:
            for qa in para["qas"]:
                answers = [] if qa.get("is_impossible") else (qa.get("answers") or [])
                out["id"].append(str(qa["id"]))
                out["title"].append(title)
                out["context"].append(para["context"])
                out["question"].append(qa["question"])
                out["answers"].append(
                    {"text": [a["text"] for a in answers], "answer_start": [int(a["answer_start"]) for a in answers]}
                )
    return out


def _read_squad_file(path: str) -> dict:
    """Parse and validate an official-layout SQuAD JSON file; errors name the file and the problem."""
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}. Pass a SQuAD 2.0 JSON file (the official layout).")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}). Expected a SQuAD 2.0 file: {{'data': [articles]}}.") from e
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise DataError(f"{path} has no top-level 'data' list: not a SQuAD 2.0 file.")
    for i, article in enumerate(data):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise DataError(f"{path}: article {i} has no 'paragraphs' list: not a SQuAD 2.0 file.")
        for para in article["paragraphs"]:
            if "context" not in para or not isinstance(para.get("qas"), list):
                raise DataError(f"{path}: article {i} has a paragraph without 'context'/'qas'.")
            for qa in para["qas"]:
                missing = {"id", "question"} - set(qa)
                if missing:
                    raise DataError(f"{path}: question in article {i} lacks {sorted(missing)}.")
                for a in qa.get("answers") or []:
                    if "text" not in a or "answer_start" not in a:
                        raise DataError(f"{path}: question {qa['id']} has an answer without text/answer_start.")
    if not any(para["qas"] for article in data for para in article["paragraphs"]):
        raise DataError(f"{path} contains no questions.")
    return {"title": [a.get("title", "") for a in data], "paragraphs": [a["paragraphs"] for a in data]}


def load_squad(path: str | None = None, split: str = "validation", limit: int = 0) -> datasets.Dataset:
    """SQuAD 2.0 examples from a local official-format JSON file, or ``squad_v2`` from the hub."""
    if path is None:
        try:
            ds = datasets.load_dataset(HUB_DATASET, split=split)
        except Exception as e:  # offline, hub down, no cache: all mean the same to the user
            raise DataError(
                f"could not load '{HUB_DATASET}' from the Hugging Face hub ({type(e).__name__}: {e}). "
                "Offline? Pass a local SQuAD 2.0 JSON file instead (--train/--eval PATH)."
            ) from e
    else:
        ds = datasets.Dataset.from_dict(_flatten_articles(_read_squad_file(path)))
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    if len(ds) == 0:
        raise DataError(f"no questions in {path or HUB_DATASET}")
    return ds


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, model) -> None:
    """Refuse a tokenizer that cannot produce this model's inputs (and offsets for span answers)."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("slimbert needs a fast tokenizer (character offsets); load it with use_fast=True.")
    vocab = model.config.vocab_size
    if len(tokenizer) > vocab:
        raise DataError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {vocab}: they do not match. "
            "Use the tokenizer saved with the model (AutoTokenizer.from_pretrained(model_dir))."
        )
    for tok in ("cls_token_id", "sep_token_id", "pad_token_id"):
        if getattr(tokenizer, tok) is None:
            raise DataError(f"tokenizer has no {tok[:-3]}; it is not a BERT/RoBERTa QA tokenizer")


def check_max_length(model, max_length: int) -> None:
    """Refuse windows longer than the model's position embeddings (an IndexError deep in the embedding otherwise)."""
    from slimbert.models.arch import max_tokens

    limit = max_tokens(model.config)
    if max_length > limit:
        raise DataError(f"max_length {max_length} is longer than this model's {limit} positions; lower --max-length to at most {limit}")


def tokenize_windows(tokenizer, questions, contexts, max_length: int, doc_stride: int, **kwargs):
    """Question + context windows (context truncated with a stride), with offsets, unpadded by default."""
    if tokenizer.padding_side != "right":
        raise DataError("the tokenizer must pad on the right (question first, context second)")
    if not 0 <= doc_stride < max_length // 2:
        raise DataError(f"doc_stride ({doc_stride}) must be below max_length/2 ({max_length // 2}); lower --doc-stride")
    try:
        return tokenizer(
            [q.lstrip() for q in questions],
            contexts,
            truncation="only_second",
            max_length=max_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            **({"padding": False} | kwargs),
        )
    except Exception as e:  # the tokenizers library's errors name neither the question nor the fix
        if "truncat" in str(e).lower():  # "Truncation error: Sequence to truncate too short ..."
            raise DataError(
                f"a question is too long for windows of max_length={max_length} with doc_stride={doc_stride}: "
                "raise --max-length or lower --doc-stride"
            ) from e
        raise DataError(f"the tokenizer failed on a batch of questions ({type(e).__name__}: {e}); check that every "
                        "question and context is text and that the tokenizer is the model's own") from e


def context_offsets(enc, i: int) -> list:
    """Window ``i``'s (start, end) character offsets, None for tokens outside the context."""
    return [[int(o[0]), int(o[1])] if s == 1 else None for o, s in zip(enc["offset_mapping"][i], enc.sequence_ids(i))]


def training_features(examples, tokenizer, max_length: int = 384, doc_stride: int = 128) -> datasets.Dataset:
    """Windows with ``start_positions``/``end_positions`` (CLS when the answer is not inside)."""

    def prepare(batch):
        enc = tokenize_windows(tokenizer, batch["question"], batch["context"], max_length, doc_stride)
        starts, ends = [], []
        for i, offsets in enumerate(enc["offset_mapping"]):
            answers = batch["answers"][enc["overflow_to_sample_mapping"][i]]
            seq_ids = enc.sequence_ids(i)
            ctx = [j for j, s in enumerate(seq_ids) if s == 1]
            start = end = 0
            if answers["answer_start"] and ctx:
                a_start = answers["answer_start"][0]
                a_end = a_start + len(answers["text"][0])
                if offsets[ctx[0]][0] <= a_start and offsets[ctx[-1]][1] >= a_end:
                    start = next(j for j in ctx if offsets[j][1] > a_start)
                    end = next(j for j in reversed(ctx) if offsets[j][0] < a_end)
            starts.append(start)
            ends.append(end)
        enc["start_positions"], enc["end_positions"] = starts, ends
        enc.pop("offset_mapping")
        enc.pop("overflow_to_sample_mapping")
        return enc

    return examples.map(prepare, batched=True, remove_columns=examples.column_names, desc="training windows")


def eval_features(examples, tokenizer, max_length: int = 384, doc_stride: int = 128) -> datasets.Dataset:
    """Windows with ``example_id`` and ``offset_mapping`` (None outside the context) for post-processing."""

    def prepare(batch):
        enc = tokenize_windows(tokenizer, batch["question"], batch["context"], max_length, doc_stride)
        ids = []
        for i in range(len(enc["input_ids"])):
            ids.append(batch["id"][enc["overflow_to_sample_mapping"][i]])
            enc["offset_mapping"][i] = context_offsets(enc, i)
        enc["example_id"] = ids
        enc.pop("overflow_to_sample_mapping")
        return enc

    return examples.map(prepare, batched=True, remove_columns=examples.column_names, desc="eval windows")
