"""Atomic saves: write next to the destination, then rename, so a kill never leaves half a file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch


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
