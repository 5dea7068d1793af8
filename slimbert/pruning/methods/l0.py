"""L0: hard-concrete gates on heads and FFN units (and optionally whole blocks), learned with
distillation and a size term that lands on the target (train/loop.py), then snapped to it.

The gates start from the Fisher mask at the target (``gate_init="fisher"``, the default where it
applies: kept heads/units at P(open) ``gate_init_keep``, the rest at 1 - that), so the run refines a
good structure, or all at ``gate_init_keep`` (``"uniform"``). A family (several targets, family.py)
starts from the nested Fisher masks: an item's P(open) ranks it by the smallest target that keeps it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from slimbert.pruning.gates import add_gates, gate_parameters, get_gates, init_log_alpha, kept_shapes, snap_gates
from slimbert.pruning.latency_table import on_target
from slimbert.pruning.methods import Found
from slimbert.pruning.methods.posttrain import fisher_importance, search_mask
from slimbert.train.loop import Run, train


def fisher_start(cfg, task: str) -> bool:
    """Whether the gates start from the Fisher mask."""
    if cfg.gate_init == "auto":
        return cfg.prune_heads and cfg.prune_ffn and task == "squad"
    return cfg.gate_init == "fisher"


# P(open) at the start of a family's items that only its first target keeps. High enough that the
# first member trains with them nearly always on; log_alpha 1.7 below the items every target keeps
# (about 17 Adam steps at gate_lr 0.1), so the size pressure closes them before those later targets keep.
FAMILY_FLOOR = 0.9


def fisher_gate_init(
    student: nn.Module, teacher: nn.Module, features, tokenizer, target, keep: float,
    num_examples: int = 1024, batch_size: int = 16, seed: int = 0, budget: str = "params", table=None,
) -> list:
    """Start ``student``'s head and unit gates from the Fisher mask at ``target``: what
    :func:`search_mask` keeps at P(open) = ``keep``, the rest at ``1 - keep``; block gates untouched.
    ``budget``/``table``: what the target counts (parameters, or the latency table's milliseconds).

    ``target`` may be a falling sequence (a family): the masks at each target from one Fisher estimate
    (nested whenever the search's best head count falls with the target), and an item kept at k of
    the n targets starts at log_alpha between ``FAMILY_FLOOR`` (k = 1) and ``keep`` (k = n), so the
    walk down the targets drops items in the order the Fisher ranks them."""
    gates = get_gates(student)
    if not gates or any(g.heads is None or g.units is None for g in gates):
        raise ValueError("fisher_gate_init needs a gate on every head and FFN unit (prune_heads and prune_ffn)")
    targets = [target] if isinstance(target, (int, float)) else list(target)
    head_f, unit_f = fisher_importance(teacher, features, tokenizer, num_examples, batch_size, seed=seed)
    masks = [search_mask(head_f, unit_f, teacher, t, "latency" if table is not None else budget, table=table) for t in targets]
    seat_gates(student, masks, keep)
    return masks


@torch.no_grad()
def seat_gates(student: nn.Module, masks: list, keep: float) -> None:
    """Head and unit gates from ``masks`` (one per target, each (head masks, unit masks) per layer as
    search_mask gives them): one mask, kept items at P(open) ``keep`` and the rest at ``1 - keep``;
    several, an item kept by k of the n masks between ``FAMILY_FLOOR`` (k = 1) and ``keep`` (k = n)."""
    n, on, off = len(masks), init_log_alpha(keep), init_log_alpha(1.0 - keep)
    floor = init_log_alpha(FAMILY_FLOOR) if n > 1 else on
    for l, g in enumerate(get_gates(student)):
        for gate, kind in ((g.heads, 0), (g.units, 1)):
            level = sum(m[kind][l].to(torch.float32) for m in masks).to(gate.log_alpha.device)  # masks keeping it
            tiered = floor + (on - floor) * (level - 1) / max(n - 1, 1)
            gate.log_alpha.copy_(torch.where(level > 0, tiered, torch.full_like(tiered, off)))


def gated_student(model: nn.Module, run: Run, targets) -> tuple[nn.Module, list | None]:
    """A gated copy of ``model``, its gates started from the Fisher mask at ``targets`` (one, or a
    family's falling sequence) where that applies, and those masks (None where it does not)."""
    cfg, tcfg, device = run.cfg, run.tcfg, run.accelerator.device
    student = add_gates(copy.deepcopy(model).requires_grad_(True), cfg)
    if not fisher_start(cfg, tcfg.task):
        return student, None
    masks = fisher_gate_init(student.to(device), run.teacher.to(device), run.features, run.tokenizer, targets,
                             cfg.gate_init_keep, cfg.fisher_examples or 1024, tcfg.batch_size, tcfg.seed, table=run.cost)
    return student, masks


def gate_steps(run: Run) -> int:
    """Gate-training steps: ``max_steps``, or ``epochs`` over the training windows."""
    tcfg = run.tcfg
    steps_per_epoch = max(1, len(run.features) // (tcfg.batch_size * run.accelerator.num_processes))
    return tcfg.max_steps or max(1, round(tcfg.epochs * steps_per_epoch))


def snap(gated: nn.Module, target: float, table=None, teacher=None) -> list:
    """Hard gates at exactly ``target`` (snap_gates); with a latency ``table``, at the table's fraction
    whose measured latency against ``teacher`` is on the target (latency_table.on_target). Returns its tries."""
    if table is None:
        snap_gates(gated, target)
        return []
    start = [p.detach().clone() for p in gate_parameters(gated)]

    def plan(t: float):
        with torch.no_grad():
            for p, p0 in zip(gate_parameters(gated), start):
                p.copy_(p0)
        snap_gates(gated, t, table)
        return [p.detach().clone() for p in gate_parameters(gated)], kept_shapes(gated)

    best, tries = on_target(plan, target, teacher, table)
    with torch.no_grad():
        for p, b in zip(gate_parameters(gated), best):
            p.copy_(b)
    return tries


@torch.no_grad()
def close_dropped(gated: nn.Module, target: float, keep: float, table=None) -> None:
    """Close, at P(open) ``1 - keep``, the head and unit gates that a snap at ``target`` would drop;
    leave the rest as they are. A family's step to its next target: its gates then start that
    target's share on the structure a snap would give, as a single-target run starts on its Fisher mask,
    instead of lagging a falling schedule and overshooting it (bench/results/family-ft0-cpu)."""
    trial = copy.deepcopy(gated)
    snap_gates(trial, target, table)
    off = init_log_alpha(1.0 - keep)
    for g, t in zip(get_gates(gated), get_gates(trial)):
        for gate, snapped in ((g.heads, t.heads), (g.units, t.units)):
            if gate is not None:
                gate.log_alpha.copy_(torch.where(snapped.log_alpha < 0, gate.log_alpha.clamp(max=off), gate.log_alpha))


def find_structure(model: nn.Module, run: Run) -> Found:
    cfg = run.cfg
    student, history = train(gated_student(model, run, cfg.target)[0], run, gate_steps(run))
    tries = snap(student, cfg.target, run.cost, run.teacher) if cfg.snap else []  # the final safeguard: exactly the target
    return Found(student.eval(), history, latency_tries=tries)
