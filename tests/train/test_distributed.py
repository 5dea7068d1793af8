"""Two CPU processes (torchrun, gloo) prune a tiny model: ranks agree on weights, gates and λ at
every checkpoint, only rank 0 writes and prints, and a run killed on one rank and resumed ends where
an uninterrupted one does.

This file is also the worker torchrun starts: ``python -m torch.distributed.run --nproc_per_node 2
tests/train/test_distributed.py <slimbert prune args>`` runs the CLI with records in $DIST_LOG.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def _worker(argv: list[str]) -> int:
    """``slimbert prune`` on this rank, recording what the test checks in $DIST_LOG.rank<r>."""
    import slimbert.api
    import slimbert.io
    import slimbert.train.checkpoint
    import slimbert.train.loop as loop
    from slimbert.cli import main

    rank = int(os.environ["RANK"])
    log = open(f"{os.environ['DIST_LOG']}.rank{rank}", "a")

    def record(**row):
        log.write(json.dumps(row) + "\n")
        log.flush()

    write_checkpoint = loop.write_checkpoint

    def checkpoint(state, path, fp):  # rank 0 writes: what every rank's digest was at this checkpoint
        record(file=os.path.basename(path), step=state["step"], digests=state["rank_digests"])
        write_checkpoint(state, path, fp)

    loop.write_checkpoint = checkpoint
    for module, name in ((slimbert.io, "publish_dir"), (slimbert.train.checkpoint, "atomic_torch_save"),
                         (slimbert.api, "clear_run_state")):
        real = getattr(module, name)

        def wrote(*a, _real=real, _name=name, **k):
            record(wrote=_name)
            return _real(*a, **k)

        setattr(module, name, wrote)

    die_at = int(os.environ.get("DIE_AT_STEP", "0"))
    if die_at and rank == 1:  # a kill of one rank mid-step, after the first checkpoint
        distill, calls = loop._distill_step, [0]

        def step(*a, **k):
            calls[0] += 1
            if calls[0] == die_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return distill(*a, **k)

        loop._distill_step = step
    return main(argv)


def _torchrun(args: list[str], log: Path, **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, *args]
    env = os.environ | {"DIST_LOG": str(log), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)} | env
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def _records(log: Path, rank: int) -> list[dict]:
    path = Path(f"{log}.rank{rank}")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_two_processes_agree_write_once_and_resume_exactly(tmp_path, model_dir, squad_files):
    args = ["prune", "--model", model_dir, "--train", squad_files[0], "--eval", squad_files[1], "--cpu",
            "--target", "0.5", "--gate-init", "uniform", "--max-steps", "5", "--save-every", "2", "--eval-every", "4",
            "--finetune-steps", "3", "--batch-size", "4", "--max-length", "96", "--doc-stride", "32",
            "--max-train-examples", "24", "--max-eval-examples", "4"]
    full, killed = tmp_path / "full", tmp_path / "killed"

    run = _torchrun(args + ["--out", str(full)], tmp_path / "full.log")
    assert run.returncode == 0, run.stderr[-3000:]
    summaries = [line for line in run.stdout.splitlines() if line.startswith("{\"size\"")]
    evals = [line for line in run.stdout.splitlines() if line.startswith("{\"step\"")]
    assert len(summaries) == 1 and len(evals) == 1, run.stdout  # rank 0 alone prints
    assert run.stderr.count("pruning took") == 1
    ckpts = _records(tmp_path / "full.log", 0)
    assert [(r["file"], r["step"]) for r in ckpts if "file" in r] == [
        ("gated_train_state.pt", 2), ("gated_train_state.pt", 4), ("gated_train_state.pt", 5),
        ("finetune_train_state.pt", 2), ("finetune_train_state.pt", 3)]
    for r in ckpts:  # every checkpoint: both ranks' weights, gates and λ hash alike
        assert "wrote" in r or (len(r["digests"]) == 2 and r["digests"][0] == r["digests"][1]), r
    assert _records(tmp_path / "full.log", 1) == []  # rank 1 wrote nothing
    state = torch.load(full / "gated_train_state.pt", weights_only=False)
    assert state["processes"] == 2 and len(state["rng"]) == 2 and state["lambdas"].abs().sum() > 0

    run = _torchrun(args + ["--out", str(killed)], tmp_path / "killed.log", DIE_AT_STEP="4")
    assert run.returncode != 0 and not (killed / "prune_result.json").exists()
    run = _torchrun(args + ["--out", str(killed), "--resume"], tmp_path / "killed.log")
    assert run.returncode == 0, run.stderr[-3000:]
    resumed = [(r["file"], r["step"], r["digests"]) for r in _records(tmp_path / "killed.log", 0) if "file" in r]
    assert resumed == [(r["file"], r["step"], r["digests"]) for r in ckpts if "file" in r]  # killed after step 2
    assert _records(tmp_path / "killed.log", 1) == []
    a, b = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = (json.loads((d / "prune_result.json").read_text()) for d in (full, killed))
    assert ra["size"] == rb["size"] and ra["eval_after"].pop("seconds") and rb["eval_after"].pop("seconds")
    assert ra["eval_after"] == rb["eval_after"]
    assert (killed / "README.md").exists()


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
