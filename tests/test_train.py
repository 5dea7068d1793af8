"""The training loop end to end on a tiny model: result, save/load, exact resume, target control."""

import json

import pytest
import torch
from transformers import AutoModelForQuestionAnswering

import slimbert
import slimbert.train as train_mod
from tests.conftest import tiny_model

FAST = dict(batch_size=4, max_length=96, doc_stride=32, max_train_examples=40, max_eval_examples=12)


def _prune(tmp_path, tokenizer, squad_files, steps=6, **kw):
    cfg = slimbert.PruneConfig(target=0.5, target_warmup=0.5)
    tcfg = slimbert.TrainConfig(max_steps=steps, save_every=2, **(FAST | kw))
    return slimbert.prune(
        tiny_model("bert"), cfg, squad_files[0], squad_files[1], tokenizer=tokenizer, train_cfg=tcfg, out_dir=str(tmp_path)
    )


def test_prune_end_to_end(tmp_path, tokenizer, squad_files):
    result = _prune(tmp_path, tokenizer, squad_files)
    assert type(result.model).__name__ == "SlimBertForQuestionAnswering"
    assert 0.0 <= result.size <= 1.0
    assert result.params_after == sum(p.numel() for p in result.model.parameters())
    for scores in (result.eval_before, result.eval_after):
        assert scores["n"] == 12 and 0 <= scores["f1"] <= 100 and "HasAns_f1" in scores and "best_f1" in scores
    assert len(result.history) == 6 and all("expected_size" in r for r in result.history)
    saved = json.loads((tmp_path / "prune_result.json").read_text())
    assert saved["size"] == result.size and saved["num_heads"] == result.model.config.num_heads
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path)
    ids = torch.randint(5, 1000, (1, 20))
    assert torch.equal(loaded(input_ids=ids).start_logits, result.model(input_ids=ids).start_logits)
    assert not list(tmp_path.glob(".tmp-*")), "temporary save folders must not be left behind"


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, tokenizer, squad_files, monkeypatch):
    full = _prune(tmp_path / "full", tokenizer, squad_files, steps=5).model.state_dict()

    real_step, calls = train_mod._distill_step, {"n": 0}

    def dies_at_step_4(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed after the step-2 checkpoint, mid step 4
        return real_step(*a, **k)

    monkeypatch.setattr(train_mod, "_distill_step", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        _prune(tmp_path / "killed", tokenizer, squad_files, steps=5)
    monkeypatch.setattr(train_mod, "_distill_step", real_step)
    cfg = slimbert.PruneConfig(target=0.5, target_warmup=0.5)
    tcfg = slimbert.TrainConfig(max_steps=5, save_every=2, **FAST)
    resumed = slimbert.prune(
        tiny_model("bert"), cfg, squad_files[0], squad_files[1], tokenizer, tcfg, str(tmp_path / "killed"), resume=True
    ).model.state_dict()
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_lagrangian_tracks_the_target(tokenizer, squad_files):
    """The expected size falls toward the target and never far below the scheduled target."""
    result = slimbert.prune(
        tiny_model("bert"),
        slimbert.PruneConfig(target=0.3, target_warmup=0.3, snap=False),
        squad_files[0],
        None,
        tokenizer=tokenizer,
        train_cfg=slimbert.TrainConfig(max_steps=40, gate_lr=0.3, **(FAST | {"max_length": 64, "doc_stride": 16})),
    )
    sizes = [r["expected_size"] for r in result.history]
    assert sizes[-1] < sizes[0] - 0.2
    # the size is measured before each step's update; the floor applies after it
    for prev, row in zip(result.history, result.history[1:]):
        assert row["expected_size"] >= prev["target_now"] - 1e-3
    assert result.history[-1]["lambda1"] > 0
