"""Saves are whole: a save killed at any moment leaves the old complete model or the new one."""

import os
import random
import signal
import subprocess
import sys
import time

import torch
from transformers import AutoModelForQuestionAnswering

import slimbert
from slimbert.io import atomic_save_pretrained, atomic_torch_save, atomic_write_json
from tests.conftest import ROOT, random_batch
from tests.pruning.test_collapse import _gated

CHILD = """
import sys, torch, slimbert
from slimbert.io import atomic_save_pretrained, atomic_torch_save, atomic_write_json
a, b = torch.load(sys.argv[1], weights_only=False), torch.load(sys.argv[2], weights_only=False)
print("ready", flush=True)
i = 0
while True:  # save A and B in turn until killed
    atomic_save_pretrained(a if i % 2 == 0 else b, sys.argv[3], extra_files={"which.json": {"i": i}})
    i += 1
"""


def _two_structures(tmp_path):
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        gated = _gated("bert")
        with torch.no_grad():  # a different structure each: the config and the weights must match
            slimbert.get_gates(gated)[0].units.log_alpha[: 5 + 3 * seed] = -20.0
        models.append(slimbert.collapse(gated))
    paths = []
    for i, m in enumerate(models):
        paths.append(tmp_path / f"m{i}.pt")
        torch.save(m, paths[-1])
    return models, paths


def test_killed_saves_leave_the_old_or_the_new_model(tmp_path):
    (a, b), (pa, pb) = _two_structures(tmp_path)
    assert a.config.ffn_dims != b.config.ffn_dims
    out = tmp_path / "out"
    batch = random_batch(a.config.vocab_size)
    want = [m(**batch).start_logits for m in (a, b)]
    rng = random.Random(0)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    kills = 0
    while kills < 20:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(pa), str(pb), str(out)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.6))  # a random moment inside some save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if not (out / "config.json").exists():
            continue  # killed before the first save finished: nothing there, which is whole too
        loaded = AutoModelForQuestionAnswering.from_pretrained(out).eval()  # a mixed pair raises CheckpointError
        got = loaded(**batch).start_logits
        assert any(torch.equal(got, w) for w in want)
        assert (out / "which.json").exists()
    # a killed save cannot clean up after itself; the next save removes what it left
    atomic_save_pretrained(a, str(out))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "temporary folders left behind"
    assert torch.equal(AutoModelForQuestionAnswering.from_pretrained(out).eval()(**batch).start_logits, want[0])


def test_save_keeps_the_runs_checkpoints(tmp_path):
    (a, _), _ = _two_structures(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / "gated_train_state.pt").write_bytes(b"checkpoint")
    atomic_save_pretrained(a, str(out))
    assert (out / "gated_train_state.pt").read_bytes() == b"checkpoint"
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()


def test_saves_get_the_permissions_a_plain_write_would(tmp_path):
    """Temporary files are private (0600/0700); what a save publishes must be readable as usual."""
    (a, _), _ = _two_structures(tmp_path)
    old = os.umask(0o022)
    try:
        atomic_save_pretrained(a, str(tmp_path / "model"), extra_files={"result.json": {"x": 1}})
        atomic_write_json({"x": 1}, str(tmp_path / "one.json"))
        atomic_torch_save({"x": 1}, str(tmp_path / "state.pt"))
    finally:
        os.umask(old)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    for path in [*(tmp_path / "model").iterdir(), tmp_path / "one.json", tmp_path / "state.pt"]:
        assert path.stat().st_mode & 0o777 == 0o644, path
