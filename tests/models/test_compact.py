"""The compact model beyond eager PyTorch: torch.compile, ONNX, and loading errors."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForQuestionAnswering

import slimbert
from slimbert.models.compact import CheckpointError, SlimBertConfig
from tests.conftest import random_batch
from tests.pruning.test_collapse import _gated


@pytest.fixture(scope="module")
def compact():
    return slimbert.collapse(_gated("bert"))  # has a layer with nothing left and one with one head


def test_config_validates_per_layer_lists():
    with pytest.raises(ValueError, match="one entry per layer"):
        SlimBertConfig(num_hidden_layers=2, num_heads=[1], ffn_dims=[3, 4])
    with pytest.raises(ValueError, match="base_model_type"):
        SlimBertConfig(base_model_type="gpt2")


def test_torch_compile(compact):
    batch = random_batch(compact.config.vocab_size, batch=2, seq=13, pad_from=5)
    want = compact(**batch).start_logits
    got = torch.compile(compact)(**batch).start_logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_onnx_export_runs_in_onnxruntime(compact, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the [test] extra")
    batch = random_batch(compact.config.vocab_size, batch=2, seq=13, pad_from=5)
    path = tmp_path / "compact.onnx"
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    torch.onnx.export(compact, (), str(path), kwargs=batch, dynamic_shapes=dyn, dynamo=True,
                      output_names=["start_logits", "end_logits"])
    session = ort.InferenceSession(str(path))
    other = random_batch(compact.config.vocab_size, batch=3, seq=20, pad_from=9, seed=5)  # other shape
    for b in (batch, other):
        start, end = session.run(None, {k: v.numpy() for k, v in b.items()})
        want = compact(**b)
        np.testing.assert_allclose(start, want.start_logits.detach().numpy(), atol=1e-4)
        np.testing.assert_allclose(end, want.end_logits.detach().numpy(), atol=1e-4)


def test_checkpoint_that_does_not_match_its_config(compact, tmp_path):
    compact.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["num_heads"] = [4, 4, 4]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model.safetensors does not match the per-layer num_heads"):
        AutoModelForQuestionAnswering.from_pretrained(tmp_path)


def test_corrupt_safetensors(compact, tmp_path):
    compact.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt or truncated"):
        AutoModelForQuestionAnswering.from_pretrained(tmp_path)


def test_hidden_states_and_attentions_like_transformers(compact):
    """output_hidden_states/output_attentions give what transformers' QA models give (distill_hidden
    fine-tunes the compact model through them)."""
    batch = random_batch(compact.config.vocab_size)
    out = compact(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == compact.config.num_hidden_layers + 1
    assert out.hidden_states[-1].shape == (*batch["input_ids"].shape, compact.config.hidden_size)
    gated = _gated("bert")
    ref = gated(**batch, output_hidden_states=True)
    for a, b in zip(out.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _spawn_forward(model, batch, queue):
    with torch.no_grad():  # a plain list: a tensor would travel as a shared-memory handle that dies with this process
        queue.put(model(**batch).start_logits.tolist())


def test_whole_model_pickles_saves_copies_and_crosses_a_spawn(tmp_path):
    import copy
    import multiprocessing as mp
    import pickle

    # a fresh model: once output_hidden_states has run, transformers' own capture hooks (closures)
    # make any of its models unpicklable, BertForQuestionAnswering included
    compact = slimbert.collapse(_gated("bert"))
    batch = random_batch(compact.config.vocab_size)
    want = compact(**batch).start_logits
    torch.save(compact, tmp_path / "whole.pt")
    for clone in (torch.load(tmp_path / "whole.pt", weights_only=False), pickle.loads(pickle.dumps(compact)), copy.deepcopy(compact)):
        assert type(clone.model.encoder.layer[0]).__name__ == "CompactBertLayer"
        torch.testing.assert_close(clone(**batch).start_logits, want, rtol=0, atol=0)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_spawn_forward, args=(compact, batch, queue))
    proc.start()
    got = torch.tensor(queue.get(timeout=300))
    proc.join(timeout=60)
    assert proc.exitcode == 0
    torch.testing.assert_close(got, want.detach(), rtol=1e-6, atol=1e-6)

