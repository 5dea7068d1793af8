"""The speed/accuracy sweep: prune one teacher with several methods at several sizes, and plot the curve.

    slimbert sweep --model M --train T.json --eval D.json --targets 0.8,0.6,0.5,0.4,0.3 --out DIR

For each (method, target) ``prune()`` makes a compact model (every method then gets the same
``finetune_steps`` of distillation on it), which is scored on the eval set and timed against the
dense teacher in the same process (interleaved, batch 1 and ``seq_len`` 384 by default). Methods:

    l0         learned L0 gates on heads, FFN units and whole blocks, with distillation (the paper's)
    l0-heads   the same, gating only attention heads (the paper's ablation; FFN untouched)
    l0-ffn     the same, gating only FFN units (attention untouched)
    l0-fisher  l0 with its gates started from the Fisher mask at the target (PruneConfig.gate_init), no block gates
    random     a random set of heads and units at the target size (pruning/methods/baselines.py)
    uniform    every layer keeps the same number of heads and units (pruning/methods/baselines.py)
    posttrain  Kwon et al.'s retraining-free pruning (pruning/methods/posttrain.py)
    l0-family  l0-fisher's recipe, but one run for all the targets (family.py): its members are the points,
               each ``seconds`` the run's time up to that member (its run folder, ``family-run/``, resumes)

``target`` is always the kept fraction of all prunable (head + FFN) parameters, so the methods meet
at the same sizes; a target a heads-only or FFN-only variant cannot reach is skipped with a warning.

Output in DIR: ``points/<method>-<target>.json`` per finished point (written atomically, with the
settings that made it, so a rerun skips it and refuses to mix in points made with other settings),
``curve.csv`` (COLUMNS; the teacher as method ``teacher``, target 1) and ``curve.png`` (F1, HasAns F1 and
best-threshold F1 against measured speed-up and against parameters), both rebuilt from the points on every call. ``flops`` is
encoder FLOPs per sequence of ``seq_len`` tokens; ``seconds`` the wall time of ``prune()`` (0 for
the teacher). The SQuAD 2.0 task only: the columns are its scores.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, replace

import torch
from tqdm.auto import tqdm

from slimbert.config import ConfigError, PruneConfig, TrainConfig
from slimbert.curve import COLUMNS, plot, scores_row, write_csv
from slimbert.family import METHOD as FAMILY
from slimbert.io import atomic_write_json, load_model
from slimbert.latency import compare
from slimbert.api import prune
from slimbert.pruning.cost import model_report
from slimbert.pruning.methods.baselines import min_size
from slimbert.tasks.squad.data import eval_features, load_squad
from slimbert.tasks.squad.evaluate import evaluate

log = logging.getLogger(__name__)

# Each method as PruneConfig fields over the caller's base config. The variants turn block gates off
# too: a block gate on the part they must not prune would otherwise train as if it could close it.
METHODS = {
    "l0": dict(method="l0", gate_init="uniform", prune_blocks=True),
    "l0-heads": dict(method="l0", gate_init="uniform", prune_ffn=False, prune_blocks=False),
    "l0-ffn": dict(method="l0", gate_init="uniform", prune_heads=False, prune_blocks=False),
    # Block gates off: the warm-start mask already removes whole blocks where it empties them, and in
    # short runs the Lagrangian closes block gates first (each is worth a whole sub-layer of size).
    "l0-fisher": dict(method="l0", gate_init="fisher", prune_blocks=False),
    "random": dict(method="random"),
    "uniform": dict(method="uniform"),
    "posttrain": dict(method="posttrain"),
    "l0-family": dict(method="l0", gate_init="fisher", prune_blocks=False),  # targets: all of the sweep's
}
DEFAULT_METHODS = tuple(METHODS)


class SweepError(ConfigError):
    """A sweep request that cannot run as given (the message says what to change)."""


def check_points(targets, methods) -> tuple[list[float], list[str]]:
    """Targets as floats in (0, 1) and known method names, each once, in the order given."""
    try:
        targets = [float(t) for t in targets]
    except ValueError as e:
        raise SweepError(f"targets must be numbers, e.g. 0.8,0.6,0.5: {e}") from e
    bad = [t for t in targets if not 0.0 < t < 1.0]
    if bad or not targets:
        raise SweepError(f"targets must be fractions in (0, 1) of the prunable parameters kept, got {bad or 'none'}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SweepError(f"unknown method(s) {unknown or 'none'}; choose from {','.join(METHODS)}")
    return list(dict.fromkeys(targets)), list(dict.fromkeys(methods))


def _point_path(out_dir: str, method: str, target: float | None) -> str:
    name = "teacher" if method == "teacher" else f"{method}-{target:g}"
    return os.path.join(out_dir, "points", name + ".json")


# A config field added after a point was made counts, for that point, as what runs did before it
# existed: its default then (gate_init's default has since become "auto").
_DEFAULTS = {f"prune.{k}": v for k, v in asdict(PruneConfig()).items()} | {f"train.{k}": v for k, v in asdict(TrainConfig()).items()}
_DEFAULTS["prune.gate_init"] = "uniform"


def _finished(path: str, settings: dict) -> dict | None:
    """The persisted point at ``path`` if there is one; refuses one made with other settings."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        point = json.load(f)
    old = {k: _DEFAULTS[k] for k in settings if k not in point["settings"] and k in _DEFAULTS} | point["settings"]
    if old != settings:
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in dict.fromkeys([*settings, *old]) if old.get(k) != settings.get(k))
        raise SweepError(f"{path} was made with other settings ({diff}); delete it to redo that point, or use another out_dir")
    return point


def sweep(
    model_path: str,
    train_data: str | None,
    eval_data: str | None,
    targets,
    methods=DEFAULT_METHODS,
    *,
    out_dir: str,
    train_cfg: TrainConfig | None = None,
    prune_cfg: PruneConfig | None = None,
    seq_len: int = 384,
    batch_size: int = 1,
    repeats: int = 30,
) -> list[dict]:
    """Run every unfinished (method, target) point into ``out_dir``; returns the curve's rows, teacher first.

    ``train_data``/``eval_data``: SQuAD 2.0 JSON paths, or None for the hub's ``squad_v2``.
    ``train_cfg`` (steps, ``finetune_steps``, example limits, ...) is shared by every point;
    ``prune_cfg`` is the base each method's fields (METHODS) and the target are set on.
    ``seq_len``/``batch_size``/``repeats`` shape the latency measurement and the FLOP count.
    """
    tcfg, base = train_cfg or TrainConfig(), prune_cfg or PruneConfig()
    if tcfg.task != "squad":
        raise SweepError("sweep scores SQuAD 2.0 (exact/F1 columns); run it with task='squad'")
    targets, methods = check_points(targets, methods)
    for path in (train_data, eval_data):  # before the teacher's point, not after it
        if path is not None and not os.path.isfile(path):
            raise SweepError(f"data file not found: {path}. Pass a SQuAD 2.0 JSON file (the official layout).")
    teacher, tokenizer = load_model(model_path)
    if seq_len > teacher.config.max_position_embeddings:
        raise SweepError(f"seq_len {seq_len} exceeds the model's {teacher.config.max_position_embeddings} positions; pick a smaller one")
    device = "cuda" if torch.cuda.is_available() and not tcfg.cpu else "cpu"
    teacher = teacher.to(device).eval()
    common = dict(model=model_path, train_data=train_data, eval_data=eval_data, seq_len=seq_len, batch_size=batch_size)
    train_fields = {f"train.{k}": v for k, v in asdict(tcfg).items()}
    eval_fields = {k: train_fields[f"train.{k}"] for k in ("max_eval_examples", "max_length", "doc_stride", "cpu")}
    data = {}

    def load(split: str):  # read and window the data once, only if some point still needs it
        if split not in data:
            if split == "train":
                data["train"] = load_squad(train_data, "train", tcfg.max_train_examples)
            else:
                examples = load_squad(eval_data, "validation", tcfg.max_eval_examples)
                data["eval"] = examples, eval_features(examples, tokenizer, tcfg.max_length, tcfg.doc_stride)
        return data[split]

    def score(model) -> dict:
        examples, features = load("eval")
        return scores_row(evaluate(model, tokenizer, examples, features=features, max_length=tcfg.max_length, doc_stride=tcfg.doc_stride))

    family = {}  # target -> (compact, size, seconds) of the l0-family run, once it has run
    plan = [("teacher", None)] + [(m, t) for m in methods for t in targets]
    rows = []
    bar = tqdm(plan, desc="sweep", unit="point")
    for method, target in bar:
        bar.set_postfix(point=method if target is None else f"{method}-{target:g}")
        path = _point_path(out_dir, method, target)
        if method == "teacher":
            settings = {"model": model_path, "eval_data": eval_data, "seq_len": seq_len} | eval_fields
        else:
            cfg = replace(base, target=target, **METHODS[method])
            if method == FAMILY:  # one run walks down through every target, timed as the sweep times
                cfg = replace(cfg, targets=tuple(sorted(targets, reverse=True)), latency_batch=batch_size, latency_seq=seq_len)
            floor = min_size(teacher, cfg)
            if target < floor - 1e-9:
                log.warning("skipping %s at target %g: it keeps at least %.3f of the prunable parameters", method, target, floor)
                continue
            settings = common | {f"prune.{k}": v for k, v in asdict(cfg).items()} | train_fields
        point = _finished(path, settings)
        if point is None:
            if method == "teacher":
                point = _teacher_point(teacher, seq_len, score)
            elif method == FAMILY:
                if not family:  # the first unfinished member runs the family (or resumes it); the rest reuse it
                    family.update(_run_family(teacher, tokenizer, cfg, tcfg, load("train"), out_dir))
                compact, size, seconds = family[target]
                point = _point(method, target, teacher, compact, size, seconds, score, device, seq_len, batch_size, repeats)
            else:
                point = _run_point(method, teacher, tokenizer, cfg, tcfg, load("train"), score, device, seq_len, batch_size, repeats)
            point["settings"] = settings
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_json(point, path)
        rows.append(point["row"])
    bar.close()
    write_csv(rows, os.path.join(out_dir, "curve.csv"))
    name = os.path.basename(os.path.normpath(model_path))
    plot(rows, os.path.join(out_dir, "curve.png"), title=f"{name}: SQuAD 2.0 F1; speed-up at batch {batch_size}, {seq_len} tokens, {device}")
    return rows


def _teacher_point(teacher, seq_len: int, score) -> dict:
    report = model_report(teacher, seq_len)
    row = dict(method="teacher", target=1.0, params=report["params_after"], flops=report["encoder_flops_after"], speedup=1.0)
    return {"row": row | score(teacher) | {"seconds": 0.0}}


def _run_point(method, teacher, tokenizer, cfg, tcfg, train_examples, score, device, seq_len, batch_size, repeats) -> dict:
    """Prune, score and time one (method, target); the point's JSON (row plus the compact structure)."""
    t0 = time.perf_counter()
    # No eval data here: the sweep scores the compact model itself, on features windowed once.
    result = prune(teacher, cfg, train_examples, None, tokenizer, tcfg)
    seconds = time.perf_counter() - t0
    return _point(method, cfg.target, teacher, result.model, result.size, seconds, score, device, seq_len, batch_size, repeats)


def _run_family(teacher, tokenizer, cfg, tcfg, train_examples, out_dir: str) -> dict:
    """One family run (family.py) into ``out_dir/family-run`` (resumed when a killed sweep left one there):
    {target: (compact, size, seconds up to that member)}."""
    run_dir = os.path.join(out_dir, "family-run")
    resume = os.path.isdir(run_dir)  # same settings as the points that hold them: the checkpoints' fingerprint checks
    result = prune(teacher, cfg, train_examples, None, tokenizer, tcfg, out_dir=run_dir, resume=resume)
    return {t: (m.model, m.size, m.family[0]["seconds"]) for t, m in result.members.items()}


def _point(method, target, teacher, compact, size, seconds, score, device, seq_len, batch_size, repeats) -> dict:
    """Score and time one compact model; the point's JSON (row plus the compact structure)."""
    compact = compact.to(device).eval()
    ms = {k: v["median_ms"] for k, v in compare({"teacher": teacher, "compact": compact}, batch_size, seq_len, repeats=repeats).items()}
    report = model_report(compact, seq_len)
    row = dict(
        method=method, target=target, params=report["params_after"], flops=report["encoder_flops_after"],
        speedup=ms["teacher"] / ms["compact"],
    )
    row |= score(compact) | {"seconds": round(seconds, 2)}
    return {"row": row, "size": size, "latency_ms": ms, "num_heads": compact.config.num_heads, "ffn_dims": compact.config.ffn_dims}
