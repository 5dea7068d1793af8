"""Plot a prune run from its prune_result.json: expected size against the scheduled target with λ1,
the KD loss, and the learning curve (HasAns F1 and best-threshold F1 at each --eval-every, the
teacher's as dashed lines).

    python bench/plot_run.py runs/recipe-p50/prune_result.json bench/results/recipe-p50-cpu-training.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> None:
    result = json.load(open(src))
    hist = result["history"]
    gated = [r for r in hist if "expected_size" in r]
    tuned = [r for r in hist if "expected_size" not in r]
    offset = gated[-1]["step"] if gated else 0
    at = lambda r: r["step"] + (0 if "expected_size" in r else offset)  # noqa: E731  (one step axis for both phases)
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 3.6))
    if gated:
        steps = [r["step"] for r in gated]
        a.plot(steps, [r["expected_size"] for r in gated], label="E[size]")
        a.plot(steps, [r["target_now"] for r in gated], "--", label="scheduled target")
        a2 = a.twinx()
        a2.plot(steps, [r["lambda1"] for r in gated], color="gray", lw=0.8)
        a2.set_ylabel("λ1 (gray; units of the step-0 balance)")
        a.legend(loc="upper right", fontsize=8)
    a.set_xlabel("gate step")
    a.set_ylabel("fraction of prunable params")
    b.plot([at(r) for r in gated], [r["kd"] for r in gated], label="KD loss, gated")
    b.plot([at(r) for r in tuned], [r["kd"] for r in tuned], label="KD loss, compact fine-tune")
    b.set_xlabel("step")
    b.legend(fontsize=8)
    evals = [(at(r), r["eval"]) for r in hist if r.get("eval")]
    after, before = result.get("eval_after"), result.get("eval_before")
    if after:
        evals.append((at(hist[-1]), after))
    for key, color in (("HasAns_f1", "C0"), ("best_f1", "C1")):
        if evals:
            c.plot([s for s, _ in evals], [e[key] for _, e in evals], "o-", color=color, label=f"{key}, pruned")
        if before:
            c.axhline(before[key], color=color, ls="--", lw=0.8, label=f"{key}, teacher")
    if gated and tuned:
        c.axvline(offset, color="gray", lw=0.6)
    c.set_xlabel("step (gates, then fine-tune)")
    c.set_ylabel("F1")
    c.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
