"""Training checkpoints that know which run made them: a fingerprint of the teacher, the training
windows and the settings that change the run, checked on ``resume``.

    fp = fingerprint(teacher, features, cfg, tcfg)    # flat dict, stored in every *_train_state.pt
    state = load_checkpoint(path, fp)                 # CheckpointError naming what differs
    clear_run_state(out_dir)                          # a fresh run leaves no stale state to resume
    state_digest(state)                               # ranks compare it at every checkpoint
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from dataclasses import asdict

import torch

from slimbert.io import atomic_torch_save

log = logging.getLogger(__name__)
SUFFIX = "train_state.pt"
# Settings that change what is logged, checked or where it runs, not what is trained.
NOT_THE_RUN = {"eval_every", "save_every", "log_every", "max_eval_examples", "cpu", "cache_teacher"}


class CheckpointError(ValueError):
    """A checkpoint that cannot continue this run (another run's, corrupt, or not fitting the model)."""


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def model_digest(model: torch.nn.Module) -> str:
    """The architecture (config minus bookkeeping) and every tensor's name, shape and float64 sum."""
    config = {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version", "dtype", "torch_dtype")}
    with torch.no_grad():
        tensors = [(k, list(v.shape), float(v.detach().double().sum())) for k, v in model.state_dict().items()]
    return _digest(config, tensors)


def state_digest(state: dict) -> str:
    """sha256 of every tensor's bytes and every other value, in key order: equal digests, equal states."""
    h = hashlib.sha256()
    for k, v in sorted(state["model"].items()) + sorted((k, v) for k, v in state.items() if k != "model"):
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()[:16]


def fingerprint(model, features, cfg, tcfg) -> dict:
    """What makes a run this run, flat, so a mismatch can be named field by field."""
    ids = features["input_ids"]
    n = len(ids)
    sample = [ids[i] for i in sorted({0, n // 2, n - 1})] if n else []  # a cheap data identity: count and three windows
    fp = {"model": model_digest(model), "training windows": _digest(n, sample)}
    prune = asdict(cfg)
    if prune["targets"] is None:  # fields a run without a family or latency budget never reads: absent, so
        del prune["targets"]      # checkpoints written before they existed still resume
        if prune["budget"] != "latency":
            del prune["latency_batch"], prune["latency_seq"]
    fp |= {f"prune.{k}": v for k, v in prune.items()}
    train = {k: v for k, v in asdict(tcfg).items() if k not in NOT_THE_RUN}
    if train["dropout"] is None:  # as above: absent unless set, so older checkpoints still resume
        del train["dropout"]
    fp |= {f"train.{k}": v for k, v in train.items()}
    return fp


def _differences(saved: dict, now: dict) -> str:
    keys = [k for k in dict.fromkeys([*now, *saved]) if saved.get(k) != now.get(k)]
    return ", ".join(k if k in ("model", "training windows") else f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in keys)


def load_checkpoint(path: str, fp: dict | None) -> dict:
    """The state saved at ``path``; CheckpointError when it is unreadable or another run's."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, not a torch file, unpickling failure: all mean "not usable"
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}); delete it, or pass --overwrite to start over") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a slimbert training checkpoint; delete it, or pass --overwrite to start over")
    saved = state.get("fingerprint")
    if saved is None:
        log.warning("%s predates run fingerprints: resuming without checking that it is this run's", path)
    elif fp is not None and saved != fp:
        raise CheckpointError(f"{path} belongs to another run (differs: {_differences(saved, fp)}); "
                              "resume with the same model, data and settings, or pass --overwrite to start over")
    return state


def load_weights(model: torch.nn.Module, state: dict, path: str) -> None:
    """``load_state_dict`` with a clear line when the checkpoint's tensors do not fit the model."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{path} does not fit this model ({first[1].strip() if len(first) > 1 else first[0]}); "
                              "resume with the model that made it, or pass --overwrite to start over") from e


def write_checkpoint(state: dict, path: str, fp: dict | None) -> None:
    atomic_torch_save(state | {"fingerprint": fp}, path)


def clear_run_state(out_dir: str, *files: str) -> None:
    """Remove a previous run's checkpoints, a killed write's leftovers and ``files``, so nothing stale is resumed."""
    stale = glob.glob(os.path.join(out_dir, f"*_{SUFFIX}")) + glob.glob(os.path.join(out_dir, "*.tmp"))
    for path in stale + [os.path.join(out_dir, f) for f in files]:
        if os.path.isfile(path):
            os.remove(path)
