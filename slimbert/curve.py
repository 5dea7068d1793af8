"""The speed/accuracy curve both ``slimbert sweep`` (sweep.py) and a family run (family.py) write:
one row per model in COLUMNS, ``curve.csv``/``family.csv`` written whole, and the plot.

``params`` is the model's parameters, ``flops`` encoder FLOPs per sequence, ``speedup`` measured
against the dense teacher in the same process, ``seconds`` wall time of the pruning.
"""

from __future__ import annotations

import csv
import os

COLUMNS = ("method", "target", "params", "flops", "speedup", "exact", "f1", "hasans_f1", "best_f1", "seconds")


def scores_row(scores: dict | None) -> dict:
    """The curve's score columns from an evaluation's scores (NaN where absent, e.g. no eval data)."""
    scores = scores or {}
    return {k: scores.get(src, float("nan")) for k, src in
            (("exact", "exact"), ("f1", "f1"), ("hasans_f1", "HasAns_f1"), ("best_f1", "best_f1"))}


def write_csv(rows: list[dict], path: str) -> None:
    tmp = path + ".tmp"  # written whole, then renamed: a killed sweep never leaves half a curve
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# F1 at threshold 0 alone rewards a model that abstains: HasAns F1 and best-threshold F1 get rows too.
SCORES = (("f1", "F1 (threshold 0)"), ("hasans_f1", "HasAns F1"), ("best_f1", "best-threshold F1"))


def plot(rows: list[dict], path: str, title: str = "") -> None:
    """Scores (rows: F1, HasAns F1, best-threshold F1) against measured speed-up and against parameters
    (columns); a line per method, the teacher a star."""
    from matplotlib.figure import Figure  # not pyplot: leaves the caller's matplotlib backend alone

    fig = Figure(figsize=(11, 11))
    panels = fig.subplots(len(SCORES), 2)
    xs = (("speedup", 1.0, "measured speed-up over the dense model"), ("params", 1e-6, "parameters (M)"))
    methods = dict.fromkeys(r["method"] for r in rows if r["method"] != "teacher")
    for (score, score_label), row_axes in zip(SCORES, panels):
        for ax, (key, scale, label) in zip(row_axes, xs):
            for method in methods:
                line = sorted((r for r in rows if r["method"] == method), key=lambda r: r[key])
                ax.plot([r[key] * scale for r in line], [r[score] for r in line], marker="o", label=method)
            for r in rows:
                if r["method"] == "teacher":
                    ax.scatter([r[key] * scale], [r[score]], marker="*", s=150, color="black", zorder=3, label="teacher")
            ax.set_xlabel(label)
            ax.set_ylabel(f"SQuAD 2.0 {score_label}")
            ax.grid(alpha=0.3)
    panels[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    root, ext = os.path.splitext(path)
    fig.savefig(root + ".tmp" + ext, dpi=120)  # the format follows the extension; renamed whole into place
    os.replace(root + ".tmp" + ext, path)
