"""The losses: QA cross-entropy on gold spans, temperature-scaled KL to the teacher, hidden-state MSE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slimbert.models.arch import PAD_LOGIT


def qa_loss(start_logits, end_logits, start_positions, end_positions, mask=None, reduction: str = "mean") -> torch.Tensor:
    """(CE(start) + CE(end)) / 2 on the gold positions; positions outside the window are ignored (as in
    transformers). ``mask`` (B, T) takes padding out of the softmax, so a window's loss does not
    depend on what it was batched with; ``reduction="sum"`` sums over windows."""
    ignored = start_logits.size(1)
    if mask is not None:
        start_logits = start_logits.float().masked_fill(~mask, PAD_LOGIT)  # (B, T)
        end_logits = end_logits.float().masked_fill(~mask, PAD_LOGIT)
    start = F.cross_entropy(start_logits, start_positions.clamp(0, ignored), ignore_index=ignored, reduction=reduction)
    end = F.cross_entropy(end_logits, end_positions.clamp(0, ignored), ignore_index=ignored, reduction=reduction)
    return (start + end) / 2


def kl(student, teacher, temperature: float = 2.0, mask=None) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) · T² over the last dim, batch mean; ``mask`` drops padding."""
    if mask is not None:
        student = student.masked_fill(~mask, PAD_LOGIT)
        teacher = teacher.masked_fill(~mask, PAD_LOGIT)
    log_p_s = F.log_softmax(student / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * temperature**2


def logit_kl(student_start, student_end, teacher_start, teacher_end, temperature: float = 2.0, mask=None) -> torch.Tensor:
    """The KL of the start and of the end distributions, averaged."""
    return (kl(student_start, teacher_start, temperature, mask) + kl(student_end, teacher_end, temperature, mask)) / 2


def hidden_mse(student_hidden, teacher_hidden, mask=None) -> torch.Tensor:
    """Mean MSE between matching hidden states (same layer count: pruning keeps every layer)."""
    losses = []
    for s, t in zip(student_hidden, teacher_hidden):
        err = (s - t).pow(2).mean(-1)  # (B, T)
        losses.append(err[mask].mean() if mask is not None else err.mean())
    return torch.stack(losses).mean()
