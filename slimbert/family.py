"""A family of pruned models from one gate-training run.

    slimbert prune --model M --train T.json --eval D.json --targets 0.8,0.6,0.5 --out DIR
    result = slimbert.prune(teacher, slimbert.PruneConfig(targets=(0.8, 0.6, 0.5)), ...)

One L0 run whose size schedule walks down through the targets (``scheduled_target`` in
train/loop.py): each target gets an equal share of the gate steps, and the scheduled size holds it
for the share, the settle period in which the gates and λ come to rest at that size. At the share's
last step, its milestone, the gate state is, on a copy,

    snapped at exactly the target -> collapsed -> fine-tuned (finetune_steps) -> evaluated -> timed -> saved

as ``DIR/target-T/`` (the compact model, its tokenizer, prune_result.json and model card, in one
atomic save; it loads with the Auto classes), and the gated run continues from its unsnapped state,
moved to the next target: its gates are seated on that target's Fisher mask (computed at the start;
l0.seat_gates), so each share starts on the structure a single-target run starts on, with the weights
the run has trained so far (``family_fall="fisher"``; "auto", the default, where the gates start from
the Fisher mask). Without the Fisher start (``family_fall="step"``) the gates a snap at the next
target drops are closed instead (l0.close_dropped): in the 133 steps of a share Adam washes out the
Fisher ranking, and the snap keeps more heads and cuts FFNs more evenly than the Fisher mask, which
cost the 0.5 and 0.3 members 1.8 and 2.3 HasAns F1 against separate runs where the Fisher seat is
within 0.6 (bench/results/family-step-cpu, family-fisher-cpu). The first share falls from the start
to the first target either way (train/loop.py scheduled_target).
``DIR/family.csv`` and ``DIR/family.png`` hold the curve in the sweep's columns (curve.py), teacher
first; ``DIR/prune_result.json`` the family's summary.

A member is made on its own copy of the RNG state, so the run goes on exactly as if it had not been
made, and a checkpoint is written right after it: a resumed run starts past the members it already
saved, reads them back from DIR, and trains the same gates as an uninterrupted one. A member's
fine-tune keeps no checkpoint of its own: killed during it, the run resumes from the previous
checkpoint and makes the member again.
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, replace

from slimbert.card import model_card
from slimbert.config import ConfigError
from slimbert.curve import plot, scores_row, write_csv
from slimbert.io import atomic_save_pretrained, atomic_write_json
from slimbert.pruning.collapse import collapse
from slimbert.pruning.cost import count_parameters, model_report
from slimbert.pruning.gates import deterministic_size
from slimbert.pruning.latency_table import speedups
from slimbert.pruning.methods.l0 import close_dropped, fisher_start, gate_steps, gated_student, seat_gates, snap
from slimbert.train.checkpoint import CheckpointError
from slimbert.train.loop import Run, _rng_state, _set_rng_state, milestones, train

log = logging.getLogger(__name__)
METHOD = "l0-family"  # the method column of the members' rows, and the sweep's name for a family run


def member_dir(out_dir: str, target: float) -> str:
    return os.path.join(out_dir, f"target-{target:g}")


def snap_member(gated, target: float, table=None, teacher=None):
    """A copy of ``gated`` snapped at exactly ``target`` (l0.snap) and collapsed: (compact model, kept
    fraction of prunable parameters, latency tries). ``gated`` itself is left as it is."""
    snapped = copy.deepcopy(gated).eval()
    tries = snap(snapped, target, table, teacher)
    return collapse(snapped), deterministic_size(snapped), tries


def prune_family(teacher, student, run: Run, eval_fn, train_data=None, eval_data=None):
    """The family of ``run.cfg.targets`` from one gate-training run of ``student`` (the dense QA model
    as the task wants it); returns the last (smallest) member's PruneResult with every member in
    ``members`` and the curve in ``family``."""
    from slimbert.api import RESULT, PruneResult  # api.prune calls this function

    cfg, tcfg, accelerator, out = run.cfg, run.tcfg, run.accelerator, run.out_dir
    total = gate_steps(run)
    if cfg.family_fall == "fisher" and not fisher_start(cfg, tcfg.task):  # "auto" falls back to the step
        raise ConfigError("--family-fall fisher starts each target on its Fisher mask: it needs the Fisher start "
                          "(--gate-init fisher or auto, with heads and FFN pruned, on SQuAD)")
    if total < len(cfg.targets):
        raise ConfigError(f"{len(cfg.targets)} targets need at least as many gate steps, got {total}; raise --max-steps")
    if out and not run.resume and accelerator.is_main_process:  # a fresh run: no member of an earlier one stays
        for path in glob.glob(os.path.join(out, "target-*")) + glob.glob(os.path.join(out, "family.*")):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    t0 = time.perf_counter()
    eval_before = eval_fn(teacher)
    report = model_report(teacher, cfg.latency_seq)
    teacher_row = dict(method="teacher", target=1.0, params=report["params_after"], flops=report["encoder_flops_after"],
                       speedup=1.0) | scores_row(eval_before) | {"seconds": 0.0}
    members = {}

    def make_member(target: float, gated) -> PruneResult:
        compact, size, tries = snap_member(gated, target, run.cost, teacher)
        history = []
        if tcfg.finetune_steps:  # on the copy, without checkpoints (see the module docstring)
            compact, history = train(compact, replace(run, out_dir=None, resume=False), tcfg.finetune_steps)
        compact.eval()
        member = PruneResult(model=compact, size=size, params_before=count_parameters(teacher),
                             params_after=count_parameters(compact), eval_before=eval_before, eval_after=eval_fn(compact),
                             history=history, latency=speedups(teacher, compact, cfg.latency_batch, cfg.latency_seq, run.cost, tries))
        report = model_report(compact, cfg.latency_seq)
        row = dict(method=METHOD, target=target, params=report["params_after"], flops=report["encoder_flops_after"],
                   speedup=member.latency["measured_speedup"]) | scores_row(member.eval_after)
        member.family = [row | {"seconds": round(time.perf_counter() - t0, 2)}]
        log.info("family member at %g: %.4f of prunable parameters kept, %s", target, size, json.dumps(scores_row(member.eval_after)))
        if out and accelerator.is_main_process:
            summary = member.summary() | {"prune_config": asdict(replace(cfg, targets=None, target=target)),
                                          "train_config": asdict(tcfg), "family_run": os.path.abspath(out)}
            card = model_card(teacher, compact, summary, train_data, eval_data)
            atomic_save_pretrained(compact, member_dir(out, target), run.tokenizer, extra_files={RESULT: summary, "README.md": card})
        return member

    ends = dict(zip(milestones(total, cfg.targets), cfg.targets))
    gated, masks = gated_student(student, run, cfg.targets)

    def on_step(step: int, gated) -> bool:
        if step not in ends:
            return False
        rng = _rng_state()  # the member's fine-tune must not move the run's random stream
        try:
            members[ends[step]] = make_member(ends[step], gated)
        finally:
            _set_rng_state(rng)
        i = cfg.targets.index(ends[step])
        if i + 1 < len(cfg.targets) and masks is not None and cfg.family_fall != "step":
            seat_gates(gated, [masks[i + 1]], cfg.gate_init_keep)
        elif i + 1 < len(cfg.targets):
            close_dropped(gated, cfg.targets[i + 1], cfg.gate_init_keep, run.cost)
        return True  # a checkpoint now: this member is done, and the gates stand at the next target

    gated, history = train(gated, run, total, on_step)
    del gated
    for target in cfg.targets:  # members made before a resume are read back
        if target not in members:
            members[target] = load_member(out, target)
    rows = [teacher_row] + [members[t].family[0] for t in cfg.targets]
    last = members[cfg.targets[-1]]
    result = replace(last, eval_before=eval_before, history=history, family=rows, members=members)
    if out and accelerator.is_main_process:
        write_csv(rows, os.path.join(out, "family.csv"))
        name = os.path.basename(os.path.normpath(getattr(teacher, "name_or_path", "") or "teacher"))
        plot(rows, os.path.join(out, "family.png"),
             title=f"{name}: one run, targets {','.join(f'{t:g}' for t in cfg.targets)}; speed-up at batch "
                   f"{cfg.latency_batch}, {cfg.latency_seq} tokens, {accelerator.device}")
        atomic_write_json({"family": rows, "members": {f"{t:g}": member_dir(out, t) for t in cfg.targets},
                           "eval_before": eval_before, "history": history, "prune_config": asdict(cfg),
                           "train_config": asdict(tcfg)}, os.path.join(out, RESULT))
    accelerator.wait_for_everyone()
    log.info("family of %d took %.0f s", len(cfg.targets), time.perf_counter() - t0)
    return result


def load_member(out: str | None, target: float):
    """A member saved by an earlier (killed) part of this run, as its PruneResult."""
    from slimbert.api import RESULT, PruneResult
    from slimbert.models.compact import SlimBertForQuestionAnswering

    path = member_dir(out, target) if out else None
    if not path or not os.path.exists(os.path.join(path, RESULT)):
        raise CheckpointError(f"the checkpoint is past the member at target {target:g}, but {path} holds no finished member; "
                              "pass --overwrite to start the family over")
    with open(os.path.join(path, RESULT)) as f:
        s = json.load(f)
    keep = ("size", "params_before", "params_after", "eval_before", "eval_after", "history", "latency", "family")
    return PruneResult(model=SlimBertForQuestionAnswering.from_pretrained(path), **{k: s[k] for k in keep})
