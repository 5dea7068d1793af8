"""``slimbert.prune()``: the whole path, top to bottom (``api`` so the module never shadows the function).

    load data -> method finds the structure -> collapse -> optional fine-tune -> evaluate -> save

Every step is a call into the module that owns it: the task (``tasks/``), the method
(``pruning/methods/``), ``pruning/collapse.py``, the training loop (``train/loop.py``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, fields

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from slimbert.card import model_card
from slimbert.config import ConfigError, PruneConfig, TrainConfig
from slimbert.io import atomic_save_pretrained
from slimbert.models.arch import check_qa_model, max_tokens
from slimbert.pruning.collapse import collapse
from slimbert.pruning.cost import count_parameters
from slimbert.pruning.gates import deterministic_size
from slimbert.pruning.latency_table import latency_table, speedups
from slimbert.pruning.methods import find_structure
from slimbert.pruning.methods.baselines import min_size
from slimbert.tasks import get_task
from slimbert.tasks.squad.data import check_max_length, check_tokenizer
from slimbert.train.checkpoint import clear_run_state, fingerprint
from slimbert.train.loop import Run, train
from slimbert.train.teacher import cached_teacher_logits

log = logging.getLogger(__name__)
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
    latency: dict | None = None  # measured and (--budget latency) predicted speed-up over the teacher
    family: list = field(default_factory=list)  # a family run (family.py): its curve's rows, teacher first
    members: dict = field(default_factory=dict, repr=False)  # a family run: target -> that member's PruneResult

    def summary(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "members")}
        d["num_heads"] = self.model.config.num_heads
        d["ffn_dims"] = self.model.config.ffn_dims
        return d


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
    JSON-lines path, an iterable of NQExample (``slimbert.load_nq``) or None for the hub; a model
    without an answer-type head gets a fresh one in the student, and the teacher's answer types are
    distilled only when it has a head. With ``out_dir`` the compact model, its tokenizer,
    ``prune_result.json`` and a model card (README.md, ``slimbert/card.py``) are saved there, with
    checkpoints for ``resume``. A fresh run (no ``resume``) first removes an earlier run's checkpoints
    and result there; ``resume`` raises CheckpointError, naming what differs, on a checkpoint of
    another model, data or settings.
    """
    from transformers import AutoTokenizer

    cfg, tcfg = cfg or PruneConfig(), train_cfg or TrainConfig()
    check_qa_model(model)
    task = get_task(tcfg.task)
    if (cfg.method == "posttrain" or cfg.gate_init == "fisher") and task.name != "squad":
        raise ConfigError("method='posttrain' and gate_init='fisher' support task='squad' only; use method='l0' for NQ")
    if cfg.method in ("random", "uniform") and cfg.target < min_size(model, cfg):
        raise ConfigError(f"target {cfg.target} is out of reach for method={cfg.method!r}: pruning only what it may prune "
                          f"keeps at least {min_size(model, cfg):.3f}; raise the target or prune both heads and FFN units")
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(model.name_or_path)
    check_tokenizer(tokenizer, model)
    check_max_length(model, tcfg.max_length)
    if (cfg.budget == "latency" or cfg.targets) and cfg.latency_seq > max_tokens(model.config):
        raise ConfigError(f"latency_seq {cfg.latency_seq} is longer than the model's {max_tokens(model.config)} positions; "
                          "lower --latency-seq")
    on_gpu = torch.cuda.is_available() and not tcfg.cpu
    if on_gpu:  # TF32 for whatever stays fp32 under autocast
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    accelerator = Accelerator(cpu=tcfg.cpu, mixed_precision="bf16" if on_gpu else "no")
    set_seed(tcfg.seed)
    if out_dir and not resume and accelerator.is_main_process:
        clear_run_state(out_dir, RESULT)  # a fresh run: nothing of an earlier one may be resumed or taken as its result
    # --budget latency: the size counts this device's measured latency (pruning/latency_table.py)
    table = latency_table(model, cfg.latency_batch, cfg.latency_seq, accelerator.device) if cfg.budget == "latency" else None
    lowest, floor = min(cfg.targets or [cfg.target]), table.floor(model.config.num_hidden_layers) if table else 0.0
    if lowest < floor:
        raise ConfigError(f"target {lowest} is below what --budget latency can reach on this device: with every head and "
                          f"FFN unit removed the model still takes {floor:.3f} of the teacher's measured time (embeddings, "
                          f"LayerNorms, residuals, fixed overhead); raise --target or use --budget params")

    # 1. data: labelled training windows, and a scorer of the eval data
    features = task.training_windows(train_data, tokenizer, tcfg)
    run_fingerprint = fingerprint(model, features, cfg, tcfg)  # on the CPU copy: the same sums wherever it resumes
    score = task.scorer(eval_data, tokenizer, tcfg) if eval_data is not None else None

    def eval_fn(m):
        if score is None:
            return None
        was_training = m.training
        scores = score(m)
        m.train(was_training)
        return scores

    teacher = model.eval().requires_grad_(False).to(accelerator.device)
    t0 = time.perf_counter()
    collate = task.collator(tokenizer)
    cache = None
    if (cfg.method == "l0" or tcfg.finetune_steps) and tcfg.cache_teacher and not cfg.distill_hidden:
        cache = cached_teacher_logits(teacher, features, collate, 2 * tcfg.batch_size, accelerator.device,
                                      write=accelerator.is_main_process)
    run = Run(teacher, features, tokenizer, collate, cfg, tcfg, accelerator, cache, eval_fn, out_dir, resume,
              run_fingerprint, cost=table)
    if cfg.targets:  # a family of models from one gate-training run: family.py walks the same steps per member
        from slimbert.family import prune_family  # it builds PruneResults, so it imports this module

        return prune_family(teacher, task.student(model), run, eval_fn, train_data, eval_data)

    # 2. the method finds the structure; 3. collapse removes what it closed
    found = find_structure(task.student(model), run)
    size = deterministic_size(found.gated)
    compact = collapse(found.gated.eval())
    del found.gated
    if found.refine:
        compact = found.refine(compact)
    history = found.history

    # 4. optional distillation fine-tune of the compact model
    if tcfg.finetune_steps:
        compact, ft_history = train(compact, run, tcfg.finetune_steps)
        history += ft_history
    compact.eval()
    log.info("pruning took %.0f s; %.4f of prunable parameters remain", time.perf_counter() - t0, size)

    # 5. evaluate, 6. save
    result = PruneResult(
        model=compact,
        size=size,
        params_before=count_parameters(model),
        params_after=count_parameters(compact),
        eval_before=eval_fn(teacher),
        eval_after=eval_fn(compact),
        history=history,
        latency=speedups(teacher, compact, cfg.latency_batch, cfg.latency_seq, table, found.latency_tries) if table else None,
    )
    if out_dir and accelerator.is_main_process:
        summary = result.summary() | {"prune_config": asdict(cfg), "train_config": asdict(tcfg)}
        card = model_card(model, compact, summary, train_data, eval_data)
        atomic_save_pretrained(compact, out_dir, tokenizer, extra_files={RESULT: summary, "README.md": card})
    accelerator.wait_for_everyone()  # the other ranks return once the folder is whole
    return result
