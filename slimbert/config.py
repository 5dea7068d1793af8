"""Configuration dataclasses: what to prune (PruneConfig) and how to train (TrainConfig).

The CLI maps its flags one-to-one onto these fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Literal


@dataclass
class PruneConfig:
    target: float = 0.5  # fraction of the encoder's prunable (head + FFN) parameters that remains
    prune_heads: bool = True  # a gate per attention head
    prune_ffn: bool = True  # a gate per FFN intermediate unit
    # a gate per whole attention / FFN sub-layer; off by default: on short runs the size term closes
    # whole blocks first (bench/results/sweep-cpu: plain l0 at 0.3 removed every head)
    prune_blocks: bool = False
    gate_init_keep: float = 0.98  # P(gate open) at the start, exactly (gates.init_log_alpha)
    # "fisher": start the L0 gates from Kwon et al.'s mask at the target (kept at P(open) gate_init_keep,
    # the rest at 1 - gate_init_keep), so a run refines a good structure instead of finding one;
    # "uniform": every gate at gate_init_keep; "auto": fisher where it applies (heads and FFN both
    # pruned, SQuAD), else uniform
    gate_init: Literal["auto", "uniform", "fisher"] = "auto"
    penalty: Literal["lagrangian", "fixed"] = "lagrangian"  # CoFi-style target control, or the paper's
    lambda_att: float = 0.0  # fixed penalty per expected open head (penalty="fixed")
    lambda_ff: float = 0.0  # fixed penalty per expected open FFN unit (penalty="fixed")
    # end with hard 0/1 gates at exactly the target (ranked by P(open)); None: yes for the Lagrangian,
    # no for fixed penalties (they land where their penalties put them: eval-mode gates, zeros removed)
    snap: bool | None = None
    target_warmup: float = 0.3  # fraction of steps over which the target falls linearly from 1
    distill_alpha: float = 0.9  # weight of distillation vs. the task loss
    distill_temperature: float = 2.0
    distill_hidden: float = 0.0  # weight of hidden-state MSE distillation (0 = off)
    # learned L0 gates, Kwon et al.'s no-training path (posttrain.py), or a baseline mask (baselines.py)
    method: Literal["l0", "posttrain", "random", "uniform"] = "l0"
    budget: Literal["params", "flops"] = "params"  # posttrain: target is a fraction of prunable params or encoder FLOPs

    def __post_init__(self):
        if not (0.0 < self.target <= 1.0):
            raise ValueError(f"target must be in (0, 1] (fraction of prunable parameters kept), got {self.target}")
        if not (self.prune_heads or self.prune_ffn or self.prune_blocks):
            raise ValueError("nothing to prune: enable at least one of prune_heads, prune_ffn, prune_blocks")
        if not (0.0 <= self.distill_alpha <= 1.0):
            raise ValueError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if self.penalty not in ("lagrangian", "fixed"):
            raise ValueError(f"penalty must be 'lagrangian' or 'fixed', got {self.penalty!r}")
        if self.method not in ("l0", "posttrain", "random", "uniform"):
            raise ValueError(f"method must be one of l0, posttrain, random, uniform; got {self.method!r}")
        if self.gate_init not in ("auto", "uniform", "fisher"):
            raise ValueError(f"gate_init must be 'auto', 'uniform' or 'fisher', got {self.gate_init!r}")
        if not (0.0 < self.gate_init_keep < 1.0):
            raise ValueError(f"gate_init_keep must be in (0, 1) (initial P(gate open)), got {self.gate_init_keep}")
        if self.snap is None:
            self.snap = self.penalty == "lagrangian"
        if self.gate_init == "fisher" and not (self.prune_heads and self.prune_ffn):
            raise ValueError("gate_init='fisher' starts from a mask over heads and FFN units: keep prune_heads and prune_ffn on")
        if self.budget not in ("params", "flops"):
            raise ValueError(f"budget must be 'params' or 'flops', got {self.budget!r}")


@dataclass
class TrainConfig:
    max_steps: int = 0  # 0: run --epochs over the data
    epochs: float = 1.0
    batch_size: int = 16
    lr: float = 5e-5  # model weights (AdamW)
    gate_lr: float = 0.1  # log_alpha (Adam)
    lambda_lr: float = 0.5  # Lagrange multipliers (gradient ascent; λ in units of the step-0 balance)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    max_length: int = 384
    doc_stride: int = 128
    seed: int = 0
    eval_every: int = 0  # steps between evaluations (0: only at the end)
    save_every: int = 0  # steps between checkpoints (0: only at the end)
    finetune_steps: int = 0  # distillation fine-tune of the collapsed model afterwards
    max_train_examples: int = 0  # 0: all
    max_eval_examples: int = 0  # 0: all
    cpu: bool = False  # force CPU even when a GPU is present
    cache_teacher: bool = True  # teacher logits computed once per training window, reused by every step
    length_buckets: bool = True  # batch windows of similar length together (less padding)
    log_every: int = 10  # steps between progress-bar/history updates (the only host syncs of a step)
    extra_train: str | None = None  # more distillation data (e.g. SQuAD 1.x JSON), mixed into train_data
    max_extra_examples: int = 0  # 0: all of extra_train
    task: Literal["squad", "nq"] = "squad"  # SQuAD 2.0 JSON, or Natural Questions JSON lines (slimbert/nq.py)
    null_window_rate: float = 1.0  # nq: share of answerless training windows kept (BERT-for-NQ: 0.02)


def from_dict(cls, d: dict):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


__all__ = ["PruneConfig", "TrainConfig", "asdict", "from_dict"]
