"""The model card every pruned model carries: written in the same atomic save, Hub front matter, a
per-layer table that matches the config, and the scores of prune_result.json."""

import json
import os

from huggingface_hub import ModelCard
from transformers import AutoModelForQuestionAnswering

import slimbert
import slimbert.io


def test_pruned_model_carries_its_card(tmp_path, model_dir, tokenizer, squad_files, monkeypatch):
    real_publish, published = slimbert.io.publish_dir, []

    def publish(tmp, dst):  # the card is in the folder before it is published, not added after
        published.append(os.path.exists(os.path.join(tmp, "README.md")))
        real_publish(tmp, dst)

    monkeypatch.setattr(slimbert.io, "publish_dir", publish)
    out = tmp_path / "run"
    tcfg = slimbert.TrainConfig(max_steps=2, finetune_steps=1, batch_size=4, max_length=96, doc_stride=32,
                                max_train_examples=12, max_eval_examples=6)
    teacher = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    slimbert.prune(teacher, slimbert.PruneConfig(target=0.5, gate_init="uniform"), squad_files[0], squad_files[1],
                   tokenizer, tcfg, str(out))
    assert published == [True]

    result = json.loads((out / "prune_result.json").read_text())
    card = ModelCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers" and meta["base_model"] == model_dir
    assert {"pruning", "question-answering", "bert"} <= set(meta["tags"]) and "datasets" not in meta  # local files

    rows = [[c.strip() for c in line.strip("|").split("|")] for line in card.text.splitlines() if line.startswith("| ")]
    layers = [r for r in rows if r[0].isdigit()]
    assert [int(r[1]) for r in layers] == result["num_heads"] and [int(r[2]) for r in layers] == result["ffn_dims"]
    scores = {r[0]: r[1:] for r in rows if r[0] in ("exact", "f1", "HasAns_f1", "best_f1")}
    assert scores.keys() == {"exact", "f1", "HasAns_f1", "best_f1"}
    for k, (before, after) in scores.items():
        assert (before, after) == (f"{result['eval_before'][k]:.2f}", f"{result['eval_after'][k]:.2f}"), k
    assert "On `squad2-dev-slice.json`, 6 questions" in card.text
    assert f"{result['params_before']:,} | {result['params_after']:,}" in card.text
    assert "| `--target` | 0.5 |" in card.text and "| `--finetune-steps` | 1 |" in card.text
