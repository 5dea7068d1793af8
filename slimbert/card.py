"""The model card (README.md) every pruned model saved by ``prune`` carries, as the Hugging Face Hub
shows it: front matter, the teacher, method and recipe, per-layer structure, cost and scores.

    text = model_card(teacher, compact, summary, train_data, eval_data)   # summary: prune_result.json
"""

from __future__ import annotations

import os

from huggingface_hub import ModelCardData

from slimbert.pruning.cost import model_report
from slimbert.tasks.nq.data import HUB_DATASET as NQ_HUB
from slimbert.tasks.squad.data import HUB_DATASET as SQUAD_HUB

HUB = {"squad": SQUAD_HUB, "nq": NQ_HUB}
TASKS = {"squad": "SQuAD 2.0", "nq": "Natural Questions"}
METHODS = {
    "l0": "hard-concrete L0 gates on heads and FFN units, learned with distillation and a Lagrangian "
          "size term, snapped to the target (McCarley et al., arXiv 1910.06360)",
    "posttrain": "Fisher mask search and per-layer rescaling, no retraining (Kwon et al. 2022)",
    "random": "baseline: random heads and FFN units removed",
    "uniform": "baseline: every layer cut equally",
}
# the scores a card shows, where the task has them (SQuAD 2.0, then Natural Questions)
SCORES = ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "long_f1", "long_best_f1", "short_f1", "short_best_f1")


def _data(data, task: str) -> tuple[str, str | None]:
    """(what the card calls ``data``, its hub id where it has one)."""
    if data is None:
        return f"the hub's `{HUB[task]}`", HUB[task]
    if isinstance(data, (str, os.PathLike)):
        return f"`{os.path.basename(os.fspath(data))}`", None
    name = getattr(getattr(data, "info", None), "dataset_name", None)  # a datasets.Dataset from the hub
    return (f"`{name}`", name) if name else (f"{type(data).__name__} passed in memory", None)


def model_card(teacher, compact, summary: dict, train_data=None, eval_data=None) -> str:
    """The card's text for ``compact`` pruned from ``teacher``; ``summary`` is what prune_result.json holds."""
    pcfg, tcfg = summary["prune_config"], summary["train_config"]
    task, t = tcfg["task"], teacher.config
    base = teacher.name_or_path or None
    train_name, train_hub = _data(train_data, task)
    eval_name, _ = _data(eval_data, task)
    meta = ModelCardData(
        library_name="transformers",
        pipeline_tag="question-answering",
        base_model=base,
        datasets=[train_hub] if train_hub else None,
        tags=["slimbert", "pruning", "structured-pruning", "question-answering", t.model_type],
    )
    r = model_report(compact, seq_len=tcfg["max_length"])
    out = [
        f"---\n{meta.to_yaml()}\n---\n",
        f"# Pruned {t.model_type} question-answering model\n",
        f"Structured pruning of {f'`{base}`' if base else 'an unnamed teacher'} by slimbert: "
        f"{summary['size']:.3f} of its prunable (head + FFN) parameters remain.",
        f"Method `{pcfg['method']}`: {METHODS[pcfg['method']]}; trained on {train_name}"
        + (f", then a {tcfg['finetune_steps']}-step distillation fine-tune of the compact model." if tcfg["finetune_steps"] else "."),
        "\nIt loads with the Auto classes once slimbert is imported:\n",
        "```python\nimport slimbert, transformers\n"
        "qa = transformers.pipeline(\"extractive-question-answering\", model=\"path/to/this/folder\")\n```\n",
        "## Size and cost\n",
        "| | teacher | pruned |\n|---|---|---|",
        f"| parameters | {summary['params_before']:,} | {summary['params_after']:,} |",
        f"| encoder GFLOPs per {r['seq_len']}-token window | {r['encoder_flops_before'] / 1e9:.3f} | "
        f"{r['encoder_flops_after'] / 1e9:.3f} ({r['flops_ratio']:.2f}x fewer) |\n",
        f"Per layer (teacher: {t.num_attention_heads} heads, FFN width {t.intermediate_size}):\n",
        "| layer | heads | FFN width | parameters |\n|---|---|---|---|",
        *(f"| {x['layer']} | {x['heads']} | {x['ffn']} | {x['params']:,} |" for x in r["layers"]),
    ]
    before, after = summary.get("eval_before"), summary.get("eval_after")
    if after:
        n = after.get("n")
        out += [
            "\n## Scores measured in the run\n",
            f"On {eval_name}" + (f", {n} questions" if n is not None else "") + f" (official {TASKS[task]} metric, in %):\n",
            "| score | teacher | pruned |\n|---|---|---|",
            *(f"| {k} | {before[k]:.2f} | {after[k]:.2f} |" if before else f"| {k} | | {after[k]:.2f} |"
              for k in SCORES if k in after),
        ]
    else:
        out.append("\n## Scores\n\nNot measured in the run (no eval data was given).")
    out += ["\n## Recipe\n", "The run's PruneConfig and TrainConfig, as `slimbert prune` flags:\n",
            "| flag | value |\n|---|---|", *(f"| `--{k.replace('_', '-')}` | {v} |" for k, v in [*pcfg.items(), *tcfg.items()])]
    return "\n".join(out) + "\n"
