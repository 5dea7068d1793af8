"""Collapse: the compact model equals the gated model it came from, for every irregular shape."""


import pytest
import torch
from transformers import AutoModelForQuestionAnswering

import slimbert
from slimbert.models.compact import NoHeads
from tests.conftest import random_batch, tiny_model


def _gated(arch, **kw):
    model = slimbert.add_gates(tiny_model(arch, **kw), slimbert.PruneConfig(prune_blocks=True)).eval()
    gates = slimbert.get_gates(model)
    with torch.no_grad():
        for g in gates:  # every gate strictly inside (0, 1): all values get folded
            for gate in (g.heads, g.units, g.attn_block, g.ffn_block):
                gate.log_alpha.uniform_(-0.5, 1.5)
        gates[0].heads.log_alpha[[0, 2, 3]] = -6.0  # layer 0: one head (odd count)
        gates[0].units.log_alpha[::2] = -6.0  # and an odd FFN width
        gates[1].attn_block.log_alpha[:] = -6.0  # layer 1: no heads at all
        gates[1].units.log_alpha[:] = -6.0  # and no FFN units: nothing left
        gates[2].ffn_block.log_alpha[:] = -6.0  # layer 2: heads but no FFN
    return model


def test_collapsed_equals_gated(arch):
    gated = _gated(arch)
    compact = slimbert.collapse(gated)
    assert compact.config.num_heads == [1, 0, 4]
    assert compact.config.ffn_dims == [18, 0, 0]
    assert isinstance(compact.model.encoder.layer[1].attention.self, NoHeads)
    batch = random_batch(gated.config.vocab_size, batch=3, seq=13, pad_from=5)
    want, got = gated(**batch), compact(**batch)
    torch.testing.assert_close(got.start_logits, want.start_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.end_logits, want.end_logits, atol=1e-5, rtol=0)


def test_collapse_odd_head_counts_and_gate_folding(arch):
    gated = slimbert.add_gates(tiny_model(arch, num_attention_heads=8, hidden_size=40, intermediate_size=23), slimbert.PruneConfig(prune_blocks=True)).eval()
    with torch.no_grad():
        for i, g in enumerate(slimbert.get_gates(gated)):
            g.heads.log_alpha.copy_(torch.tensor([-4.0, -3.0, -3.0, 1.0, 0.0, 1.0, 2.0, 3.0]).roll(i))  # 5 heads kept
            g.units.log_alpha.uniform_(-3, 2)
    compact = slimbert.collapse(gated)
    assert any(h % 2 == 1 for h in compact.config.num_heads)
    batch = random_batch(gated.config.vocab_size, batch=2, seq=9, pad_from=4)
    torch.testing.assert_close(compact(**batch).start_logits, gated(**batch).start_logits, atol=1e-5, rtol=0)
    assert sum(p.numel() for p in compact.parameters()) < sum(p.numel() for p in gated.parameters())


def test_cpp_and_torch_collapse_are_bit_identical():
    gated = _gated("bert")
    a = slimbert.collapse(gated, backend="torch").state_dict()
    b = slimbert.collapse(gated, backend="cpp").state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_collapse_without_gates_is_a_clear_error():
    with pytest.raises(ValueError, match="no slimbert gates"):
        slimbert.collapse(tiny_model("bert"))


def test_save_load_round_trip(arch, tmp_path):
    compact = slimbert.collapse(_gated(arch))
    compact.save_pretrained(tmp_path)
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "SlimBertForQuestionAnswering"
    assert loaded.config.num_heads == compact.config.num_heads
    assert (tmp_path / "model.safetensors").exists()
    batch = random_batch(compact.config.vocab_size)
    assert torch.equal(loaded(**batch).start_logits, compact(**batch).start_logits)


def test_pipeline_on_compact_model(tmp_path, tokenizer):
    import transformers

    gated = slimbert.add_gates(tiny_model("bert"), slimbert.PruneConfig(gate_init_keep=0.99)).eval()
    compact = slimbert.collapse(gated)
    compact.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    qa = transformers.pipeline("extractive-question-answering", model=str(tmp_path))
    context = "The Eiffel Tower is in Paris. " * 3
    out = qa(question="Where is the tower?", context=context)
    assert set(out) == {"answer", "score", "null_score_diff"}
    assert out["answer"] == "" or out["answer"] in context
    many = qa([{"question": "Where?", "context": context}, {"question": "What?", "context": context}])
    assert len(many) == 2
