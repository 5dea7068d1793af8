"""Hard-concrete gates: statistics, attachment to unmodified models, exactness with gates open."""

import copy
import math

import pytest
import torch

import slimbert
from slimbert.gates import BETA, GAMMA, ZETA, HardConcreteGate, prunable_parameters, unit_costs
from tests.conftest import random_batch, tiny_model


def test_eval_gate_is_deterministic_and_matches_formula():
    g = HardConcreteGate(5, 0.0).eval()
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([-5.0, -2.0, 0.0, 1.0, 5.0]))
    z = g()
    expected = [max(0.0, min(1.0, (1 / (1 + math.exp(-a))) * (ZETA - GAMMA) + GAMMA)) for a in [-5, -2, 0, 1, 5]]
    assert torch.allclose(z, torch.tensor(expected), atol=1e-6)
    assert torch.equal(z, g())  # no sampling in eval mode
    assert z[0] == 0 and z[-1] == 1  # hard zeros and ones exist


def test_training_samples_match_prob_open():
    g = HardConcreteGate(1, 0.7).train()
    samples = torch.stack([g() for _ in range(20000)])
    assert samples.min() >= 0 and samples.max() <= 1
    p_open = float(g.prob_open().detach())
    assert abs(float((samples > 0).float().mean()) - p_open) < 0.015
    assert math.isclose(p_open, 1 / (1 + math.exp(-(0.7 - BETA * math.log(-GAMMA / ZETA)))), rel_tol=1e-6)


def test_gates_are_log_alpha_parameters_on_every_head_and_unit(arch):
    model = slimbert.add_gates(tiny_model(arch))
    names = [n for n, _ in model.named_parameters() if "log_alpha" in n]
    assert all(n.endswith("log_alpha") for n in names)
    gates = slimbert.get_gates(model)
    assert len(gates) == 3
    for g in gates:
        assert g.heads.log_alpha.numel() == 4 and g.units.log_alpha.numel() == 37
        assert g.attn_block.log_alpha.numel() == 1 and g.ffn_block.log_alpha.numel() == 1
    assert len(names) == 3 * 4


def test_all_open_gates_equal_the_original(arch):
    model = tiny_model(arch)
    batch = random_batch(model.config.vocab_size)
    ref = model(**batch)
    gated = slimbert.add_gates(copy.deepcopy(model), slimbert.PruneConfig(gate_init_keep=0.9999)).eval()
    assert all(bool((g.units.deterministic() == 1).all()) for g in slimbert.get_gates(gated))
    out = gated(**batch)
    torch.testing.assert_close(out.start_logits, ref.start_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.end_logits, ref.end_logits, atol=1e-5, rtol=0)


def test_padding_is_masked_in_gated_attention(arch):
    """Padded tokens must not change the real tokens' logits (the mask function is registered)."""
    gated = slimbert.add_gates(tiny_model(arch)).eval()
    batch = random_batch(gated.config.vocab_size, batch=1, seq=9, pad_from=None)
    short = gated(**batch).start_logits
    ids = torch.cat([batch["input_ids"], torch.full((1, 4), 7)], dim=1)
    mask = torch.cat([batch["attention_mask"], torch.zeros(1, 4, dtype=torch.long)], dim=1)
    padded = gated(input_ids=ids, attention_mask=mask).start_logits[:, :9]
    torch.testing.assert_close(padded, short, atol=1e-5, rtol=0)
    ids[0, 9:] = 99  # and what the padding holds does not matter
    torch.testing.assert_close(gated(input_ids=ids, attention_mask=mask).start_logits[:, :9], short, atol=1e-5, rtol=0)


def test_closed_head_gate_changes_output_and_gets_gradients(arch):
    gated = slimbert.add_gates(tiny_model(arch)).train()
    batch = random_batch(gated.config.vocab_size)
    out = gated(**batch)
    (out.start_logits.sum() + slimbert.expected_size(gated)).backward()
    for g in slimbert.get_gates(gated):
        assert g.heads.log_alpha.grad is not None and g.heads.log_alpha.grad.abs().sum() > 0
        assert g.units.log_alpha.grad is not None and g.ffn_block.log_alpha.grad is not None


def test_sizes_count_parameters_exactly():
    model = slimbert.add_gates(tiny_model("bert"))
    c_head, c_unit = unit_costs(model)
    assert (c_head, c_unit) == (4 * 32 * 8 + 3 * 8, 2 * 32 + 1)
    total = prunable_parameters(model)
    assert total == 3 * (4 * c_head + 37 * c_unit)
    gates = slimbert.get_gates(model)
    with torch.no_grad():
        for g in gates:
            for gate in (g.heads, g.units, g.attn_block, g.ffn_block):
                gate.log_alpha.fill_(10.0)
        gates[0].heads.log_alpha[:3] = -10.0  # 1 head left in layer 0
        gates[1].ffn_block.log_alpha[:] = -10.0  # no FFN in layer 1
        gates[2].units.log_alpha[:30] = -10.0  # 7 units left in layer 2
    kept = 4 * c_head * 2 + 1 * c_head + 37 * c_unit * 1 + 7 * c_unit
    assert slimbert.deterministic_size(model) == pytest.approx(kept / total, abs=1e-12)
    assert slimbert.expected_size(model).requires_grad


def test_add_gates_refuses_unsupported_and_twice():
    with pytest.raises(TypeError, match="BERT and RoBERTa extractive QA"):
        slimbert.add_gates(torch.nn.Linear(2, 2))
    model = slimbert.add_gates(tiny_model("bert"))
    with pytest.raises(ValueError, match="already has slimbert gates"):
        slimbert.add_gates(model)


def test_prune_config_validates_target():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"target must be in \(0, 1\]"):
            slimbert.PruneConfig(target=bad)
    with pytest.raises(ValueError, match="nothing to prune"):
        slimbert.PruneConfig(prune_heads=False, prune_ffn=False, prune_blocks=False)


@pytest.mark.parametrize("target", [0.9, 0.5, 0.2])
def test_snap_lands_on_the_target_with_hard_gates(target):
    model = slimbert.add_gates(tiny_model("bert"))
    with torch.no_grad():
        for g in slimbert.get_gates(model):
            g.heads.log_alpha.normal_()
            g.units.log_alpha.normal_()
    best_head = max(range(4), key=lambda i: float(slimbert.get_gates(model)[0].heads.log_alpha[i].detach()))
    size = slimbert.snap_gates(model, target)
    c_head, _ = unit_costs(model)
    assert target - c_head / prunable_parameters(model) <= size <= target + 1e-12
    assert size == slimbert.deterministic_size(model)
    for g in slimbert.get_gates(model):
        for gate in (g.heads, g.units, g.attn_block, g.ffn_block):
            assert set(gate.deterministic().tolist()) <= {0.0, 1.0}
    if target == 0.9:  # the most likely head survives
        assert slimbert.get_gates(model)[0].heads.deterministic()[best_head] == 1.0
