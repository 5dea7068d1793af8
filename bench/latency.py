"""Latency of the dense teacher vs the compact model (torch fallback, Triton kernels).

    python bench/latency.py --model ../shared/models/minilm-l6-squad2 --pruned runs/real-p50

Variants: dense eager, dense sdpa, compact with the PyTorch fallback (SLIMBERT_KERNELS=torch), and
on CUDA compact with the Triton kernels. Cases: batch 1/8/32 x seq 128/384 x fp16/bf16/fp32 on a
GPU, batch 1/8 x seq 128/384 x fp32 on a CPU. Each case: warm-up, then the median and spread of
repeats (CUDA events on a GPU), all variants interleaved in one run so ratios are fair. Plus real
SQuAD lengths: 32 dev windows, the compact model padded vs unpadded (slimbert/unpad.py). Writes
bench/results/<device>-<date>.json and a PNG of speed-ups over dense sdpa. Without --pruned a
compact model is made from the teacher by keeping a random structure at --target: fine for speed,
meaningless for accuracy (the JSON says which was used).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

import torch
from transformers import AutoModelForQuestionAnswering

import slimbert
from slimbert.latency import compare, measure
from slimbert.pruning.cost import model_report
from slimbert.pruning.methods.baselines import random_compact

RESULTS = Path(__file__).resolve().parent / "results"
DEMO = Path(slimbert.__file__).parent / "demo"
RANDOM_BASE = "bert-base-random"


def random_base(folder: Path) -> str:
    """A BERT-base-shaped QA model with random weights (and the demo's BERT vocabulary), saved to ``folder``."""
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    BertForQuestionAnswering(BertConfig()).save_pretrained(folder)
    AutoTokenizer.from_pretrained(DEMO / "teacher").save_pretrained(folder)
    return str(folder)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name().replace(" ", "-")
    return f"cpu-{platform.machine()}-{os.cpu_count()}cores"


def squad_batch(tokenizer, path: str, batch: int, max_length: int = 384, device="cpu") -> dict:
    """``batch`` real SQuAD windows (right-padded to the longest): the unpadded case's input."""
    from slimbert.tasks.squad.data import eval_features, load_squad

    feats = eval_features(load_squad(path, limit=batch * 2), tokenizer, max_length, 128).select(range(batch))
    enc = tokenizer.pad({"input_ids": feats["input_ids"]}, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


def run_unpadded(model, inputs: dict, kernels: str, repeats: int) -> dict:
    """Padded forward vs unpadded_logits of the same compact model on the same real batch."""
    from slimbert.models.unpad import unpadded_logits

    os.environ["SLIMBERT_KERNELS"] = kernels
    padded = measure(model, inputs, repeats=repeats)
    unpadded = measure(lambda **kw: unpadded_logits(model, kw["input_ids"], kw["attention_mask"]), inputs, repeats=repeats)
    os.environ.pop("SLIMBERT_KERNELS", None)
    return {"padded": padded, "unpadded": unpadded}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = results["cases"]
    labels = [f"{c['dtype']}\nb{c['batch']} s{c['seq']}" for c in cases]
    names = [n for n in cases[0]["ms"] if n != "dense-sdpa"]
    fig, ax = plt.subplots(figsize=(max(6, len(cases) * 0.9), 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        speedups = [c["ms"]["dense-sdpa"]["median_ms"] / c["ms"][name]["median_ms"] for c in cases]
        ax.bar([x + i * width for x in range(len(cases))], speedups, width, label=name)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axhline(results["flops_ratio"], color="gray", ls="--", lw=0.8, label=f"FLOPs ratio {results['flops_ratio']:.2f}")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(cases))], labels, fontsize=7)
    ax.set_ylabel("speed-up over dense sdpa")
    ax.set_title(f"{results['device']}: compact ({results['compact_source']}) vs dense")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(DEMO / "teacher"),
                   help=f"dense QA model folder, or {RANDOM_BASE!r}: BERT-base's shape with random weights "
                        "(speed only; nothing downloaded) (default: the demo teacher)")
    p.add_argument("--pruned", default=None, help="compact model folder (default: random structure at --target)")
    p.add_argument("--target", type=float, default=0.5)
    p.add_argument("--batches", default=None, help="comma list (default 1,8,32 on GPU, 1,8 on CPU)")
    p.add_argument("--seqs", default="128,384")
    p.add_argument("--dtypes", default=None, help="comma list (default fp16,bf16,fp32 on GPU, fp32 on CPU)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--squad", default=None, help="SQuAD JSON for the real-length unpadded case (default: the demo slice)")
    p.add_argument("--out", default=None, help="results JSON path (default bench/results/<device>-<date>.json)")
    args = p.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    batches = [int(b) for b in (args.batches or ("1,8,32" if cuda else "1,8")).split(",")]
    seqs = [int(s) for s in args.seqs.split(",")]
    dtypes = (args.dtypes or ("fp16,bf16,fp32" if cuda else "fp32")).split(",")
    repeats = args.repeats or (30 if cuda else 6)

    if args.model == RANDOM_BASE:
        import tempfile

        args.model = random_base(Path(tempfile.mkdtemp(prefix="slimbert_bert_base_")))
    teacher = AutoModelForQuestionAnswering.from_pretrained(args.model, dtype=torch.float32).eval()
    if args.pruned:
        compact, source = AutoModelForQuestionAnswering.from_pretrained(args.pruned, dtype=torch.float32), args.pruned
    else:
        compact, source = random_compact(teacher, args.target), f"random structure at target {args.target}"
    report = model_report(compact, seq_len=384)

    cases = []
    for dname in dtypes:
        dtype = DTYPES[dname]
        if not cuda and dtype != torch.float32:
            continue
        dense_eager = AutoModelForQuestionAnswering.from_pretrained(args.model, dtype=dtype, attn_implementation="eager")
        dense_sdpa = AutoModelForQuestionAnswering.from_pretrained(args.model, dtype=dtype, attn_implementation="sdpa")
        small = compact.to(dtype)
        variants = {
            "dense-eager": (dense_eager.to(device).eval(), "torch"),
            "dense-sdpa": (dense_sdpa.to(device).eval(), "torch"),
            "compact-torch": (small.to(device).eval(), "torch"),
        }
        if cuda:
            variants["compact-triton"] = (small, "auto")
        for b in batches:
            for s in seqs:
                ms = compare(variants, b, s, repeats=repeats)
                cases.append({"dtype": dname, "batch": b, "seq": s, "ms": ms})
                row = "  ".join(f"{n} {v['median_ms']:8.2f}" for n, v in ms.items())
                print(f"{dname} b{b:<3} s{s:<4} {row}  speed-up {ms['dense-sdpa']['median_ms'] / ms['compact-torch']['median_ms']:.2f}x", flush=True)

    # Real SQuAD lengths, batch 32: the same compact model padded vs packed (kernels.attention_varlen).
    from transformers import AutoTokenizer

    squad = args.squad or str(Path(slimbert.__file__).parent / "demo" / "squad2-dev-slice.json")
    batch = squad_batch(AutoTokenizer.from_pretrained(args.model), squad, 32, device=device)
    unpadded = {}
    for dname in dtypes:
        if not cuda and dname != "fp32":
            continue
        small = compact.to(device, DTYPES[dname]).eval()
        for kernels in (["torch", "auto"] if cuda else ["torch"]):
            unpadded[f"{dname}-{kernels}"] = u = run_unpadded(small, batch, kernels, repeats)
            print(f"{dname} {kernels} squad b32 padded {u['padded']['median_ms']:.2f} ms, unpadded "
                  f"{u['unpadded']['median_ms']:.2f} ms ({u['padded']['median_ms'] / u['unpadded']['median_ms']:.2f}x); "
                  f"real tokens {int(batch['attention_mask'].sum())} of {batch['attention_mask'].numel()}", flush=True)

    results = {
        "device": device_name(),
        "date": dt.date.today().isoformat(),
        "torch": torch.__version__,
        "command": " ".join(["python", "bench/latency.py", *(argv if argv is not None else sys.argv[1:])]),
        "compact_source": source,
        "num_heads": compact.config.num_heads,
        "ffn_dims": compact.config.ffn_dims,
        "params_dense": sum(p.numel() for p in teacher.parameters()),
        "params_compact": sum(p.numel() for p in compact.parameters()),
        "flops_ratio": report["flops_ratio"],
        "cases": cases,
        "squad_unpadded_b32": unpadded,
        "squad_real_tokens": [int(batch["attention_mask"].sum()), batch["attention_mask"].numel()],
    }
    results["targets"] = targets(results, cuda)
    RESULTS.mkdir(exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / f"{results['device']}-{results['date']}.json"
    out.write_text(json.dumps(results, indent=2))
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return results


def targets(results: dict, cuda: bool) -> dict:
    """Issue 11's figures as ratios from this one run: compact speed-up against its FLOPs ratio, Triton
    against the PyTorch fallback (b32, real SQuAD lengths unpadded, fp16), and every case Triton lost."""
    out = {"flops_ratio": results["flops_ratio"]}
    for c in results["cases"]:
        ms = {k: v["median_ms"] for k, v in c["ms"].items()}
        best = min(ms.get("compact-triton", ms["compact-torch"]), ms["compact-torch"])
        c["speedup_vs_sdpa"] = ms["dense-sdpa"] / best
        c["fraction_of_flops_ratio"] = c["speedup_vs_sdpa"] / results["flops_ratio"]
    b32 = [c for c in results["cases"] if c["batch"] == max(x["batch"] for x in results["cases"])]
    out["fraction_of_flops_ratio_at_largest_batch"] = {f"{c['dtype']} s{c['seq']}": round(c["fraction_of_flops_ratio"], 3) for c in b32}
    if cuda:
        u = results["squad_unpadded_b32"]
        if "fp16-torch" in u and "fp16-auto" in u:
            out["triton_vs_torch_b32_fp16_unpadded"] = u["fp16-torch"]["unpadded"]["median_ms"] / u["fp16-auto"]["unpadded"]["median_ms"]
        out["triton_slower"] = [f"{c['dtype']} b{c['batch']} s{c['seq']}" for c in results["cases"]
                                if c["ms"]["compact-triton"]["median_ms"] > c["ms"]["compact-torch"]["median_ms"]]
    print("targets:", json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
