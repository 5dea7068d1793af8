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
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

    from slimbert.models.arch import check_qa_model

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load a model config from {path!r}: {e}. Give a folder made by save_pretrained.") from e
    archs = getattr(config, "architectures", None) or []
    if config.model_type != "slimbert" and not any(a.endswith("ForQuestionAnswering") for a in archs):
        raise ModelLoadError(
            f"{path} is a {archs or config.model_type} checkpoint, not an extractive QA model; "
            "slimbert prunes BERT/RoBERTa models fine-tuned for question answering (e.g. on SQuAD 2.0)."
        )
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(path, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"cannot load the model or tokenizer in {path}: {e}") from e
    check_qa_model(model)
    return model, tokenizer


def atomic_torch_save(obj, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(obj, path: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)) or ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def atomic_save_pretrained(model, out_dir: str, tokenizer=None, extra_json: dict | None = None) -> None:
    """``save_pretrained`` into a temp folder inside ``out_dir``, then rename each file into place.

    Every file is either the old one or the complete new one; other files in ``out_dir`` (training
    checkpoints) are left alone. ``extra_json`` files are written last, so their presence marks a
    finished save.
    """
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=out_dir, prefix=".tmp-save-")
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
        for name, obj in (extra_json or {}).items():
            atomic_write_json(obj, os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
