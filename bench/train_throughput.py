"""Training throughput: windows per second of the gate-training step and of the fine-tune step,
today's path (teacher logits cached once, length-bucketed batches) against the old one (a teacher
forward every step, batches in random order), and today's path with the student's dropout off
(``--dropout 0``), measured in one run on the same data.

    python bench/train_throughput.py --model ../shared/models/minilm-l6-squad2 --train ../shared/data/squad2/train.json

Each variant trains for --steps steps after --warmup untimed ones; the teacher cache is built once
and its cost is reported on its own (it is paid once per prune, not per step). Writes
bench/results/train-throughput-<device>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

import slimbert
from slimbert.io import atomic_write_json
from slimbert.pruning.methods.baselines import random_compact
from slimbert.tasks import get_task
from slimbert.train.loop import Run, train
from slimbert.train.teacher import teacher_logits

RESULTS = Path(__file__).resolve().parent / "results"


def timed_steps(student, run: Run, steps: int, warmup: int) -> float:
    """Seconds per step of ``steps`` training steps, after ``warmup`` untimed ones (same batches order)."""
    train(copy.deepcopy(student), replace(run, tcfg=replace(run.tcfg, seed=run.tcfg.seed + 1)), warmup)
    t0 = time.perf_counter()
    train(student, run, steps)
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(Path(slimbert.__file__).parent / "demo" / "teacher"))
    p.add_argument("--train", default=str(Path(slimbert.__file__).parent / "demo" / "squad2-train-slice.json"))
    p.add_argument("--examples", type=int, default=1500, help="training questions windowed (the pool batches come from)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--doc-stride", type=int, default=96)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    teacher = AutoModelForQuestionAnswering.from_pretrained(args.model, dtype=torch.float32).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tcfg = slimbert.TrainConfig(batch_size=args.batch_size, max_length=args.max_length, doc_stride=args.doc_stride,
                                max_train_examples=args.examples, cpu=True, log_every=10)
    cfg = slimbert.PruneConfig(target=0.5, gate_init="uniform")
    task = get_task("squad")
    features = task.training_windows(args.train, tokenizer, tcfg)
    collate = task.collator(tokenizer)
    t0 = time.perf_counter()
    cache = teacher_logits(teacher, features, collate, 2 * args.batch_size, "cpu")
    cache_s = time.perf_counter() - t0

    accelerator = Accelerator(cpu=True)
    new = Run(teacher, features, tokenizer, collate, cfg, tcfg, accelerator, cache)
    variants = {"old": replace(new, cache=None, tcfg=replace(tcfg, length_buckets=False)), "new": new,
                "new_dropout0": replace(new, tcfg=replace(tcfg, dropout=0.0))}
    gated = slimbert.add_gates(copy.deepcopy(teacher).requires_grad_(True), cfg)
    compact = random_compact(teacher, 0.5).requires_grad_(True)

    rows = {}
    for phase, model in (("gate_training", gated), ("finetune", compact)):
        rows[phase] = {name: [] for name in variants}
        for _ in range(2):  # alternate twice so drift hits all alike
            for name, run in variants.items():
                s = timed_steps(copy.deepcopy(model), run, args.steps // 2, args.warmup)
                rows[phase][name].append(s)
    result = {
        "device": f"cpu-{platform.machine()}-{os.cpu_count()}cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "command": "python bench/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "windows": len(features),
        "teacher_cache_s": round(cache_s, 2),
        "batch_size": args.batch_size,
        "max_length": args.max_length,
    }
    for phase, r in rows.items():
        sec = {name: sum(v) / len(v) for name, v in r.items()}
        result[phase] = {f"{name}_s_per_step": round(s, 3) for name, s in sec.items()}
        result[phase] |= {f"{name}_windows_per_s": round(args.batch_size / s, 2) for name, s in sec.items()}
        result[phase] |= {"speedup": round(sec["old"] / sec["new"], 2),
                          "dropout0_speedup_over_new": round(sec["new"] / sec["new_dropout0"], 2)}
        print(f"{phase}: {args.batch_size / sec['old']:.2f} -> {args.batch_size / sec['new']:.2f} windows/s "
              f"({sec['old'] / sec['new']:.2f}x); dropout off: {args.batch_size / sec['new_dropout0']:.2f} "
              f"({sec['new'] / sec['new_dropout0']:.2f}x more)")
    print(f"teacher cache: {cache_s:.1f} s for {len(features)} windows (once per prune)")
    out = Path(args.out) if args.out else RESULTS / "train-throughput-cpu.json"
    atomic_write_json(result, str(out))
    return result


if __name__ == "__main__":
    main()
