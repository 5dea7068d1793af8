"""Checkpoints know their run: resume refuses another model, data or setting (naming it), a
checkpoint that does not fit, and a fresh run or --overwrite leaves no stale state behind."""

import json

import pytest
import torch

import slimbert
from slimbert.cli import main
from slimbert.train.checkpoint import CheckpointError
from tests.conftest import tiny_model

FAST = dict(max_steps=2, save_every=2, finetune_steps=0, batch_size=4, max_length=96, doc_stride=32, max_train_examples=12)


def _prune(out, tokenizer, train, seed=0, resume=False, cfg=None, **kw):
    cfg = cfg or slimbert.PruneConfig(target=0.5, gate_init="uniform")
    return slimbert.prune(tiny_model("bert", seed=seed), cfg, train, None, tokenizer, slimbert.TrainConfig(**(FAST | kw)),
                          str(out), resume=resume)


@pytest.fixture
def run_dir(tmp_path, tokenizer, squad_files):
    _prune(tmp_path / "run", tokenizer, squad_files[0])
    state = torch.load(tmp_path / "run" / "gated_train_state.pt", weights_only=False)
    assert state["fingerprint"]["prune.target"] == 0.5 and len(state["fingerprint"]["model"]) == 16
    return tmp_path / "run"


def test_resume_refuses_another_run_and_names_what_differs(run_dir, tokenizer, squad_files):
    other = slimbert.PruneConfig(target=0.4, gate_init="uniform")
    with pytest.raises(CheckpointError, match=r"differs: prune\.target 0\.5 -> 0\.4\); .*--overwrite"):
        _prune(run_dir, tokenizer, squad_files[0], resume=True, cfg=other)
    with pytest.raises(CheckpointError, match=r"differs: model\)"):
        _prune(run_dir, tokenizer, squad_files[0], seed=1, resume=True)
    with pytest.raises(CheckpointError, match=r"differs: training windows, train\.max_train_examples 12 -> 8\)"):
        _prune(run_dir, tokenizer, squad_files[0], resume=True, max_train_examples=8)
    # settings that do not change the run (logging, checks, checkpoints) may change on resume
    _prune(run_dir, tokenizer, squad_files[0], resume=True, log_every=1, save_every=1, eval_every=5)


def test_resume_refuses_a_checkpoint_that_does_not_fit(run_dir, tokenizer, squad_files):
    path = run_dir / "gated_train_state.pt"
    state = torch.load(path, weights_only=False)
    del state["fingerprint"]  # as an older slimbert wrote them: nothing to compare, so the shapes must speak
    key = next(k for k in state["model"] if k.endswith("qa_outputs.weight"))
    state["model"][key] = torch.zeros(3, 3)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        _prune(run_dir, tokenizer, squad_files[0], resume=True)


def test_a_fresh_run_and_overwrite_remove_the_old_state(run_dir, model_dir, tokenizer, squad_files, capsys):
    stale = run_dir / "finetune_train_state.pt"
    stale.write_bytes(b"an older run's fine-tune state")
    _prune(run_dir, tokenizer, squad_files[0])  # resume=False: a new run
    assert not stale.exists()

    # the CLI: --overwrite starts over, so a later --resume cannot pick up the old run's checkpoint
    out = str(run_dir.parent / "cli")
    args = ["prune", "--model", model_dir, "--train", squad_files[0], "--out", out, "--max-steps", "2", "--save-every", "2",
            "--finetune-steps", "0", "--batch-size", "4", "--max-length", "96", "--doc-stride", "32",
            "--max-train-examples", "12", "--gate-init", "uniform"]
    assert main(args) == 0
    (run_dir.parent / "cli" / "finetune_train_state.pt").write_bytes(b"stale")
    assert main(args + ["--target", "0.4"]) == 2  # a finished run is not silently replaced
    assert main(args + ["--target", "0.4", "--overwrite"]) == 0
    assert not (run_dir.parent / "cli" / "finetune_train_state.pt").exists()
    saved = torch.load(run_dir.parent / "cli" / "gated_train_state.pt", weights_only=False)
    assert saved["fingerprint"]["prune.target"] == 0.4
    assert json.loads((run_dir.parent / "cli" / "prune_result.json").read_text())["prune_config"]["target"] == 0.4
    capsys.readouterr()
    (run_dir.parent / "cli" / "prune_result.json").unlink()  # as if killed before the end
    assert main(args + ["--resume"]) == 2  # target 0.5 against the 0.4 run's checkpoint
    err = capsys.readouterr().err
    assert "prune.target 0.4 -> 0.5" in err and "Traceback" not in err


def test_demo_resumes_only_its_own_run(tmp_path, monkeypatch):
    import slimbert.api
    import slimbert.demo as demo

    calls = []

    def fake_prune(*a, resume=False, out_dir=None, **k):  # record what the demo asks for, stop before training
        calls.append(resume)
        raise KeyboardInterrupt

    monkeypatch.setattr(slimbert.api, "prune", fake_prune)
    out = tmp_path / "demo"
    for _ in range(2):  # absent -> fresh, then its own unfinished run -> resume
        with pytest.raises(KeyboardInterrupt):
            demo.run_demo(str(out))
    assert calls == [False, True] and (out / demo.MARKER).exists()
    (out / demo.RESULT).write_text("{}")
    with pytest.raises(slimbert.config.ConfigError, match="finished demo"):
        demo.run_demo(str(out))
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(str(out), overwrite=True)
    assert calls[-1] is False and not (out / demo.RESULT).exists()
