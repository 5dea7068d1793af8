"""Time slimbert.collapse on a real model with the C++ extension vs the PyTorch fallback (same run).

    python bench/collapse.py --model ../shared/models/minilm-l6-squad2 --target 0.5

Gates are attached and snapped to a random structure at --target; both backends collapse the same
gated model, alternately, --repeats times; the weights they produce are checked to be bit-identical.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForQuestionAnswering

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import slimbert  # noqa: E402
from slimbert._ext import load_extension  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default=str(Path(slimbert.__file__).parent / "demo" / "teacher"))
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)

    load_extension()  # compile outside the timed region
    teacher = AutoModelForQuestionAnswering.from_pretrained(args.model, dtype=torch.float32)
    gated = slimbert.add_gates(copy.deepcopy(teacher))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for prm in slimbert.gates.gate_parameters(gated):
            prm.copy_(torch.randn(prm.shape, generator=g))
    slimbert.snap_gates(gated, args.target)
    gated.eval()
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
        "model": args.model,
        "target": args.target,
        "collapse_s_median": {k: statistics.median(v) for k, v in times.items()},
        "bit_identical": identical,
        "params_dense": sum(x.numel() for x in teacher.parameters()),
        "params_compact": sum(x.numel() for x in out["cpp"].parameters()),
        "num_heads": out["cpp"].config.num_heads,
        "ffn_dims": out["cpp"].config.ffn_dims,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
