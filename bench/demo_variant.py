"""One variant of `slimbert demo`: the demo's teacher, data and recipe with TrainConfig (and, under
"prune", PruneConfig) fields overridden; prints and appends to bench/results/demo-variants.jsonl the
teacher's and the pruned model's scores on the demo's dev slice and the minutes taken.

    python bench/demo_variant.py lr3e-4 '{"lr": 3e-4}'
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

import slimbert.demo as demo
from slimbert.api import prune

OUT = Path(__file__).resolve().parent / "results" / "demo-variants.jsonl"


def main(name: str, overrides: str) -> dict:
    kw = json.loads(overrides)
    prune_kw = kw.pop("prune", {})
    torch.manual_seed(0)
    teacher = AutoModelForQuestionAnswering.from_pretrained(demo.TEACHER, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(demo.TEACHER)
    cfg, tcfg = demo.configs()
    t0 = time.perf_counter()
    r = prune(teacher, replace(cfg, **prune_kw), train_data=str(demo.TRAIN), eval_data=str(demo.EVAL),
              tokenizer=tokenizer, train_cfg=replace(tcfg, **kw))
    b, a = r.eval_before, r.eval_after
    line = {"name": name, "overrides": overrides, "minutes": round((time.perf_counter() - t0) / 60, 2), "size": r.size}
    line |= {k: [round(b[m], 2), round(a[m], 2), round(a[m] - b[m], 2)] for k, m in
             (("HasAns", "HasAns_f1"), ("best", "best_f1"), ("NoAns", "NoAns_f1"))}
    line |= {"heads": r.model.config.num_heads, "ffn": r.model.config.ffn_dims}
    print(json.dumps(line))
    with open(OUT, "a") as f:
        f.write(json.dumps(line) + "\n")
    return line


if __name__ == "__main__":
    main(*sys.argv[1:3])
