"""Append one record of a default-recipe run to bench/results/recipe.json: the scores the run
measured (teacher and pruned, same windows), its measured CPU speed-up at batch 1, seq 384
(interleaved with the teacher in this process), its wall time, the machine and the command.

    python bench/recipe.py --run runs/recipe-p50 --teacher ../shared/models/minilm-l6-squad2 \\
        --wall-seconds 5400 --command "slimbert prune ..."
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch
from transformers import AutoModelForQuestionAnswering

import slimbert  # noqa: F401  (registers the compact model with the Auto classes)
from slimbert.io import atomic_write_json
from slimbert.latency import compare
from slimbert.pruning.cost import model_report

RESULTS = Path(__file__).resolve().parent / "results" / "recipe.json"
KEYS = ("HasAns_f1", "best_f1", "f1", "exact", "NoAns_f1")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="output folder of slimbert prune (holds prune_result.json)")
    p.add_argument("--teacher", required=True)
    p.add_argument("--wall-seconds", type=float, required=True, help="wall time of the prune command")
    p.add_argument("--command", required=True, help="the exact prune command")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=384)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)

    summary = json.loads((Path(args.run) / "prune_result.json").read_text())
    teacher = AutoModelForQuestionAnswering.from_pretrained(args.teacher, dtype=torch.float32).eval()
    compact = AutoModelForQuestionAnswering.from_pretrained(args.run, dtype=torch.float32).eval()
    ms = compare({"teacher": teacher, "pruned": compact}, args.batch, args.seq, repeats=args.repeats)
    before, after = summary["eval_before"], summary["eval_after"]
    record = {
        "target": summary["prune_config"]["target"],
        "size": summary["size"],
        "questions_scored": after["n"],
        "teacher": {k: round(before[k], 2) for k in KEYS},
        "pruned": {k: round(after[k], 2) for k in KEYS},
        "delta": {k: round(after[k] - before[k], 2) for k in KEYS},
        "speedup": round(ms["teacher"]["median_ms"] / ms["pruned"]["median_ms"], 3),
        "latency_ms": {k: round(v["median_ms"], 2) for k, v in ms.items()},
        "latency_shape": {"batch": args.batch, "seq": args.seq, "dtype": "fp32", "path": "torch"},
        "flops_ratio": round(model_report(compact, args.seq)["flops_ratio"], 3),
        "num_heads": summary["num_heads"],
        "ffn_dims": summary["ffn_dims"],
        "wall_seconds": args.wall_seconds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU, torch {torch.__version__}",
        "command": args.command,
        "train_config": summary["train_config"],
        "prune_config": summary["prune_config"],
    }
    records = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    records.append(record)
    atomic_write_json(records, str(RESULTS))
    print(json.dumps({k: record[k] for k in ("target", "questions_scored", "teacher", "pruned", "delta", "speedup")}))
    return record


if __name__ == "__main__":
    main()
