"""L0: hard-concrete gates on heads and FFN units (and optionally whole blocks), learned with
distillation and a size term that lands on the target (train/loop.py), then snapped to it.

The gates start from the Fisher mask at the target (``gate_init="fisher"``, the default where it
applies: kept heads/units at P(open) ``gate_init_keep``, the rest at 1 - that), so the run refines a
good structure, or all at ``gate_init_keep`` (``"uniform"``).
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


def fisher_gate_init(
    student: nn.Module, teacher: nn.Module, features, tokenizer, target: float, keep: float,
    num_examples: int = 1024, batch_size: int = 16, seed: int = 0, budget: str = "params", table=None,
) -> None:
    """Start ``student``'s head and unit gates from the Fisher mask at ``target``: what
    :func:`search_mask` keeps at P(open) = ``keep``, the rest at ``1 - keep``; block gates untouched.
    ``budget``/``table``: what the target counts (parameters, or the latency table's milliseconds)."""
    gates = get_gates(student)
    if not gates or any(g.heads is None or g.units is None for g in gates):
        raise ValueError("fisher_gate_init needs a gate on every head and FFN unit (prune_heads and prune_ffn)")
    head_f, unit_f = fisher_importance(teacher, features, tokenizer, num_examples, batch_size, seed=seed)
    head_mask, unit_mask = search_mask(head_f, unit_f, teacher, target, "latency" if table is not None else budget, table=table)
    on, off = init_log_alpha(keep), init_log_alpha(1.0 - keep)
    with torch.no_grad():
        for g, heads, units in zip(gates, head_mask, unit_mask):
            g.heads.log_alpha.copy_(torch.where(heads.to(g.heads.log_alpha.device), on, off))
            g.units.log_alpha.copy_(torch.where(units.to(g.units.log_alpha.device), on, off))


def gated_student(model: nn.Module, run: Run, start_target: float) -> nn.Module:
    """A gated copy of ``model``, its gates started from the Fisher mask at ``start_target`` where that applies."""
    cfg, tcfg, device = run.cfg, run.tcfg, run.accelerator.device
    student = add_gates(copy.deepcopy(model).requires_grad_(True), cfg)
    if fisher_start(cfg, tcfg.task):
        fisher_gate_init(student.to(device), run.teacher.to(device), run.features, run.tokenizer, start_target,
                         cfg.gate_init_keep, cfg.fisher_examples or 1024, tcfg.batch_size, tcfg.seed, table=run.cost)
    return student


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


def find_structure(model: nn.Module, run: Run) -> Found:
    cfg = run.cfg
    student, history = train(gated_student(model, run, cfg.target), run, gate_steps(run))
    tries = snap(student, cfg.target, run.cost, run.teacher) if cfg.snap else []  # the final safeguard: exactly the target
    return Found(student.eval(), history, latency_tries=tries)
