"""The compact and gated models run the Triton kernels when asked (CPU: under TRITON_INTERPRET=1)."""

import pytest
import torch

import slimbert
import slimbert.hf.attention
import slimbert.models.compact
from tests.conftest import random_batch
from tests.pruning.test_collapse import _gated


def _spy(monkeypatch, module, name):
    calls = {"n": 0}
    real = getattr(module, name)

    def wrapped(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(module, name, wrapped)
    return calls


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_triton_path_matches_torch_path(arch, monkeypatch):
    gated = _gated(arch)
    compact = slimbert.collapse(gated)
    batch = random_batch(compact.config.vocab_size, batch=2, seq=9, pad_from=4)
    monkeypatch.setenv("SLIMBERT_KERNELS", "torch")
    want_compact, want_gated = compact(**batch), gated(**batch)

    monkeypatch.setenv("SLIMBERT_KERNELS", "triton")
    attn_calls = _spy(monkeypatch, slimbert.hf.attention, "triton_attention")
    ffn_calls = _spy(monkeypatch, slimbert.models.compact, "triton_ffn")
    got_compact, got_gated = compact(**batch), gated(**batch)
    # compact: 2 layers with heads (one has none); 3 FFN calls (width 0 returns its bias). gated: 3 layers.
    assert attn_calls["n"] == 2 + 3 and ffn_calls["n"] == 3
    for got, want in ((got_compact, want_compact), (got_gated, want_gated)):
        torch.testing.assert_close(got.start_logits, want.start_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.end_logits, want.end_logits, atol=1e-4, rtol=1e-4)


def test_bad_kernel_switch_is_a_clear_error(monkeypatch):
    compact = slimbert.collapse(_gated("bert"))
    monkeypatch.setenv("SLIMBERT_KERNELS", "cuda-please")
    with pytest.raises(ValueError, match="SLIMBERT_KERNELS must be auto, torch or triton"):
        compact(**random_batch(compact.config.vocab_size))


def test_gated_training_with_attention_dropout_runs_the_kernel(monkeypatch):
    # BERT trains with attention_probs_dropout_prob 0.1: the gated model must keep the fused kernel
    # (dropout inside it) and still give every head gate a gradient.
    gated = _gated("bert", attention_probs_dropout_prob=0.1).train()
    batch = random_batch(gated.config.vocab_size, batch=2, seq=9, pad_from=4)
    monkeypatch.setenv("SLIMBERT_KERNELS", "triton")
    rates = []
    real = slimbert.hf.attention.triton_attention
    monkeypatch.setattr(slimbert.hf.attention, "triton_attention", lambda *a, **k: rates.append(k["dropout_p"]) or real(*a, **k))
    out = gated(**batch)
    (out.start_logits.sum() + out.end_logits.sum()).backward()
    assert rates == [0.1] * 3
    for g in slimbert.get_gates(gated):
        assert g.heads.log_alpha.grad is not None and torch.isfinite(g.heads.log_alpha.grad).all()
    gated.eval()
    gated(**batch)
    assert rates[3:] == [0.0] * 3  # eval mode: no dropout


def test_a_failing_kernel_falls_back_once_with_a_warning(monkeypatch):
    # On a GPU (SLIMBERT_KERNELS=auto) a kernel that fails to compile or launch must not end a prune.
    import slimbert.kernels._utils as ku

    attention_module = __import__("slimbert.kernels.attention", fromlist=["_"])
    compact = slimbert.collapse(_gated("bert"))
    batch = random_batch(compact.config.vocab_size, batch=2, seq=9, pad_from=4)
    monkeypatch.setenv("SLIMBERT_KERNELS", "torch")
    want = compact(**batch).start_logits

    def broken(*a, **k):
        raise RuntimeError("PTX JIT compilation failed\nmore detail")

    monkeypatch.setattr(attention_module, "_attn_fwd", broken)
    monkeypatch.setattr(ku, "_FAILED", set())
    monkeypatch.setenv("SLIMBERT_KERNELS", "triton")  # asked for the kernels: the failure is an error
    with pytest.raises(RuntimeError, match="PTX JIT"):
        compact(**batch)
    monkeypatch.setenv("SLIMBERT_KERNELS", "auto")
    monkeypatch.setattr(slimbert.hf.attention, "use_triton", lambda t: True)  # as on a CUDA tensor
    monkeypatch.setattr(attention_module, "use_triton", lambda t: True)
    monkeypatch.setattr(slimbert.models.compact, "use_triton", lambda t: False)
    with pytest.warns(RuntimeWarning, match=r"Triton attention kernel failed \(RuntimeError: PTX JIT compilation failed\)") as rec:
        got = compact(**batch).start_logits
    assert len([w for w in rec if "Triton attention" in str(w.message)]) == 1  # once, not per layer
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert ku._FAILED == {"attention"}


def test_compiled_compact_model_has_no_graph_breaks(monkeypatch):
    # The kernels are torch.library custom ops: torch.compile keeps the whole forward in one graph.
    monkeypatch.setenv("SLIMBERT_KERNELS", "triton")
    compact = slimbert.collapse(_gated("bert"))
    batch = random_batch(compact.config.vocab_size, batch=2, seq=9, pad_from=4)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(compact)(**batch)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    ops = {str(n.target) for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"}
    assert any("slimbert.attention_fwd" in o for o in ops) and any("slimbert.ffn_fwd" in o for o in ops), ops


def test_export_with_the_triton_path_selected(monkeypatch):
    # torch.export (what the ONNX exporter builds on) gets the reference math, which exports anywhere.
    monkeypatch.setenv("SLIMBERT_KERNELS", "triton")
    compact = slimbert.collapse(_gated("bert"))
    batch = random_batch(compact.config.vocab_size, batch=2, seq=9, pad_from=4)
    program = torch.export.export(compact, (), dict(batch))
    assert not any("slimbert" in str(n.target) for n in program.graph.nodes)
    got, want = program.module()(**batch), compact(**batch)
    torch.testing.assert_close(got.start_logits, want.start_logits, atol=1e-4, rtol=1e-4)
