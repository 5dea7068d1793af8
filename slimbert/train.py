"""The one training loop: gated student, frozen teacher, task + distillation + L0 toward a target size.

    batch -> student (sampled gates) -> teacher -> (1-α)·task + α·KD + penalty(size) -> step -> repeat
    then: collapse -> (optional distillation fine-tune of the compact model) -> evaluate -> save

The penalty is the Lagrangian of Wang et al. 2020 / CoFi, λ1·(s − t) + λ2·(s − t)², with s the
expected remaining fraction of prunable parameters and t the target (warmed up from 1); the λs are
trained by gradient ascent. ``penalty="fixed"`` is the paper's λ_att·Σ P(head) + λ_ff·Σ P(unit).
Runs on accelerate (CPU, one GPU, or ``accelerate launch`` for several with no code change).
Checkpoints hold everything a step depends on (weights, optimisers, λ, RNG, step), so ``resume``
continues exactly where a killed run stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from functools import partial

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from .arch import check_qa_model
from .baselines import baseline_gates
from .collapse import collapse
from .compact import qa_loss
from .config import PruneConfig, TrainConfig
from .data import MODEL_INPUTS, Collator, DataError, check_tokenizer, eval_features, load_squad, training_features
from .distill import TeacherOutput, add_teacher_logits, hidden_mse, logit_kl, teacher_logits
from .evaluate import evaluate
from .gates import add_gates, deterministic_size, expected_size, gate_parameters, get_gates, snap_gates
from .io import atomic_save_pretrained, atomic_torch_save
from .nq_features import NQCollator
from .nq_model import answer_type_kl, has_answer_type_head, nq_model_from
from .posttrain import fisher_gate_init, kept_fraction, posttrain_prune

log = logging.getLogger(__name__)
CHECKPOINT = "train_state.pt"
RESULT = "prune_result.json"


@dataclass
class PruneResult:
    model: torch.nn.Module  # the compact model
    size: float  # exact fraction of prunable parameters kept
    params_before: int
    params_after: int
    eval_before: dict | None = None
    eval_after: dict | None = None
    history: list = field(default_factory=list)

    def summary(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "model"}
        d["num_heads"] = self.model.config.num_heads
        d["ffn_dims"] = self.model.config.ffn_dims
        return d


def count_parameters(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.endswith("log_alpha"))


def _as_examples(data, split: str, limit: int):
    if data is None or isinstance(data, str):
        return load_squad(data, split=split, limit=limit)
    if limit:
        data = data.select(range(min(limit, len(data))))
    if len(data) == 0:
        raise DataError("empty data: no questions to train/evaluate on")
    return data


def _nq_data(train_data, eval_data, tokenizer, tcfg: TrainConfig):
    """NQ training windows, and a scorer of the eval examples (None without eval data)."""
    from .nq import as_nq_source
    from .nq_evaluate import evaluate_nq
    from .nq_features import eval_features as nq_eval_features
    from .nq_features import training_features as nq_training_features

    train_src = as_nq_source(train_data, "train", tcfg.max_train_examples)
    features = nq_training_features(train_src, tokenizer, tcfg.max_length, tcfg.doc_stride, tcfg.null_window_rate, tcfg.seed)
    if eval_data is None:
        return features, None
    eval_set = nq_eval_features(as_nq_source(eval_data, "validation", tcfg.max_eval_examples), tokenizer, tcfg.max_length, tcfg.doc_stride)
    return features, lambda m: evaluate_nq(m, tokenizer, eval_set, max_length=tcfg.max_length, doc_stride=tcfg.doc_stride)


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
        order = torch.randperm(self.n, generator=g).tolist()
        steps = [order[i * self.per_step : (i + 1) * self.per_step] for i in range(self.steps_per_epoch)]
        if self.lengths is None:
            return steps
        used = order[: self.steps_per_epoch * self.per_step]
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


def _penalty(student, cfg: PruneConfig, target_now: float, lambdas: torch.Tensor, scale: float):
    """(penalty, expected size) for the model's loss; the λs get the opposite gradient (ascent).

    ``scale`` makes the λs dimensionless: λ1 = 1 means the size term pulls on log_alpha as hard as
    the task loss did at the first step (see _lambda_scale).
    """
    size = expected_size(student)
    if cfg.penalty == "lagrangian":
        gap = size - target_now
        return scale * (lambdas[0] * gap + lambdas[1] * gap**2), size
    heads = sum(g.heads.prob_open().sum() for g in get_gates(student) if g.heads is not None)
    units = sum(g.units.prob_open().sum() for g in get_gates(student) if g.units is not None)
    return cfg.lambda_att * heads + cfg.lambda_ff * units, size


def _lambda_scale(student, loss: torch.Tensor) -> float:
    """Mean |∂loss/∂log_alpha| over mean |∂size/∂log_alpha|: the λ at which both pull equally.

    Without it λ must first climb (by gradient ascent) to this scale, which on a short run is most of
    the run, and then overshoots; with it λ starts near the balance point.
    """
    params = gate_parameters(student)
    g_task = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    g_size = torch.autograd.grad(expected_size(student), params, allow_unused=True)
    task = torch.cat([g.abs().flatten() for g in g_task if g is not None]).mean()
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
        kd = (2 * kd + answer_type_kl(s_type, t_type, cfg.distill_temperature)) / 3
    loss = (1 - cfg.distill_alpha) * task + cfg.distill_alpha * kd
    if want_hidden:
        loss = loss + cfg.distill_hidden * hidden_mse(s.hidden_states[1:], t.hidden_states[1:], mask)
    return loss, task.detach(), kd.detach()


def _run_loop(student, teacher, features, tokenizer, cfg, tcfg, accelerator, out_dir, resume, eval_fn, total, cache=None):
    """Train ``student`` for ``total`` steps (with the L0 penalty when it has gates); returns it and its history.

    ``cache``: the teacher's logits per window (distill.teacher_logits), or None to run the teacher
    every step.
    """
    collate = NQCollator(tokenizer) if tcfg.task == "nq" else Collator(tokenizer)
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
    ckpt_path = os.path.join(out_dir, f"{tag}_{CHECKPOINT}") if out_dir else None
    # The target falls linearly from the student's initial expected size, so the gap starts at 0.
    start_size = float(expected_size(unwrapped).detach()) if with_gates else 1.0
    step, history, lambda_scale = 0, [], None
    if resume and ckpt_path and os.path.exists(ckpt_path):
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        unwrapped.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        if gate_opt:
            gate_opt.load_state_dict(state["gate_opt"])
        lambdas.copy_(state["lambdas"])
        lambda_scale, start_size = state["lambda_scale"], state["start_size"]
        step, history = state["step"], state["history"]
        _set_rng_state(state["rng"])
        log.info("resumed %s training at step %d/%d from %s", tag, step, total, ckpt_path)

    def save_checkpoint():
        if ckpt_path and accelerator.is_main_process:
            atomic_torch_save(
                {
                    "model": unwrapped.state_dict(),
                    "opt": opt.state_dict(),
                    "sched": sched.state_dict(),
                    "gate_opt": gate_opt.state_dict() if gate_opt else None,
                    "lambdas": lambdas.cpu(),
                    "lambda_scale": lambda_scale,
                    "start_size": start_size,
                    "step": step,
                    "history": history,
                    "rng": _rng_state(),
                },
                ckpt_path,
            )

    warm = max(1, int(cfg.target_warmup * total))
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
            target_now = start_size - (start_size - cfg.target) * min(1.0, (step + 1) / warm)
            if lambda_scale is None:
                lambda_scale = _lambda_scale(unwrapped, loss)
            penalty, size = _penalty(unwrapped, cfg, target_now, lambdas, lambda_scale)
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
                lambdas += tcfg.lambda_lr * torch.stack([gap, gap * gap]).to(lambdas)
        step += 1
        bar.update(1)
        pending.append(row)
        evaluate_now = eval_fn and tcfg.eval_every and step % tcfg.eval_every == 0 and step < total
        if step % tcfg.log_every == 0 or step == total or evaluate_now or (tcfg.save_every and step % tcfg.save_every == 0):
            history += [{k: float(v) for k, v in r.items()} | {"step": r["step"]} for r in pending]
            pending = []
            bar.set_postfix({k: f"{v:.3g}" for k, v in history[-1].items() if k in ("task", "kd", "expected_size")})
        if evaluate_now:
            history[-1]["eval"] = eval_fn(unwrapped)
            if with_gates:
                history[-1]["size"] = deterministic_size(unwrapped)
            tqdm.write(json.dumps({"step": step, "eval": history[-1]["eval"], "size": history[-1].get("size")}))
        if tcfg.save_every and step % tcfg.save_every == 0:
            save_checkpoint()
    bar.close()
    save_checkpoint()
    return unwrapped, history


def prune(
    model,
    cfg: PruneConfig | None = None,
    train_data=None,
    eval_data=None,
    tokenizer=None,
    train_cfg: TrainConfig | None = None,
    out_dir: str | None = None,
    resume: bool = False,
) -> PruneResult:
    """Prune ``model`` (a BERT/RoBERTa QA model, the teacher) toward ``cfg.target``.

    ``train_data``/``eval_data``: a SQuAD 2.0 JSON path, a ``datasets.Dataset`` of examples (the
    hub's squad_v2 schema) or None for the hub's ``squad_v2``. With ``train_cfg.task="nq"``: an NQ
    JSON-lines path, an iterable of NQExample (slimbert.nq.load_nq) or None for the hub; a model
    without an answer-type head gets a fresh one in the student (nq_model_from), and the teacher's
    answer types are distilled only when it has a head. With ``out_dir`` the compact model, its
    tokenizer and ``prune_result.json`` are saved there, with checkpoints for ``resume``.
    """
    from transformers import AutoTokenizer

    cfg, tcfg = cfg or PruneConfig(), train_cfg or TrainConfig()
    check_qa_model(model)
    fisher_start = cfg.method == "l0" and (
        cfg.gate_init == "fisher" or (cfg.gate_init == "auto" and cfg.prune_heads and cfg.prune_ffn and tcfg.task == "squad")
    )
    if (cfg.method == "posttrain" or cfg.gate_init == "fisher") and tcfg.task != "squad":
        raise ValueError("method='posttrain' and gate_init='fisher' support task='squad' only; use method='l0' for NQ")
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(model.name_or_path)
    check_tokenizer(tokenizer, model)
    on_gpu = torch.cuda.is_available() and not tcfg.cpu
    if on_gpu:  # TF32 for whatever stays fp32 under autocast
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    accelerator = Accelerator(cpu=tcfg.cpu, mixed_precision="bf16" if on_gpu else "no")
    set_seed(tcfg.seed)

    if tcfg.task not in ("squad", "nq"):
        raise ValueError(f"task must be 'squad' or 'nq', got {tcfg.task!r}")
    if tcfg.task == "nq":
        features, score = _nq_data(train_data, eval_data, tokenizer, tcfg)
    else:
        train_ex = _as_examples(train_data, "train", tcfg.max_train_examples)
        if tcfg.extra_train:  # extra distillation data: its windows get the teacher's soft labels like any other
            extra = load_squad(tcfg.extra_train, "train", tcfg.max_extra_examples).cast(train_ex.features)
            train_ex = datasets.concatenate_datasets([train_ex, extra])
        eval_ex = _as_examples(eval_data, "validation", tcfg.max_eval_examples) if eval_data is not None else None
        features = training_features(train_ex, tokenizer, tcfg.max_length, tcfg.doc_stride)
        eval_feats = eval_features(eval_ex, tokenizer, tcfg.max_length, tcfg.doc_stride) if eval_ex is not None else None
        score = None
        if eval_ex is not None:
            score = partial(evaluate, tokenizer=tokenizer, examples=eval_ex, features=eval_feats, max_length=tcfg.max_length)

    def eval_fn(m):
        if score is None:
            return None
        was_training = m.training
        scores = score(m)
        m.train(was_training)
        return scores

    teacher = model.eval().requires_grad_(False)
    t0 = time.perf_counter()
    cache = None
    trains = cfg.method == "l0" or tcfg.finetune_steps > 0
    if trains and tcfg.cache_teacher and cfg.distill_hidden == 0:  # hidden states are too big to cache: live teacher
        collate = NQCollator(tokenizer) if tcfg.task == "nq" else Collator(tokenizer)
        cache = teacher_logits(teacher.to(accelerator.device), features, collate, 2 * tcfg.batch_size, accelerator.device)
    if cfg.method == "posttrain":  # no training loop: Fisher importance, mask search, rescaling
        compact = posttrain_prune(
            teacher.to(accelerator.device), tokenizer, target=cfg.target, budget=cfg.budget, features=features,
            max_length=tcfg.max_length, batch_size=tcfg.batch_size, seed=tcfg.seed,
        )
        size, history = kept_fraction(compact), []
    else:
        first = nq_model_from(model) if tcfg.task == "nq" and not has_answer_type_head(model) else model
        if cfg.method == "l0":
            student = add_gates(copy.deepcopy(first).requires_grad_(True), cfg)
            if fisher_start:
                fisher_gate_init(student.to(accelerator.device), teacher.to(accelerator.device), features, tokenizer,
                                 cfg.target, cfg.gate_init_keep, batch_size=tcfg.batch_size, seed=tcfg.seed)
            steps_per_epoch = max(1, len(features) // (tcfg.batch_size * accelerator.num_processes))
            total = tcfg.max_steps or max(1, int(round(tcfg.epochs * steps_per_epoch)))
            student, history = _run_loop(student, teacher, features, tokenizer, cfg, tcfg, accelerator, out_dir, resume, eval_fn, total, cache)
            if cfg.snap:
                snap_gates(student, cfg.target)
        else:  # random / uniform: no training loop, hard gates at the target (baselines.py)
            student, history = baseline_gates(first, cfg, tcfg.seed), []
        size = deterministic_size(student)
        compact = collapse(student.eval())
    if tcfg.finetune_steps:
        compact, ft_history = _run_loop(
            compact, teacher, features, tokenizer, cfg, tcfg, accelerator, out_dir, resume, eval_fn, tcfg.finetune_steps, cache
        )
        history += ft_history
    compact.eval()
    log.info("pruning took %.0f s; %.4f of prunable parameters remain", time.perf_counter() - t0, size)

    result = PruneResult(
        model=compact,
        size=size,
        params_before=count_parameters(model),
        params_after=count_parameters(compact),
        eval_before=eval_fn(teacher),
        eval_after=eval_fn(compact),
        history=history,
    )
    if out_dir and accelerator.is_main_process:
        summary = result.summary() | {"prune_config": asdict(cfg), "train_config": asdict(tcfg)}
        atomic_save_pretrained(compact, out_dir, tokenizer, extra_json={RESULT: summary})
    return result
