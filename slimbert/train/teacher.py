"""The frozen teacher's logits, computed once per training window and reused by every step, epoch,
fine-tune and sweep point instead of a teacher forward per step.

Hidden states (``distill_hidden``) are not cached: (layers+1)·T·d floats per window is gigabytes for
one epoch of SQuAD, so with hidden-state distillation the teacher runs live.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from slimbert.tasks.base import MODEL_INPUTS, batches


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
