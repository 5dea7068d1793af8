"""The frozen teacher's logits, computed once per training window and reused by every step, epoch,
fine-tune and sweep point instead of a teacher forward per step.

They are kept on disk (``$SLIMBERT_CACHE/teacher-logits``, keyed by the teacher's weights, every
window's inputs and how they were computed), so a resumed run, the sweep's next point or another run
on the same teacher and data reads them back (for SQuAD 2.0 on 2 CPU cores that is 10 minutes saved).

Hidden states (``distill_hidden``) are not cached: (layers+1)·T·d floats per window is gigabytes for
one epoch of SQuAD, so with hidden-state distillation the teacher runs live.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from slimbert.io import atomic_torch_save, cache_dir
from slimbert.tasks.base import MODEL_INPUTS, batches
from slimbert.train.checkpoint import model_digest, state_digest

log = logging.getLogger(__name__)


@dataclass
class TeacherOutput:
    """The teacher's logits for a batch, read from the cache instead of a forward pass."""

    start_logits: torch.Tensor
    end_logits: torch.Tensor
    answer_type_logits: torch.Tensor | None = None


@torch.no_grad()
def teacher_logits(teacher, features, collate, batch_size: int, device, desc: str = "teacher logits") -> list[dict]:
    """The frozen teacher's logits for every training window, computed once.

    One dict per window: ``start``/``end`` (its own unpadded length, fp32) and ``answer_type`` when the
    teacher has that head. Windows go through in length order, so batches barely pad.
    """
    lengths = [len(ids) for ids in features["input_ids"]]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    cache: list[dict | None] = [None] * len(lengths)
    teacher.eval()
    n_batches = (len(order) + batch_size - 1) // batch_size
    for idx, batch in tqdm(batches(features, collate, batch_size, order, device), total=n_batches, desc=desc, unit="batch"):
        out = teacher(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
        types = getattr(out, "answer_type_logits", None)
        for r, j in enumerate(idx):
            n = lengths[j]
            cache[j] = {"start": out.start_logits[r, :n].float().cpu(), "end": out.end_logits[r, :n].float().cpu()}
            if types is not None:
                cache[j]["answer_type"] = types[r].float().cpu()
    return cache


def cached_teacher_logits(teacher, features, collate, batch_size: int, device, write: bool = True) -> list[dict]:
    """:func:`teacher_logits`, read from the disk cache when this teacher, these windows and this way of
    computing them (batch size: padding moves the last bits; device type, dtype, torch version) were seen
    before; computed and stored (atomically, when ``write``: one process of a distributed run) otherwise."""
    weights = state_digest({"model": teacher.state_dict()})  # every byte: equal sums are not equal weights
    h = hashlib.sha256(repr((model_digest(teacher), weights, str(teacher.dtype), torch.device(device).type,
                             batch_size, torch.__version__)).encode())
    for key in MODEL_INPUTS:
        if key in features.column_names:
            column = features[key]
            h.update(key.encode())
            h.update(np.array([len(x) for x in column], dtype=np.int64).tobytes())
            h.update(np.concatenate([np.asarray(x, dtype=np.int64) for x in column] or [np.zeros(0, np.int64)]).tobytes())
    path = os.path.join(cache_dir("teacher-logits"), f"{h.hexdigest()[:20]}.pt")
    if os.path.exists(path):
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            log.info("teacher logits read from %s", path)
            return _unpack(stored)
        except Exception as e:  # a damaged cache file only costs its recomputation
            log.warning("teacher-logit cache %s unreadable (%s): computing them again", path, type(e).__name__)
    cache = teacher_logits(teacher, features, collate, batch_size, device)
    if write:
        atomic_torch_save(_pack(cache), path)
    return cache


def _pack(cache: list[dict]) -> dict:
    """One tensor per field instead of a pickled list of tiny ones (fast to save and load)."""
    packed = {"lengths": torch.tensor([c["start"].numel() for c in cache], dtype=torch.long),
              "start": torch.cat([c["start"] for c in cache]), "end": torch.cat([c["end"] for c in cache])}
    if cache and "answer_type" in cache[0]:
        packed["answer_type"] = torch.stack([c["answer_type"] for c in cache])
    return packed


def _unpack(packed: dict) -> list[dict]:
    lengths = packed["lengths"].tolist()
    cache = [{"start": s, "end": e} for s, e in zip(packed["start"].split(lengths), packed["end"].split(lengths))]
    for c, t in zip(cache, packed.get("answer_type", [])):
        c["answer_type"] = t
    return cache


def add_teacher_logits(batch: dict, cache: list[dict], idx: list[int]) -> dict:
    """``batch`` plus ``teacher_start``/``teacher_end`` (B, T) padded with 0 (padding is masked in the KL)."""
    B, T = batch["input_ids"].shape
    for key in ("start", "end"):
        out = torch.zeros(B, T)
        for r, j in enumerate(idx):
            logits = cache[j][key]
            out[r, : logits.numel()] = logits
        batch[f"teacher_{key}"] = out
    if "answer_type" in cache[idx[0]]:
        batch["teacher_answer_type"] = torch.stack([cache[j]["answer_type"] for j in idx])
    return batch
