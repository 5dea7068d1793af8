"""The default recipe beside the earlier sweep, on one plot: HasAns F1 and best-threshold F1 lost
against the teacher, over measured CPU speed-up (batch 1, seq 384).

    python bench/recipe_curve.py --family bench/results/family-cpu

Each point is a difference to the teacher scored on the same questions in the same run: the earlier
sweep (bench/results/sweep-cpu) scored the first 1,500 questions of dev.json, the recipe runs
(bench/results/recipe.json) and family members all 4,474, so differences are comparable where
absolute scores are not. The plot's legend says which is which.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PANELS = (("hasans_f1", "HasAns F1"), ("best_f1", "best-threshold F1"))


def csv_deltas(path: str, suffix: str) -> dict[str, list[dict]]:
    """{method: [{speedup, hasans_f1, best_f1}]} as differences to the csv's teacher row."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    teacher = next(r for r in rows if r["method"] == "teacher")
    lines: dict[str, list[dict]] = {}
    for r in rows:
        if r["method"] != "teacher":
            lines.setdefault(f"{r['method']}{suffix}", []).append(
                {"speedup": float(r["speedup"]), "target": float(r["target"])}
                | {k: float(r[k]) - float(teacher[k]) for k, _ in PANELS})
    return lines


def recipe_deltas(path: Path) -> list[dict]:
    return [{"speedup": r["speedup"], "target": r["target"], "hasans_f1": r["delta"]["HasAns_f1"], "best_f1": r["delta"]["best_f1"]}
            for r in json.loads(path.read_text())]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", default=str(RESULTS / "sweep-cpu" / "curve.csv"), help="the earlier sweep's curve.csv")
    p.add_argument("--recipe", default=str(RESULTS / "recipe.json"), help="default-recipe records (bench/recipe.py)")
    p.add_argument("--family", action="append", default=[], help="a family run's folder (holds family.csv); repeatable")
    p.add_argument("--out", default=str(RESULTS / "recipe-vs-sweep.png"))
    args = p.parse_args(argv)

    from matplotlib.figure import Figure

    lines = csv_deltas(args.sweep, " (sweep, 1,500 q.)")
    lines["default recipe (4,474 q.)"] = sorted(recipe_deltas(Path(args.recipe)), key=lambda r: r["speedup"])
    for folder in args.family:
        lines |= csv_deltas(os.path.join(folder, "family.csv"), f" ({Path(folder).name}, 4,474 q.)")
    fig = Figure(figsize=(12, 5))
    for ax, (key, label) in zip(fig.subplots(1, 2), PANELS):
        for name, pts in lines.items():
            pts = sorted(pts, key=lambda r: r["speedup"])
            bold = "recipe" in name or "family" in name
            ax.plot([r["speedup"] for r in pts], [r[key] for r in pts], marker="o", label=name,
                    linewidth=2.5 if bold else 1, alpha=1 if bold else 0.45)
            for r in pts if bold else ():
                ax.annotate(f"{r['target']:g}", (r["speedup"], r[key]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.axhspan(-1, 0, color="green", alpha=0.08)
        ax.set_xlabel("measured speed-up, CPU, batch 1, seq 384")
        ax.set_ylabel(f"{label} minus the teacher's (points)")
        ax.set_ylim(bottom=max(ax.get_ylim()[0], -30))
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.suptitle("SQuAD 2.0, shared teacher (MiniLM-L6): the default recipe and family runs against the earlier sweep "
                 "(labels: kept fraction; green band: within 1 point)", fontsize=9)
    fig.tight_layout()
    root, ext = os.path.splitext(args.out)
    fig.savefig(root + ".tmp" + ext, dpi=120)
    os.replace(root + ".tmp" + ext, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
