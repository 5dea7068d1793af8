"""How well the latency table (slimbert/pruning/latency_table.py) predicts whole pruned models.

    python bench/latency_table_check.py --model ../shared/models/minilm-l6-squad2 --out bench/results/latency-table-check-cpu

Builds (or reads from the cache) the teacher's table at --batch x --seq, then times random irregular
structures (every layer its own head count and FFN width, kept fractions spread over 0.2..0.9) and the
structures that earlier `--budget latency` runs chose (--shapes: their prune_result JSONs), each
interleaved with the teacher, and sets the measured speed-up beside the table's prediction with and
without the calibrated outside time. Writes OUT.json and OUT.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from transformers import AutoModelForQuestionAnswering

from slimbert.latency import compare
from slimbert.pruning.latency_table import latency_table, shaped_model


def random_shapes(config, n: int, seed: int) -> list[list[tuple[int, int]]]:
    g = torch.Generator().manual_seed(seed)
    L, H, F = config.num_hidden_layers, config.num_attention_heads, config.intermediate_size
    out = []
    for i in range(n):
        keep = 0.2 + 0.7 * i / max(n - 1, 1)  # spread over the range, each layer around it
        fracs = (keep + 0.3 * (torch.rand(L, 2, generator=g) - 0.5)).clamp(0, 1)
        out.append([(round(float(a) * H), round(float(b) * F)) for a, b in fracs])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="path stem of the JSON and PNG")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=384)
    p.add_argument("--random", type=int, default=8, help="random structures to time")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--shapes", nargs="*", default=[], help="prune_result-like JSONs with num_heads and ffn_dims")
    args = p.parse_args(argv)

    teacher = AutoModelForQuestionAnswering.from_pretrained(args.model, dtype=torch.float32).eval()
    table = latency_table(teacher, args.batch, args.seq)
    cases = {f"random-{i}": s for i, s in enumerate(random_shapes(teacher.config, args.random, 0))}
    for path in args.shapes:
        d = json.loads(Path(path).read_text())
        cases[Path(path).stem] = list(zip(d["num_heads"], d["ffn_dims"]))
    rows = []
    for name, shapes in cases.items():
        ms = compare({"teacher": teacher, "compact": shaped_model(teacher.config, shapes)}, args.batch, args.seq,
                     repeats=args.repeats, rounds=args.repeats // 3)
        measured = ms["teacher"]["median_ms"] / ms["compact"]["median_ms"]
        outside, table.outside_ms = table.outside_ms, 0.0
        blocks_only = 1 / table.fraction(shapes)
        table.outside_ms = outside
        predicted = 1 / table.fraction(shapes)
        rows.append(dict(name=name, heads=[h for h, _ in shapes], ffn=[f for _, f in shapes], teacher_ms=ms["teacher"]["median_ms"],
                         compact_ms=ms["compact"]["median_ms"], measured_speedup=measured, predicted_speedup=predicted,
                         blocks_only_speedup=blocks_only, error=predicted / measured - 1, blocks_only_error=blocks_only / measured - 1))
        print(f"{name:28} measured {measured:5.2f}x  predicted {predicted:5.2f}x ({rows[-1]['error']:+.1%})  "
              f"blocks only {blocks_only:5.2f}x ({rows[-1]['blocks_only_error']:+.1%})", flush=True)
    summary = {k: statistics.median(abs(r[k]) for r in rows) for k in ("error", "blocks_only_error")}
    print(f"median |error|: calibrated {summary['error']:.1%}, blocks only {summary['blocks_only_error']:.1%}")
    out = {"model": args.model, "batch": args.batch, "seq_len": args.seq, "table": table.path, "outside_ms": table.outside_ms,
           "device": table.device, "median_abs_error": summary, "rows": rows, "command": "python " + " ".join(sys.argv)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(out, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    m = [r["measured_speedup"] for r in rows]
    ax.scatter(m, [r["predicted_speedup"] for r in rows], label=f"calibrated (median |err| {summary['error']:.0%})")
    ax.scatter(m, [r["blocks_only_speedup"] for r in rows], marker="x", label=f"blocks only (median |err| {summary['blocks_only_error']:.0%})")
    top = max(max(m), max(r["blocks_only_speedup"] for r in rows)) * 1.05
    ax.plot([1, top], [1, top], "k:", lw=1)
    ax.set(xlabel="measured speed-up", ylabel="predicted speed-up", title=f"latency table, b{args.batch} s{args.seq}, {table.device[:30]}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=120)
    print(f"wrote {args.out}.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
