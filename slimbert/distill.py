"""Distillation losses: temperature-scaled KL on start/end logits, optional hidden-state MSE."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
