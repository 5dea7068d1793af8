"""A family of models from one gate-training run (slimbert/family.py) on a tiny BERT: each member is
exactly an independent snap + collapse of the run's gate state at its milestone, the schedule walks
down through the targets and holds each, a killed family resumes to the same members, and the sweep
puts the family on its curve."""

import copy
import csv
import json
from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForQuestionAnswering

import slimbert
import slimbert.family as family_mod
import slimbert.pruning.methods.l0 as l0_mod
import slimbert.sweep as sweep_mod
import slimbert.train.loop as train_mod
from slimbert.curve import COLUMNS
from slimbert.pruning.collapse import collapse
from slimbert.pruning.gates import add_gates, gate_parameters, init_log_alpha, snap_gates
from slimbert.pruning.methods.l0 import close_dropped
from slimbert.train.loop import milestones, scheduled_target
from tests.conftest import random_batch, tiny_model

TARGETS = (0.8, 0.6, 0.4)
TINY = dict(batch_size=4, max_length=64, doc_stride=24, max_train_examples=12, max_eval_examples=6)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a busy CPU: thread hand-offs cost more than the arithmetic
    yield
    torch.set_num_threads(threads)


def _family(out, tokenizer, train, dev=None, resume=False, cfg=None, **kw):
    cfg = cfg or slimbert.PruneConfig(targets=TARGETS, gate_init="uniform", target_warmup=0.5, latency_seq=64)
    tcfg = slimbert.TrainConfig(**(dict(max_steps=6, finetune_steps=0, log_every=1) | TINY | kw))
    return slimbert.prune(tiny_model("bert"), cfg, train, dev, tokenizer, tcfg, str(out), resume=resume)


def test_the_schedule_walks_down_and_holds_each_target():
    one = slimbert.PruneConfig(target=0.5, target_warmup=0.3)
    old = [0.98 - (0.98 - 0.5) * min(1.0, (s + 1) / 6) for s in range(20)]  # the single-target schedule as it was
    assert [scheduled_target(s, 20, 0.98, one) for s in range(20)] == old
    fam = slimbert.PruneConfig(targets="0.8,0.6,0.4", target_warmup=0.5)
    assert fam.targets == TARGETS and fam.target == 0.4
    ends = milestones(12, fam.targets)
    assert ends == [4, 8, 12]
    sizes = [scheduled_target(s, 12, 0.98, fam) for s in range(12)]
    assert sizes[:4] == [pytest.approx(0.98 - 0.18 * min(1.0, (s + 1) / 2)) for s in range(4)]  # falls over half its share
    assert sizes[4:] == [0.6] * 4 + [0.4] * 4  # later targets held from their share's first step


def test_the_step_to_the_next_target_closes_what_its_snap_drops():
    gated = add_gates(tiny_model("bert"), slimbert.PruneConfig(gate_init="uniform"))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in gate_parameters(gated):
            p.copy_(torch.randn_like(p) * 2 + 2)
    before = [p.clone() for p in gate_parameters(gated)]
    snapped = copy.deepcopy(gated)
    snap_gates(snapped, 0.5)
    close_dropped(gated, 0.5, keep=0.98)
    off = init_log_alpha(0.02)
    for a, b, s in zip(before, gate_parameters(gated), gate_parameters(snapped)):
        kept = s > 0
        assert torch.equal(b[kept], a[kept])  # what the snap keeps is left as it was
        assert torch.equal(b[~kept], a[~kept].clamp(max=off))  # the rest closed, none reopened
    again = copy.deepcopy(gated)
    snap_gates(again, 0.5)
    assert all(torch.equal(x, y) for x, y in zip(gate_parameters(again), gate_parameters(snapped)))


def test_each_member_is_an_exact_snap_of_the_run_at_its_milestone(tmp_path, tokenizer, squad_files, monkeypatch):
    seen = {}
    real = family_mod.snap_member

    def spy(gated, target, table=None, teacher=None):
        seen[target] = copy.deepcopy(gated.state_dict())
        return real(gated, target, table, teacher)

    monkeypatch.setattr(family_mod, "snap_member", spy)
    result = _family(tmp_path, tokenizer, *squad_files)
    assert list(seen) == list(TARGETS)
    steps = [r["target_now"] for r in result.history if r["step"] in milestones(6, TARGETS)]
    assert steps == pytest.approx(list(TARGETS))  # each member was taken where the schedule held its target

    batch = random_batch(30522, seq=20)
    for target in TARGETS:
        # independently: the same gate state, snapped at the target and collapsed
        gated = add_gates(tiny_model("bert"), slimbert.PruneConfig(gate_init="uniform"))
        gated.load_state_dict(seen[target])
        size = snap_gates(gated, target)
        expected = collapse(gated.eval())
        path = tmp_path / f"target-{target:g}"
        member = AutoModelForQuestionAnswering.from_pretrained(path)  # a complete model, through the Auto classes
        saved = json.loads((path / "prune_result.json").read_text())
        assert saved["size"] == size == result.members[target].size and size <= target
        assert member.config.num_heads == expected.config.num_heads and member.config.ffn_dims == expected.config.ffn_dims
        with torch.no_grad():
            a, b = member(**batch), expected(**batch)
        torch.testing.assert_close(a.start_logits, b.start_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.end_logits, b.end_logits, atol=1e-5, rtol=0)
    assert result.model is result.members[0.4].model

    with open(tmp_path / "family.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert [(r["method"], float(r["target"])) for r in rows] == [("teacher", 1.0)] + [("l0-family", t) for t in TARGETS]
    assert all(0 <= float(r["f1"]) <= 100 and float(r["speedup"]) > 0 for r in rows)
    assert (tmp_path / "family.png").stat().st_size > 0
    assert json.loads((tmp_path / "prune_result.json").read_text())["family"][1]["target"] == 0.8


def test_a_killed_family_resumes_to_the_same_members(tmp_path, tokenizer, squad_files, monkeypatch):
    full = _family(tmp_path / "full", tokenizer, squad_files[0], finetune_steps=1)

    real_step, calls = train_mod._distill_step, {"n": 0}

    def dies_in_the_second_share(*a, **k):
        calls["n"] += 1  # gate steps 1, 2, member 0.8's fine-tune step, gate steps 3, 4 (killed)
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(*a, **k)

    monkeypatch.setattr(train_mod, "_distill_step", dies_in_the_second_share)
    with pytest.raises(KeyboardInterrupt):
        _family(tmp_path / "killed", tokenizer, squad_files[0], finetune_steps=1)
    assert (tmp_path / "killed" / "target-0.8").is_dir() and not (tmp_path / "killed" / "target-0.6").exists()
    monkeypatch.setattr(train_mod, "_distill_step", real_step)
    resumed = _family(tmp_path / "killed", tokenizer, squad_files[0], finetune_steps=1, resume=True)

    for target in TARGETS:
        a, b = full.members[target].model.state_dict(), resumed.members[target].model.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (target, k)
    a, b = (torch.load(tmp_path / d / "gated_train_state.pt", weights_only=False) for d in ("full", "killed"))
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.parametrize("fall", ["fisher", "auto"])
def test_the_fisher_step_seats_each_later_target_on_its_fisher_mask(fall, tmp_path, tokenizer, squad_files, monkeypatch):
    started, seated = [], []
    real_init, real_seat = l0_mod.fisher_gate_init, family_mod.seat_gates
    monkeypatch.setattr(l0_mod, "fisher_gate_init", lambda *a, **k: started.append(real_init(*a, **k)) or started[-1])

    def spy(gated, masks, keep):
        real_seat(gated, masks, keep)
        seated.append((masks, [(g.heads.log_alpha.clone(), g.units.log_alpha.clone()) for g in slimbert.get_gates(gated)]))

    closed = []
    real_close = family_mod.close_dropped
    monkeypatch.setattr(family_mod, "seat_gates", spy)
    monkeypatch.setattr(family_mod, "close_dropped", lambda g, t, *a: closed.append(t) or real_close(g, t, *a))
    cfg = slimbert.PruneConfig(targets=TARGETS, gate_init="fisher", family_fall=fall, latency_seq=64)
    _family(tmp_path, tokenizer, squad_files[0], cfg=cfg)
    (masks,) = started
    assert [m for m, _ in seated] == [[masks[1]], [masks[2]]] and not closed  # after the members at 0.8 and 0.6
    on, off = init_log_alpha(cfg.gate_init_keep), init_log_alpha(1 - cfg.gate_init_keep)
    for mask, (_, state) in zip(masks[1:], seated):
        for l, (heads, units) in enumerate(state):
            for got, keep in ((heads, mask[0][l]), (units, mask[1][l])):
                torch.testing.assert_close(got, torch.where(keep.bool(), on, off).to(got), rtol=0, atol=1e-6)
    if fall == "fisher":  # asked for explicitly, it needs the Fisher start
        with pytest.raises(slimbert.ConfigError, match="Fisher start"):
            _family(tmp_path / "u", tokenizer, squad_files[0], cfg=replace(cfg, gate_init="uniform"))
    else:  # "auto" without it closes what the next target's snap drops
        _family(tmp_path / "u", tokenizer, squad_files[0], cfg=replace(cfg, gate_init="uniform"))
        assert closed == [0.6, 0.4] and len(seated) == 2


def test_sweep_runs_the_family_once_for_all_its_points(tmp_path, model_dir, squad_files, monkeypatch):
    calls = []
    real = sweep_mod._run_family
    monkeypatch.setattr(sweep_mod, "_run_family", lambda *a, **k: calls.append(1) or real(*a, **k))
    tcfg = slimbert.TrainConfig(max_steps=2, finetune_steps=0, **TINY)
    rows = sweep_mod.sweep(model_dir, *squad_files, [0.3, 0.5], ["l0-family"], out_dir=str(tmp_path), train_cfg=tcfg,
                           seq_len=64, repeats=2)
    assert len(calls) == 1
    assert [(r["method"], r["target"]) for r in rows] == [("teacher", 1.0), ("l0-family", 0.3), ("l0-family", 0.5)]
    assert rows[1]["params"] < rows[2]["params"] and rows[1]["seconds"] >= rows[2]["seconds"]  # 0.5 comes first in the run
    assert (tmp_path / "family-run" / "target-0.3" / "config.json").exists()
