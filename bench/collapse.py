"""Time slimbert.collapse with the C++ extension (every gather of the model in one parallel call)
vs the PyTorch fallback, in the same run.

    python bench/collapse.py                                              # random BERT-large-sized QA model
    python bench/collapse.py --model ../shared/models/minilm-l6-squad2   # a real one

Gates are snapped to a random structure at --target; both backends collapse the same gated model,
alternately, --repeats times; the weights they produce are checked to be bit-identical. Writes
bench/results/collapse-<model>-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForQuestionAnswering, BertConfig, BertForQuestionAnswering

import slimbert
from slimbert.io import atomic_write_json
from slimbert.pruning.ext import load_extension
from slimbert.pruning.methods.baselines import baseline_gates


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=None, help="QA model folder (default: random BERT-large shape: 24 layers, hidden 1024)")
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    load_extension()  # compile outside the timed region
    if args.model:
        teacher = AutoModelForQuestionAnswering.from_pretrained(args.model, dtype=torch.float32)
    else:
        torch.manual_seed(0)
        large = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
        teacher = BertForQuestionAnswering(large).eval()
    gated = baseline_gates(teacher, slimbert.PruneConfig(method="random", target=args.target)).eval()
    times = {"cpp": [], "torch": []}
    out = {}
    for _ in range(args.repeats):
        for backend in times:
            t0 = time.perf_counter()
            out[backend] = slimbert.collapse(gated, backend=backend)
            times[backend].append(time.perf_counter() - t0)
    a, b = out["cpp"].state_dict(), out["torch"].state_dict()
    identical = all(torch.equal(a[k], b[k]) for k in a)
    result = {
        "model": args.model or "random BERT-large shape (24 x 1024, 16 heads, FFN 4096)",
        "device": f"cpu-{platform.machine()}-{os.cpu_count()}cores, {torch.get_num_threads()} threads",
        "command": "python bench/collapse.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "target": args.target,
        "collapse_s_median": {k: statistics.median(v) for k, v in times.items()},
        "cpp_speedup": statistics.median(times["torch"]) / statistics.median(times["cpp"]),
        "bit_identical": identical,
        "params_dense": sum(x.numel() for x in teacher.parameters()),
        "params_compact": sum(x.numel() for x in out["cpp"].parameters()),
        "num_heads": out["cpp"].config.num_heads,
        "ffn_dims": out["cpp"].config.ffn_dims,
    }
    print(json.dumps(result))
    name = Path(args.model).name if args.model else "bert-large-random"
    atomic_write_json(result, str(Path(__file__).resolve().parent / "results" / f"collapse-{name}-cpu.json"))
    return result


if __name__ == "__main__":
    main()
