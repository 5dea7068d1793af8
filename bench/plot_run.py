"""Plot a prune run's history (expected size vs scheduled target, λ, losses) from its prune_result.json.

    python bench/plot_run.py runs/real-p50/prune_result.json bench/results/squad2-l0-p50-cpu-training.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> None:
    hist = json.load(open(src))["history"]
    gated = [r for r in hist if "expected_size" in r]
    tuned = [r for r in hist if "expected_size" not in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in gated]
    a.plot(steps, [r["expected_size"] for r in gated], label="E[size]")
    a.plot(steps, [r["target_now"] for r in gated], "--", label="scheduled target")
    a.set_xlabel("gate step")
    a.set_ylabel("fraction of prunable params")
    a2 = a.twinx()
    a2.plot(steps, [r["lambda1"] for r in gated], color="gray", lw=0.8, label="λ1")
    a2.set_ylabel("λ1 (units of step-0 balance)")
    a.legend(loc="upper right", fontsize=8)
    offset = len(gated)
    b.plot(steps, [r["kd"] for r in gated], label="KD loss, gated")
    b.plot([offset + r["step"] for r in tuned], [r["kd"] for r in tuned], label="KD loss, compact fine-tune")
    b.set_xlabel("step")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
