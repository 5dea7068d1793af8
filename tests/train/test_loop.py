"""The training loop end to end on a tiny model: result, save/load, exact resume, target control."""

import json

import pytest
import torch
from transformers import AutoModelForQuestionAnswering

import slimbert
import slimbert.train.loop as train_mod
from tests.conftest import tiny_model

FAST = dict(finetune_steps=0, batch_size=4, max_length=96, doc_stride=32, max_train_examples=40, max_eval_examples=12)


def _prune(tmp_path, tokenizer, squad_files, steps=6, **kw):
    cfg = slimbert.PruneConfig(target=0.5, target_warmup=0.9, gate_init="uniform")
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
            raise KeyboardInterrupt  # killed after the step-2 checkpoint, mid step 4: inside the warm-up (4 steps)
        return real_step(*a, **k)

    monkeypatch.setattr(train_mod, "_distill_step", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        _prune(tmp_path / "killed", tokenizer, squad_files, steps=5)
    monkeypatch.setattr(train_mod, "_distill_step", real_step)
    cfg = slimbert.PruneConfig(target=0.5, target_warmup=0.9, gate_init="uniform")
    tcfg = slimbert.TrainConfig(max_steps=5, save_every=2, **FAST)
    resumed = slimbert.prune(
        tiny_model("bert"), cfg, squad_files[0], squad_files[1], tokenizer, tcfg, str(tmp_path / "killed"), resume=True
    ).model.state_dict()
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    # the gated run's last state: weights, gates (log_alpha), λ and the schedule, bit for bit
    a, b = (torch.load(tmp_path / d / "gated_train_state.pt", weights_only=False) for d in ("full", "killed"))
    assert a["step"] == b["step"] == 5 and a["start_size"] == b["start_size"]
    assert torch.equal(a["lambdas"], b["lambdas"]) and a["lambdas"].abs().sum() > 0
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [r["expected_size"] for r in a["history"]] == [r["expected_size"] for r in b["history"]]


def _lagrangian_run(tokenizer, squad_files, gate_init, steps, gate_lr=0.1):
    return slimbert.prune(
        tiny_model("bert"),
        slimbert.PruneConfig(target=0.3, target_warmup=0.3, snap=False, gate_init=gate_init),
        squad_files[0],
        None,
        tokenizer=tokenizer,
        train_cfg=slimbert.TrainConfig(max_steps=steps, gate_lr=gate_lr, log_every=1,
                                       **(FAST | {"max_length": 64, "doc_stride": 16})),
    ).history


def test_lagrangian_holds_the_target_from_the_fisher_start(tokenizer, squad_files):
    history = _lagrangian_run(tokenizer, squad_files, "fisher", 30)
    assert history[0]["expected_size"] == pytest.approx(0.3, abs=0.03)  # the warm start is at the target
    assert all(abs(r["expected_size"] - 0.3) < 0.05 for r in history)


def test_lagrangian_acts_both_ways_and_nothing_projects_the_gates(tokenizer, squad_files):
    """From P(open) = 0.98 the size follows the schedule down; once it undershoots, λ1 turns
    negative (it restarts from 0 at the crossing) and pushes it back up. No floor holds the gates
    at the scheduled target, so the size may go below it."""
    history = _lagrangian_run(tokenizer, squad_files, "uniform", 40, gate_lr=0.3)
    sizes = [r["expected_size"] for r in history]
    assert sizes[0] == pytest.approx(0.98, abs=1e-3)  # gate_init_keep is P(open), exactly
    assert min(sizes) < 0.3  # below the target: nothing projects the gates back
    below = [i for i, r in enumerate(history) if r["expected_size"] < r["target_now"]]
    assert max(r["lambda1"] for r in history[: below[0] + 1]) > 0  # pulled down while above
    assert min(r["lambda1"] for r in history[below[0] + 1 :]) < 0  # pushed back up once below


def test_cached_teacher_gives_the_live_teachers_loss(tokenizer, squad_files):
    """On the same batch, distillation from the cached logits equals distillation from a live teacher."""
    from slimbert.tasks import get_task
    from slimbert.train.teacher import add_teacher_logits, teacher_logits

    teacher, student = tiny_model("bert").eval(), tiny_model("bert", seed=1).eval()
    tcfg = slimbert.TrainConfig(**FAST)
    task = get_task("squad")
    features = task.training_windows(squad_files[0], tokenizer, tcfg)
    collate = task.collator(tokenizer)
    cache = teacher_logits(teacher, features, collate, batch_size=5, device="cpu")
    idx = [3, 0, 7, 12]  # lengths differ, so the batch pads differently from the cache's batches
    cfg = slimbert.PruneConfig(distill_alpha=0.5)
    live = train_mod._distill_step(student, teacher, collate([features[i] for i in idx]), cfg)
    cached_batch = add_teacher_logits(collate([features[i] for i in idx]), cache, idx)
    cached = train_mod._distill_step(student, None, cached_batch, cfg)  # no teacher: it must not run
    for a, b in zip(live, cached):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_teacher_logits_are_read_back_from_disk(tokenizer, squad_files, monkeypatch, tmp_path, caplog):
    """A second run on the same teacher and windows reads the logits (exactly) instead of running the
    teacher; another teacher or other windows compute their own; a damaged file is recomputed."""
    from slimbert.tasks import get_task
    from slimbert.train import teacher as teacher_mod

    monkeypatch.setenv("SLIMBERT_CACHE", str(tmp_path))
    task, tcfg = get_task("squad"), slimbert.TrainConfig(**FAST)
    features, collate = task.training_windows(squad_files[0], tokenizer, tcfg), task.collator(tokenizer)
    computed = []
    live = teacher_mod.teacher_logits
    monkeypatch.setattr(teacher_mod, "teacher_logits", lambda *a, **k: computed.append(1) or live(*a, **k))

    first = teacher_mod.cached_teacher_logits(tiny_model("bert"), features, collate, 5, "cpu")
    again = teacher_mod.cached_teacher_logits(tiny_model("bert"), features, collate, 5, "cpu")
    assert len(computed) == 1 and len(again) == len(first) == len(features)
    for a, b in zip(first, again):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    teacher_mod.cached_teacher_logits(tiny_model("bert", seed=1), features, collate, 5, "cpu")
    teacher_mod.cached_teacher_logits(tiny_model("bert"), features.select(range(len(features) - 1)), collate, 5, "cpu")
    swapped = tiny_model("bert")  # the same sum in every tensor, other weights
    with torch.no_grad():
        swapped.qa_outputs.weight[0, :2] = swapped.qa_outputs.weight[0, :2].flip(0).clone()
    teacher_mod.cached_teacher_logits(swapped, features, collate, 5, "cpu")
    assert len(computed) == 4
    for f in (tmp_path / "teacher-logits").iterdir():
        f.write_bytes(b"half a file")
    redone = teacher_mod.cached_teacher_logits(tiny_model("bert"), features, collate, 5, "cpu")
    assert len(computed) == 5 and all(torch.equal(a["start"], b["start"]) for a, b in zip(first, redone))
    assert "unreadable" in caplog.text


def test_dropout_setting_reaches_every_dropout(arch):
    model = tiny_model(arch, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3).train()
    ids = torch.randint(5, 100, (2, 16))
    assert not torch.equal(model(input_ids=ids).start_logits, model(input_ids=ids).start_logits)
    train_mod.set_dropout(model, 0.0)
    assert torch.equal(model(input_ids=ids).start_logits, model.eval()(input_ids=ids).start_logits)
    assert model.config.hidden_dropout_prob == model.config.attention_probs_dropout_prob == 0.0


def test_dropout_flag_is_a_number_or_a_clear_error():
    from slimbert.cli import build_parser

    args = build_parser().parse_args(["prune", "--model", "m", "--out", "o", "--dropout", "0"])
    assert args.dropout == 0.0 and slimbert.TrainConfig(dropout=args.dropout).dropout == 0.0
    with pytest.raises(slimbert.ConfigError, match="dropout must be in"):
        slimbert.TrainConfig(dropout=1.5)


def test_teacher_logit_cache_keeps_answer_types():
    from slimbert.train.teacher import _pack, _unpack

    cache = [{"start": torch.randn(n), "end": torch.randn(n), "answer_type": torch.randn(5)} for n in (3, 0, 7)]
    back = _unpack(_pack(cache))
    assert all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(cache, back))


def test_batches_are_bucketed_by_length_and_cover_the_epoch():
    lengths = [int(x) for x in torch.randint(20, 256, (1000,))]
    plan = train_mod.BatchPlan(1000, 16, seed=0, lengths=lengths, pool=10)
    steps = [plan.indices(s) for s in range(plan.steps_per_epoch)]
    seen = [i for b in steps for i in b]
    assert len(seen) == len(set(seen)) == 62 * 16  # one epoch: no window twice
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in steps) / len(steps)
    plain = train_mod.BatchPlan(1000, 16, seed=0)
    plain_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in (plain.indices(s) for s in range(62)))
    assert spread < 0.2 * plain_spread / 62
    assert steps[0] == train_mod.BatchPlan(1000, 16, seed=0, lengths=lengths, pool=10).indices(0)  # a function of (seed, step)
