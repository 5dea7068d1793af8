"""Loading a QA model with errors that say what to do, and atomic saves: write next to the
destination, then rename, so a kill never leaves half a file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch


class ModelLoadError(ValueError):
    """A model folder that cannot be loaded as an extractive QA model."""


def load_model(path: str, dtype=None):
    """A QA model and its tokenizer from a local folder (or hub id), with errors that say what to do."""
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

    from slimbert.models.arch import check_qa_model

    if not os.path.exists(path) and (os.path.isabs(path) or path.startswith(".") or path.count("/") > 1):
        raise ModelLoadError(f"cannot load a model config from {path!r}: no such folder. Give a folder made by save_pretrained.")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load a model config from {path!r}: {str(e).rstrip('.')}. Give a folder made by save_pretrained.") from e
    archs = getattr(config, "architectures", None) or []
    if config.model_type != "slimbert" and not any(a.endswith("ForQuestionAnswering") for a in archs):
        raise ModelLoadError(
            f"{path} is a {archs or config.model_type} checkpoint, not an extractive QA model; "
            "slimbert prunes BERT/RoBERTa models fine-tuned for question answering (e.g. on SQuAD 2.0)."
        )
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(path, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise ModelLoadError(f"cannot load the model or tokenizer in {path} ({type(e).__name__}: {e}); "
                             "save it again with save_pretrained, or download it again") from e
    check_qa_model(model)
    return model, tokenizer


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: str) -> None:
    """fsync every file under ``path`` and the folders themselves, so a rename publishes whole files."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(root)


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _default_mode(path: str) -> None:
    """The permissions a plain open()/mkdir() would have given ``path`` (and what is under it):
    mkstemp/mkdtemp make temporary files private (0600/0700), which a published save must not stay."""
    mask = os.umask(0)
    os.umask(mask)
    if not os.path.isdir(path):
        os.chmod(path, 0o666 & ~mask)
        return
    for root, _, files in os.walk(path):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def publish_dir(tmp: str, dst: str) -> None:
    """Make the complete folder ``tmp`` appear at ``dst`` in one step: fsync, then an atomic exchange
    with the old ``dst`` (or a rename where there is none), then remove the old one. A kill at any
    point leaves at ``dst`` either the old complete folder or the new complete one."""
    _default_mode(tmp)
    _fsync_tree(tmp)
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.exists(dst):
        os.replace(tmp, dst)
    elif _exchange(tmp, dst):
        shutil.rmtree(tmp)  # now holds the old folder
    else:  # no atomic exchange (non-Linux): the old folder is moved aside for the shortest moment
        old = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(dst)}.old-")
        os.rmdir(old)
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old)
    _fsync_dir(parent)


def cache_dir(kind: str) -> str:
    """Where slimbert keeps what it measured or computed once (latency tables, teacher logits):
    ``$SLIMBERT_CACHE/kind``, default ``~/.cache/slimbert/kind``. Safe to delete."""
    root = os.environ.get("SLIMBERT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "slimbert")
    return os.path.join(root, kind)


def atomic_torch_save(obj, path: str) -> None:
    """``torch.save`` to a temporary sibling, fsynced, renamed into place."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _default_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(obj, path: str) -> None:
    """JSON to a temporary sibling, fsynced, renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)) or ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    _default_mode(tmp)
    os.replace(tmp, path)


def atomic_save_pretrained(model, out_dir: str, tokenizer=None, extra_files: dict | None = None) -> None:
    """``save_pretrained`` of the whole folder at once: written to a temporary sibling, fsynced and
    swapped into place (:func:`publish_dir`), so ``out_dir`` never holds a mix of two saves.

    Files of ``out_dir`` the save does not write (training checkpoints) are carried into the new
    folder (hard links where possible). ``extra_files`` (name -> str, written as text, or an object,
    written as JSON) go into it too, so they appear with the model in the same step. Temporary
    siblings a killed save left behind are removed first (one writer per folder at a time).
    """
    out_dir = os.path.abspath(out_dir)
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    for stale in os.listdir(parent):  # what saves killed before they could clean up left behind
        if stale.startswith((f".{name}.tmp-", f".{name}.old-")):
            shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-")
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, obj in (extra_files or {}).items():
            if isinstance(obj, str):
                with open(os.path.join(tmp, name), "w") as f:  # publish_dir fsyncs the whole folder
                    f.write(obj)
            else:
                atomic_write_json(obj, os.path.join(tmp, name))
        if os.path.isdir(out_dir):
            for name in os.listdir(out_dir):
                src, dst = os.path.join(out_dir, name), os.path.join(tmp, name)
                if os.path.isfile(src) and not os.path.exists(dst) and not name.endswith(".tmp"):
                    try:
                        os.link(src, dst)
                    except OSError:
                        shutil.copy2(src, dst)
        publish_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
