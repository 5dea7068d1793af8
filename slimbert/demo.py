"""``slimbert demo``: prune the vendored small SQuAD 2.0 model on a vendored slice, on a CPU.

Everything it needs ships in ``slimbert/demo/`` (see NOTICE.md there: sources and licences), so it
runs on a fresh machine with no hub and no GPU. It prints F1 (threshold 0, best threshold, HasAns)
and latency before and after, and saves the compact model to ``--out``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

DEMO_DIR = Path(__file__).resolve().parent / "demo"
TEACHER = DEMO_DIR / "teacher"
TRAIN = DEMO_DIR / "squad2-train-slice.json"
EVAL = DEMO_DIR / "squad2-dev-slice.json"
EXTRA = DEMO_DIR / "squad1-extra-slice.json"  # answerable SQuAD 1.1 questions: distillation data (recipe ingredient 3)
# Gate-learning steps, then FINETUNE_STEPS of distillation on the compact model. 200 + 560 costs what
# 100 + 700 did (a gate step ~1.4 fine-tune steps): HasAns F1 -1.7 / -2.9 at seeds 0 / 1 against
# -3.3 / -2.1, best-threshold F1 +2.9 / +2.5 against +1.0 / +2.5 (bench/results/demo-variants.jsonl).
DEFAULT_STEPS = 200
# The Fisher warm start on 256 windows instead of 1,024 frees three minutes for 150 more fine-tune
# steps: +1.3 and +1.6 HasAns F1 at seeds 0 and 1 in the same time (bench/results/demo-variants.jsonl).
FISHER_EXAMPLES = 256
# Dropout off makes a CPU training step 1.5-1.7x faster (a random mask per activation and per
# attention probability costs that much) at the same HasAns F1 (-3.7 / -3.1 against -3.9 / -2.9 at
# seeds 0 and 1; best-threshold F1 +0.8 / +2.0), so the demo spends the time on more steps.
DROPOUT = 0.0
FINETUNE_STEPS = 560
MARKER = "demo_run.json"  # written when a demo starts in --out: only such a folder is resumed
RESULT = "demo_result.json"


def _resume(out: str, overwrite: bool) -> bool:
    """Whether to continue a killed demo in ``out``; refuses a folder that holds anything else."""
    from slimbert.config import ConfigError

    if overwrite or not os.path.isdir(out) or not os.listdir(out):
        return False
    if os.path.exists(os.path.join(out, RESULT)):
        raise ConfigError(f"{out} holds a finished demo; pass --overwrite to run it again, or pick another --out")
    if not os.path.exists(os.path.join(out, MARKER)):
        raise ConfigError(f"{out} holds something other than a slimbert demo; pick another --out, or pass --overwrite to use it")
    return True  # the checkpoints' fingerprint checks that it is this demo's run


def configs(steps: int | None = None):
    """The demo's (PruneConfig, TrainConfig): the default recipe (README, "Default recipe") shortened to
    fit a few CPU minutes. bench/demo_variant.py varies these."""
    from slimbert.config import PruneConfig, TrainConfig

    return PruneConfig(target=0.5, fisher_examples=FISHER_EXAMPLES), TrainConfig(
        max_steps=steps or DEFAULT_STEPS, finetune_steps=FINETUNE_STEPS, batch_size=8, max_length=256, doc_stride=96,
        extra_train=str(EXTRA), dropout=DROPOUT)


def run_demo(out: str = "runs/demo", steps: int | None = None, overwrite: bool = False) -> dict:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from slimbert.api import prune
    from slimbert.io import atomic_write_json
    from slimbert.latency import compare

    resume = _resume(out, overwrite)
    os.makedirs(out, exist_ok=True)
    if not resume and os.path.exists(os.path.join(out, RESULT)):
        os.remove(os.path.join(out, RESULT))  # --overwrite: a killed rerun must not pass for finished
    atomic_write_json({"demo": True}, os.path.join(out, MARKER))
    torch.manual_seed(0)
    teacher = AutoModelForQuestionAnswering.from_pretrained(TEACHER, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(TEACHER)
    cfg, train_cfg = configs(steps)
    t0 = time.perf_counter()
    result = prune(teacher, cfg, train_data=str(TRAIN), eval_data=str(EVAL), tokenizer=tokenizer, train_cfg=train_cfg,
                   out_dir=out, resume=resume)
    minutes = (time.perf_counter() - t0) / 60
    lat = {k: v["median_ms"] for k, v in compare({"dense": teacher, "pruned": result.model}, batch=1, seq_len=384, repeats=9).items()}
    b, a = result.eval_before, result.eval_after
    rows = [("F1 (threshold 0)", "f1"), ("F1 (best threshold)", "best_f1"), ("HasAns F1", "HasAns_f1"), ("NoAns F1", "NoAns_f1")]
    print(f"\nslimbert demo: pruned to {result.size:.3f} of prunable parameters in {minutes:.1f} min (CPU)")
    print(f"{'':24}{'teacher':>12}{'pruned':>12}")
    for label, key in rows:
        print(f"{label:24}{b[key]:>12.1f}{a[key]:>12.1f}")
    print(f"{'parameters':24}{result.params_before:>12,}{result.params_after:>12,}")
    print(f"{'latency b1 s384 (ms)':24}{lat['dense']:>12.1f}{lat['pruned']:>12.1f}   ({lat['dense'] / lat['pruned']:.2f}x faster)")
    print(f"eval on {b['n']} questions of {EVAL.name}; compact model saved to {out}\n")
    summary = {k: v for k, v in result.summary().items() if k != "history"}
    summary["latency_ms"] = lat
    atomic_write_json(summary, os.path.join(out, RESULT))
    return {"size": result.size, "f1_before": b["f1"], "f1_after": a["f1"], "speedup": lat["dense"] / lat["pruned"]}
