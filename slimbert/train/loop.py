"""The one training loop: student, frozen teacher, task + distillation (+ L0 toward a target size).

    batch -> student (sampled gates) -> teacher logits (cached) -> (1-α)·task + α·KD + penalty(size)
          -> step -> λ ascent -> repeat

It trains the gated student of the L0 method (pruning/methods/l0.py) and fine-tunes the compact
model after collapse (api.py); without gates there is no penalty. The penalty is the Lagrangian of
Wang et al. 2020 / CoFi, λ1·(s − t) + λ2·(s − t)², with s the expected remaining fraction of
prunable parameters and t the scheduled target; the λs are trained by gradient ascent and λ1 takes
both signs, so the size term also pushes back up when the gates overshoot. ``penalty="fixed"`` is
the paper's λ_att·Σ P(head) + λ_ff·Σ P(unit). Runs on accelerate (CPU, one GPU, or ``torchrun`` /
``accelerate launch`` for several processes with no code change). Checkpoints hold everything a step
depends on (weights, optimisers, λ, the schedule's start, every rank's RNG, step), so ``resume``
continues exactly where a killed run stopped.

Several processes: DDP averages the gradients, so weights and gates stay equal on every rank; λ
follows the (equal) expected size, and its scale comes from the gradient averaged over ranks. At
each checkpoint the ranks compare a digest of weights, gates and λ (a mismatch stops the run), and
rank 0 alone writes while the others wait.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from slimbert.config import PruneConfig, TrainConfig
from slimbert.train.checkpoint import SUFFIX, CheckpointError, load_checkpoint, load_weights, state_digest, write_checkpoint
from slimbert.pruning.gates import deterministic_size, expected_size, gate_parameters, get_gates
from slimbert.tasks.base import MODEL_INPUTS
from slimbert.train.losses import hidden_mse, kl, logit_kl, qa_loss
from slimbert.train.teacher import TeacherOutput, add_teacher_logits

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What every training step of one ``prune`` call shares."""

    teacher: torch.nn.Module  # frozen, eval mode
    features: object  # labelled training windows (datasets.Dataset)
    tokenizer: object
    collate: Callable  # windows -> padded batch (the task's collator)
    cfg: PruneConfig
    tcfg: TrainConfig
    accelerator: Accelerator
    cache: list | None = None  # the teacher's logits per window (teacher.teacher_logits); None: run it live
    eval_fn: Callable | None = None  # model -> scores, for eval_every
    out_dir: str | None = None  # checkpoints go here
    resume: bool = False
    fingerprint: dict | None = None  # what made this run (train/checkpoint.py); every checkpoint carries it
    cost: object | None = None  # budget="latency": the LatencyTable the size counts in (pruning/latency_table.py)


class BatchPlan:
    """Which feature indices make up each global step: a pure function of (seed, step), so a resumed
    run draws exactly the batches an uninterrupted one would.

    Each epoch is a fresh permutation. With ``lengths``, windows are bucketed: the permutation is cut
    into pools of ``pool`` steps, each pool is sorted by length and cut into steps, and the steps are
    shuffled, so a batch pads to nearly its own length while the order stays random.
    """

    def __init__(self, n: int, batch_size: int, seed: int, world: int = 1, lengths=None, pool: int = 50):
        self.n, self.batch_size, self.seed, self.world = n, batch_size, seed, world
        self.per_step = batch_size * world
        self.steps_per_epoch = max(1, n // self.per_step)
        self.lengths, self.pool = lengths, pool
        self._epoch, self._steps = None, None

    def _epoch_steps(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        used = torch.randperm(self.n, generator=g).tolist()[: self.steps_per_epoch * self.per_step]
        if self.lengths is None:
            return [used[i : i + self.per_step] for i in range(0, len(used), self.per_step)]
        chunk = self.pool * self.per_step
        steps = []
        for c in range(0, len(used), chunk):
            pool = sorted(used[c : c + chunk], key=lambda i: self.lengths[i])
            steps += [pool[i : i + self.per_step] for i in range(0, len(pool), self.per_step)]
        return [steps[i] for i in torch.randperm(len(steps), generator=g).tolist()]

    def indices(self, step: int, rank: int = 0) -> list[int]:
        """One process's share of global step ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._steps = epoch, self._epoch_steps(epoch)
        return self._steps[pos][rank * self.batch_size : (rank + 1) * self.batch_size]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def milestones(total: int, targets) -> list[int]:
    """The step at which the schedule has reached and held each of ``targets``: each target gets an
    equal share of the ``total`` steps, and its share's last step is its milestone (``total`` for the last)."""
    return [round(total * (i + 1) / len(targets)) for i in range(len(targets))]


def scheduled_target(step: int, total: int, start: float, cfg: PruneConfig) -> float:
    """The size target of step ``step`` (0-based): it falls linearly from the student's initial
    expected size ``start`` to the first target over the first ``target_warmup`` of that target's share
    of the steps, then holds it to the share's milestone (the settle period). One target: one share,
    the whole run. A family holds each later target from its share's first step: family.py moves the
    gates there at each milestone (a linear fall, which the gates lag and then overshoot, measured
    worse: bench/results/family-ft0-cpu)."""
    targets = cfg.targets or (cfg.target,)
    ends = milestones(total, targets)
    i = next(i for i, end in enumerate(ends) if step < end or i == len(ends) - 1)
    if i:
        return targets[i]
    warm = max(1, int(cfg.target_warmup * ends[0]))
    return start - (start - targets[0]) * min(1.0, (step + 1) / warm)


def _penalty(student, cfg: PruneConfig, target_now: float, lambdas: torch.Tensor, scale: float, cost=None):
    """(penalty, expected size) for the model's loss; the λs get the opposite gradient (ascent).

    ``scale`` makes the λs dimensionless: λ1 = 1 means the size term pulls on log_alpha as hard as
    the task loss did at the first step (see _lambda_scale).
    """
    size = expected_size(student, cost)
    if cfg.penalty == "lagrangian":
        gap = size - target_now
        return scale * (lambdas[0] * gap + lambdas[1] * gap**2), size
    heads = sum(g.heads.prob_open().sum() for g in get_gates(student) if g.heads is not None)
    units = sum(g.units.prob_open().sum() for g in get_gates(student) if g.units is not None)
    return cfg.lambda_att * heads + cfg.lambda_ff * units, size


def _lambda_scale(student, loss: torch.Tensor, accelerator: Accelerator, cost=None) -> float:
    """Mean |∂loss/∂log_alpha| over mean |∂size/∂log_alpha|: the λ at which both pull equally.

    Without it λ must first climb (by gradient ascent) to this scale, which on a short run is most of
    the run, and then overshoots; with it λ starts near the balance point. The loss gradient is
    averaged over processes (as DDP averages the step's), so every rank gets the same scale.
    """
    params = gate_parameters(student)
    g_task = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    g_size = torch.autograd.grad(expected_size(student, cost), params, allow_unused=True)
    task = accelerator.reduce(torch.cat([g.flatten() for g in g_task if g is not None]), "mean").abs().mean()
    size = torch.cat([g.abs().flatten() for g in g_size if g is not None]).mean()
    return float(task / size.clamp_min(1e-12))


def _distill_step(student, teacher, batch, cfg: PruneConfig):
    """(loss, task loss, KD loss) of one batch; the teacher's logits come from ``batch`` when cached."""
    inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS}
    want_hidden = cfg.distill_hidden > 0
    s = student(**inputs, output_hidden_states=want_hidden)
    if "teacher_start" in batch and not want_hidden:
        t = TeacherOutput(batch["teacher_start"], batch["teacher_end"], batch.get("teacher_answer_type"))
    else:
        with torch.no_grad():
            t = teacher(**inputs, output_hidden_states=want_hidden)
    mask = batch["attention_mask"].bool()
    task = qa_loss(s.start_logits, s.end_logits, batch["start_positions"], batch["end_positions"])
    kd = logit_kl(s.start_logits, s.end_logits, t.start_logits, t.end_logits, cfg.distill_temperature, mask)
    s_type, t_type = getattr(s, "answer_type_logits", None), getattr(t, "answer_type_logits", None)
    if s_type is not None and "answer_types" in batch:  # NQ: start, end and answer type weigh alike
        task = (2 * task + torch.nn.functional.cross_entropy(s_type, batch["answer_types"])) / 3
    if s_type is not None and t_type is not None:
        kd = (2 * kd + kl(s_type, t_type, cfg.distill_temperature)) / 3
    loss = (1 - cfg.distill_alpha) * task + cfg.distill_alpha * kd
    if want_hidden:
        loss = loss + cfg.distill_hidden * hidden_mse(s.hidden_states[1:], t.hidden_states[1:], mask)
    return loss, task.detach(), kd.detach()


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Every dropout of ``model`` (embeddings, attention probabilities, sub-layer outputs) at ``p``; the
    config records it, so the saved model says how it was trained."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = p


def train(student, run: Run, total: int, on_step: Callable | None = None):
    """Train ``student`` for ``total`` steps (with the L0 penalty when it has gates); returns it and its history.

    ``on_step(step, model)`` runs after every step (family.py takes its members there); when it returns
    True a checkpoint is written at once, so a resumed run knows that step's work is done.
    """
    teacher, features, collate, cache = run.teacher, run.features, run.collate, run.cache
    cfg, tcfg, accelerator, eval_fn = run.cfg, run.tcfg, run.accelerator, run.eval_fn
    if tcfg.dropout is not None:
        set_dropout(student, tcfg.dropout)
    world, rank = accelerator.num_processes, accelerator.process_index
    with_gates = bool(get_gates(student))
    lengths = [len(ids) for ids in features["input_ids"]] if tcfg.length_buckets else None
    plan = BatchPlan(len(features), tcfg.batch_size, tcfg.seed, world, lengths)

    gate_params = gate_parameters(student) if with_gates else []
    gate_ids = {id(p) for p in gate_params}
    weights = [p for p in student.parameters() if id(p) not in gate_ids and p.requires_grad]
    opt = torch.optim.AdamW(weights, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(tcfg.warmup_ratio * total), total)
    gate_opt = torch.optim.Adam(gate_params, lr=tcfg.gate_lr) if gate_params else None
    lambdas = torch.zeros(2)  # λ1, λ2: updated by gradient ascent below, never by an optimiser

    student, opt = accelerator.prepare(student, opt)
    if gate_opt:
        gate_opt = accelerator.prepare(gate_opt)
    teacher.to(accelerator.device)
    lambdas = lambdas.to(accelerator.device)
    unwrapped = accelerator.unwrap_model(student)

    tag = "gated" if with_gates else "finetune"
    ckpt_path = os.path.join(run.out_dir, f"{tag}_{SUFFIX}") if run.out_dir else None
    # The target falls linearly from the student's initial expected size, so the gap starts at 0.
    start_size = float(expected_size(unwrapped, run.cost).detach()) if with_gates else 1.0
    step, history, lambda_scale = 0, [], None
    if run.resume and ckpt_path and os.path.exists(ckpt_path):
        state = load_checkpoint(ckpt_path, run.fingerprint)
        load_weights(unwrapped, state["model"], ckpt_path)
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        if gate_opt:
            gate_opt.load_state_dict(state["gate_opt"])
        if state.get("processes", 1) != world:  # each process's share of a step, and its RNG, depend on it
            raise CheckpointError(f"{ckpt_path} was written by a run of {state.get('processes', 1)} processes, this one has "
                                  f"{world}; resume with as many, or pass --overwrite to start over")
        lambdas.copy_(state["lambdas"])
        lambda_scale, start_size = state["lambda_scale"], state["start_size"]
        step, history = state["step"], state["history"]
        _set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])  # a dict: older, one process
        log.info("resumed %s training at step %d/%d from %s", tag, step, total, ckpt_path)

    def save_checkpoint():
        if not ckpt_path:
            return
        state = {"model": unwrapped.state_dict(), "lambdas": lambdas.cpu(), "lambda_scale": lambda_scale,
                 "start_size": start_size, "step": step}
        # every rank's digest of what it trains with (they must agree) and its RNG (each resumes its own)
        ranks = gather_object([(state_digest(state) if world > 1 else None, _rng_state())])
        digests = [d for d, _ in ranks]
        if len(set(digests)) > 1:
            raise RuntimeError(f"the {world} processes disagree on weights, gates or λ at {tag} step {step} "
                               f"(digests {digests}); this is a bug, please report it")
        if accelerator.is_main_process:
            state |= {
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "gate_opt": gate_opt.state_dict() if gate_opt else None,
                "history": history,
                "rng": [r for _, r in ranks],
                "processes": world,
                "rank_digests": digests,
            }
            write_checkpoint(state, ckpt_path, run.fingerprint)
        accelerator.wait_for_everyone()  # no rank runs ahead of (or exits before) the checkpoint on disk

    pending = []  # per-step tensors, turned into floats (a host sync) once every log_every steps
    bar = tqdm(total=total, initial=step, desc=f"{tag} training", disable=not accelerator.is_local_main_process)
    while step < total:
        student.train()
        idx = plan.indices(step, rank)
        batch = collate([features[i] for i in idx])
        if cache is not None:
            batch = add_teacher_logits(batch, cache, idx)
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
        loss, task, kd = _distill_step(student, teacher, batch, cfg)
        row = {"step": step + 1, "task": task, "kd": kd}
        if with_gates:
            target_now = scheduled_target(step, total, start_size, cfg)
            if lambda_scale is None:
                lambda_scale = _lambda_scale(unwrapped, loss, accelerator, run.cost)
            penalty, size = _penalty(unwrapped, cfg, target_now, lambdas, lambda_scale, run.cost)
            loss = loss + penalty
            gap = size.detach() - target_now
            row.update(expected_size=size.detach(), target_now=target_now, lambda1=lambdas[0].clone(), lambda2=lambdas[1].clone())
        opt.zero_grad(set_to_none=True)
        if gate_opt:
            gate_opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        opt.step()
        sched.step()
        if gate_opt:
            gate_opt.step()
            if cfg.penalty == "lagrangian":
                # gradient ascent on λ: ∂penalty/∂λ = (gap, gap²), in units of lambda_scale. λ1 takes
                # both signs, so the size term pushes back up when the gates overshoot the target.
                # Anti-windup: when the size crosses the target, λ1 restarts from 0 (what it built up
                # while the gates lagged would otherwise carry them far past the target).
                lambdas[0] = torch.where(gap * lambdas[0] < 0, torch.zeros_like(lambdas[0]), lambdas[0])
                lambdas += tcfg.lambda_lr * torch.stack([gap, gap * gap]).to(lambdas)
        step += 1
        bar.update(1)
        pending.append(row)
        done_here = bool(on_step and on_step(step, unwrapped))
        evaluate_now = eval_fn and tcfg.eval_every and step % tcfg.eval_every == 0 and step < total
        save_now = done_here or (tcfg.save_every and step % tcfg.save_every == 0)
        if step % tcfg.log_every == 0 or step == total or evaluate_now or save_now:
            history += [{k: float(v) for k, v in r.items()} | {"step": r["step"]} for r in pending]
            pending = []
            bar.set_postfix({k: f"{v:.3g}" for k, v in history[-1].items() if k in ("task", "kd", "expected_size")})
        if evaluate_now:
            history[-1]["eval"] = eval_fn(unwrapped)
            if with_gates:
                history[-1]["size"] = deterministic_size(unwrapped, run.cost)
            if accelerator.is_main_process:
                tqdm.write(json.dumps({"step": step, "eval": history[-1]["eval"], "size": history[-1].get("size")}))
        if save_now:
            save_checkpoint()
    bar.close()
    save_checkpoint()
    return unwrapped, history
