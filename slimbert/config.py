"""Configuration dataclasses: what to prune (PruneConfig) and how to train (TrainConfig).

The CLI maps its flags one-to-one onto these fields.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Literal


class ConfigError(ValueError):
    """A setting that cannot run as given (the message says which and what is allowed)."""


def opt(default, help: str):
    """A config field with its help text: the CLI shows it (with the default) under ``--help``."""
    return field(default=default, metadata={"help": help})


@dataclass
class PruneConfig:
    target: float = opt(0.5, "fraction of the encoder's prunable (head + FFN) parameters that remains, in (0, 1]")
    prune_heads: bool = opt(True, "gate (and so prune) attention heads")
    prune_ffn: bool = opt(True, "gate (and so prune) FFN intermediate units")
    # off by default: on short runs the size term closes whole blocks first (bench/results/sweep-cpu:
    # plain l0 at 0.3 removed every head)
    prune_blocks: bool = opt(False, "also gate whole attention / FFN sub-layers")
    gate_init_keep: float = opt(0.98, "P(gate open) at the start, exactly; the Fisher start's other gates get 1 minus it")
    gate_init: Literal["auto", "uniform", "fisher"] = opt(
        "auto", "fisher: start the L0 gates from Kwon et al.'s Fisher mask at the target; uniform: every gate at "
        "gate_init_keep; auto: fisher where it applies (heads and FFN pruned, SQuAD), else uniform")
    penalty: Literal["lagrangian", "fixed"] = opt(
        "lagrangian", "lagrangian: λ1(s-t)+λ2(s-t)² lands on --target; fixed: the paper's λ_att, λ_ff per open head/unit")
    lambda_att: float = opt(0.0, "penalty per expected open head (--penalty fixed)")
    lambda_ff: float = opt(0.0, "penalty per expected open FFN unit (--penalty fixed)")
    snap: bool | None = opt(
        None, "end with hard 0/1 gates at exactly the target, ranked by P(open); default: on for the Lagrangian, off "
        "for fixed penalties (they land where their penalties put the gates)")
    target_warmup: float = opt(
        0.3, "fraction of the gate steps (of a family: of its first share) over which the target falls linearly to it")
    fisher_examples: int = opt(
        0, "training windows the Fisher importance is estimated on (posttrain and the L0 warm start; 0: 2048 for "
        "posttrain as Kwon et al., 1024 for the warm start)")
    distill_alpha: float = opt(0.9, "weight of distillation against the task loss, in [0, 1]")
    distill_temperature: float = opt(2.0, "softmax temperature of the distillation KL")
    distill_hidden: float = opt(0.0, "weight of hidden-state MSE distillation (0: off; on, the teacher runs every step)")
    method: Literal["l0", "posttrain", "random", "uniform"] = opt(
        "l0", "l0: learned gates; posttrain: Kwon et al.'s retraining-free mask; random / uniform: baselines")
    budget: Literal["params", "flops", "latency"] = opt(
        "params", "what --target counts: prunable parameters; encoder FLOPs (posttrain); or the latency measured "
        "on this device (l0 and posttrain; pruning/latency_table.py)")
    latency_batch: int = opt(1, "batch size of the latency table (--budget latency) and of the measured speed-ups")
    latency_seq: int = opt(384, "sequence length of the latency table (--budget latency) and of the measured speed-ups")
    # A family from one run (family.py): the size schedule walks down through these, each member
    # snapped, collapsed, fine-tuned and saved as it is reached; target becomes the last of them.
    targets: tuple[float, ...] | None = opt(
        None, "a family from one l0 run: descending kept fractions, e.g. 0.8,0.6,0.5, each saved as OUT/target-T "
        "(replaces --target)")
    family_fall: Literal["auto", "fisher", "step"] = opt(
        "auto", "how a family moves to its next target at each member, then holds it for its share: fisher: seat the "
        "gates on the next target's Fisher mask, the structure a single-target run starts on; step: close what a snap "
        "at the next target drops; auto: fisher where the gates start from the Fisher mask (--gate-init), else step")

    def __post_init__(self):
        if not (0.0 < self.target <= 1.0):
            raise ConfigError(f"target must be in (0, 1] (fraction of prunable parameters kept), got {self.target}")
        if not (self.prune_heads or self.prune_ffn or self.prune_blocks):
            raise ConfigError("nothing to prune: enable at least one of prune_heads, prune_ffn, prune_blocks")
        if not (0.0 <= self.distill_alpha <= 1.0):
            raise ConfigError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        _choice("penalty", self.penalty, ("lagrangian", "fixed"))
        _choice("method", self.method, ("l0", "posttrain", "random", "uniform"))
        _choice("gate_init", self.gate_init, ("auto", "uniform", "fisher"))
        _choice("budget", self.budget, ("params", "flops", "latency"))
        _choice("family_fall", self.family_fall, ("auto", "fisher", "step"))
        if self.fisher_examples < 0:
            raise ConfigError(f"fisher_examples must be >= 0 (0: the method's default), got {self.fisher_examples}")
        if self.latency_batch < 1 or self.latency_seq < 1:
            raise ConfigError(f"latency_batch and latency_seq must be at least 1, got {self.latency_batch}, {self.latency_seq}")
        if self.targets is not None:
            self.targets = parse_targets(self.targets)
            if self.method != "l0" or self.penalty != "lagrangian":
                raise ConfigError("targets (a family from one run) needs method='l0' with penalty='lagrangian'; "
                                  "run other methods once per target (slimbert sweep)")
            self.target = self.targets[-1]  # where the run ends
        if not (0.0 < self.gate_init_keep < 1.0):
            raise ConfigError(f"gate_init_keep must be in (0, 1) (initial P(gate open)), got {self.gate_init_keep}")
        if self.gate_init == "fisher" and not (self.prune_heads and self.prune_ffn):
            raise ConfigError("gate_init='fisher' starts from a mask over heads and FFN units: keep prune_heads and prune_ffn on")
        if not (0.0 <= self.target_warmup <= 1.0):
            raise ConfigError(f"target_warmup must be in [0, 1] (a fraction of the gate steps), got {self.target_warmup}")
        if self.distill_temperature <= 0 or self.distill_hidden < 0 or self.lambda_att < 0 or self.lambda_ff < 0:
            raise ConfigError("distill_temperature must be > 0 and distill_hidden, lambda_att, lambda_ff >= 0")
        if self.snap is None:
            self.snap = self.penalty == "lagrangian"


@dataclass
class TrainConfig:
    max_steps: int = opt(400, "gate-training steps (0: run --epochs over the training windows)")
    epochs: float = opt(1.0, "passes over the training windows when --max-steps is 0")
    batch_size: int = opt(16, "windows per step (per process)")
    lr: float = opt(1e-4, "learning rate of the model weights (AdamW, linear decay after warm-up)")
    gate_lr: float = opt(0.1, "learning rate of the gates' log_alpha (Adam)")
    lambda_lr: float = opt(0.5, "step of the Lagrange multipliers' gradient ascent (λ in units of the step-0 balance)")
    weight_decay: float = opt(0.0, "AdamW weight decay of the model weights")
    warmup_ratio: float = opt(0.05, "fraction of steps of linear learning-rate warm-up")
    max_length: int = opt(384, "tokens per window (question + context), at most the model's positions")
    doc_stride: int = opt(128, "overlap of consecutive windows of one context, below max_length / 2")
    seed: int = opt(0, "seed of the data order, gate noise and dropout")
    dropout: float | None = opt(None, "the student's dropout (hidden and attention) while it trains (None: the model's own)")
    eval_every: int = opt(0, "steps between evaluations on --eval (0: only before and after)")
    save_every: int = opt(0, "steps between checkpoints for --resume (0: only at the end of each phase)")
    finetune_steps: int = opt(1200, "distillation fine-tune steps of the compact model after collapse (0: none)")
    max_train_examples: int = opt(0, "use only the first N training questions (0: all)")
    max_eval_examples: int = opt(0, "score only the first N eval questions (0: all)")
    cpu: bool = opt(False, "run on the CPU even when a GPU is present")
    cache_teacher: bool = opt(True, "compute the teacher's logits once per training window instead of every step")
    length_buckets: bool = opt(True, "batch windows of similar length together (less padding)")
    log_every: int = opt(10, "steps between progress and history updates (the only host syncs of a step)")
    extra_train: str | None = opt(None, "more distillation data mixed into --train (SQuAD JSON, e.g. SQuAD 1.x)")
    max_extra_examples: int = opt(0, "use only the first N questions of --extra-train (0: all)")
    task: Literal["squad", "nq"] = opt("squad", "squad: SQuAD 2.0 JSON; nq: Natural Questions JSON lines")
    null_window_rate: float = opt(1.0, "nq: share of answerless training windows kept (BERT-for-NQ: 0.02)")

    def __post_init__(self):
        for name in ("batch_size", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every", "save_every", "finetune_steps", "max_train_examples", "max_eval_examples",
                     "max_extra_examples", "doc_stride", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "gate_lr", "lambda_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.max_steps and not self.epochs > 0:
            raise ConfigError(f"epochs must be > 0 when max_steps is 0, got {self.epochs}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (0.0 <= self.warmup_ratio < 1.0) or not (0.0 < self.null_window_rate <= 1.0):
            raise ConfigError("warmup_ratio must be in [0, 1) and null_window_rate in (0, 1]")
        _choice("task", self.task, ("squad", "nq"))


def parse_targets(targets) -> tuple[float, ...]:
    """A family's targets, from a sequence or a comma string like "0.8,0.6,0.5": strictly descending, each in (0, 1]."""
    parts = targets.split(",") if isinstance(targets, str) else list(targets)
    try:
        values = tuple(float(t) for t in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"targets must be numbers separated by commas, e.g. 0.8,0.6,0.5; got {targets!r}") from None
    if not values or any(not 0.0 < t <= 1.0 for t in values):
        raise ConfigError(f"targets must each be in (0, 1] (fractions kept), got {','.join(map(str, values)) or 'none'}")
    if any(a <= b for a, b in zip(values, values[1:])):
        raise ConfigError(f"targets must be strictly descending (the run walks down through them), e.g. 0.8,0.6,0.5; "
                          f"got {','.join(map(str, values))}")
    return values


def _choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def from_dict(cls, d: dict):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


__all__ = ["ConfigError", "PruneConfig", "TrainConfig", "asdict", "from_dict"]
