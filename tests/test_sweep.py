"""The sweep on a tiny BERT: curve.csv/png, resuming without redoing points, baseline sizes, the CLI."""

import csv
import json

import pytest
import torch

import slimbert
import slimbert.sweep as sweep_mod
from slimbert.pruning.methods.baselines import baseline_gates, uniform_masks
from slimbert.cli import main
from slimbert.pruning.cost import prunable_parameters, unit_costs
from tests.conftest import tiny_model

TINY = dict(batch_size=4, max_length=64, doc_stride=24, max_train_examples=12, max_eval_examples=6)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: with a busy CPU, thread hand-offs cost 100x the arithmetic (0.2 s vs 2 ms a forward).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _read_csv(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_sweep_curve_resume_and_sizes(tmp_path, model_dir, squad_files, monkeypatch):
    out = tmp_path / "sweep"
    tcfg = slimbert.TrainConfig(max_steps=2, finetune_steps=1, **TINY)
    run = lambda cfg: sweep_mod.sweep(  # noqa: E731
        model_dir, *squad_files, [0.5, 0.3], ["uniform", "random", "l0"], out_dir=str(out), train_cfg=cfg, seq_len=64, repeats=2
    )
    rows = run(tcfg)

    columns, written = _read_csv(out / "curve.csv")
    assert tuple(columns) == sweep_mod.COLUMNS
    assert [(r["method"], float(r["target"])) for r in written] == [("teacher", 1.0)] + [
        (m, t) for m in ("uniform", "random", "l0") for t in (0.5, 0.3)
    ]
    assert all(0 <= float(r["f1"]) <= 100 and float(r["speedup"]) > 0 for r in written)
    assert (out / "curve.png").stat().st_size > 0

    # random and uniform keep the target exactly or just under it (by less than one head)
    teacher = tiny_model("bert")
    total, (c_head, _) = prunable_parameters(teacher), unit_costs(teacher)
    for r in rows:
        if r["method"] in ("random", "uniform"):
            kept = total - (rows[0]["params"] - r["params"])  # only heads and units were removed
            assert r["target"] * total - c_head < kept <= r["target"] * total, r
    uniform = json.loads((out / "points" / "uniform-0.3.json").read_text())
    assert len(set(uniform["num_heads"])) == 1 and len(set(uniform["ffn_dims"])) == 1

    # a second call redoes nothing; other settings are refused rather than mixed in
    def never(*a, **k):
        raise AssertionError("a finished point was redone")

    monkeypatch.setattr(sweep_mod, "prune", never)
    monkeypatch.setattr(sweep_mod, "evaluate", never)
    monkeypatch.setattr(sweep_mod, "compare", never)
    assert run(tcfg) == rows
    # a point made before a config field existed counts as made with that field's default
    path = out / "points" / "l0-0.5.json"
    point = json.loads(path.read_text())
    del point["settings"]["prune.gate_init"]
    path.write_text(json.dumps(point))
    assert run(tcfg) == rows
    point["settings"]["prune.gate_init"] = "fisher"
    path.write_text(json.dumps(point))
    with pytest.raises(sweep_mod.SweepError, match="prune.gate_init: 'fisher' -> 'uniform'"):
        run(tcfg)
    point["settings"]["prune.gate_init"] = "uniform"
    path.write_text(json.dumps(point))
    with pytest.raises(sweep_mod.SweepError, match="train.max_steps: 2 -> 3"):
        run(slimbert.TrainConfig(max_steps=3, finetune_steps=1, **TINY))


def test_baselines_respect_what_is_pruned():
    model = tiny_model("bert")
    heads, units = uniform_masks(model, slimbert.PruneConfig(target=0.5, prune_heads=False))
    assert heads.all() and units.sum(1).tolist() == [units[0].sum().item()] * 3 and not units.all()
    heads, units = uniform_masks(model, slimbert.PruneConfig(target=0.7, prune_ffn=False))
    assert units.all() and not heads.all()
    gated = baseline_gates(model, slimbert.PruneConfig(method="random", target=0.7, prune_ffn=False))
    assert all(g.units.kept().all() for g in slimbert.get_gates(gated))
    with pytest.raises(ValueError, match="out of reach"):  # the FFN alone is over a third of the tiny model
        baseline_gates(model, slimbert.PruneConfig(method="uniform", target=0.2, prune_ffn=False))


def test_sweep_cli(tmp_path, model_dir, squad_files, capsys):
    small = ["--batch-size", "4", "--max-length", "64", "--doc-stride", "24", "--max-train-examples", "8", "--max-eval-examples", "4"]
    args = ["sweep", "--model", model_dir, "--train", squad_files[0], "--eval", squad_files[1], "--out", str(tmp_path / "s"),
            "--seq-len", "64", *small]
    assert main(args + ["--targets", "0.5", "--methods", "uniform"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 2 and (tmp_path / "s" / "curve.png").exists()
    assert main(args + ["--targets", "0.5", "--methods", "magic"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(args + ["--targets", "1.5"]) == 2
    assert "targets must be fractions" in capsys.readouterr().err
