"""Distillation: temperature-scaled KL on start/end logits, optional hidden-state MSE, and the
teacher-logit cache (the frozen teacher runs once per training window, not once per step)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import MODEL_INPUTS


def logit_kl(student_start, student_end, teacher_start, teacher_end, temperature: float = 2.0, mask=None) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) · T², averaged over the start and end distributions.

    ``mask`` (B, T) excludes padding positions from both distributions.
    """

    def kl(s, t):
        if mask is not None:
            s = s.masked_fill(~mask, -1e4)
            t = t.masked_fill(~mask, -1e4)
        log_p_s = F.log_softmax(s / temperature, dim=-1)
        log_p_t = F.log_softmax(t / temperature, dim=-1)
        return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * temperature**2

    return (kl(student_start, teacher_start) + kl(student_end, teacher_end)) / 2


def hidden_mse(student_hidden, teacher_hidden, mask=None) -> torch.Tensor:
    """Mean MSE between matching hidden states (same layer count: pruning keeps every layer)."""
    losses = []
    for s, t in zip(student_hidden, teacher_hidden):
        err = (s - t).pow(2).mean(-1)  # (B, T)
        losses.append(err[mask].mean() if mask is not None else err.mean())
    return torch.stack(losses).mean()


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
    for i in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        idx = order[i : i + batch_size]
        batch = collate([features[j] for j in idx])
        out = teacher(**{k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS})
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
