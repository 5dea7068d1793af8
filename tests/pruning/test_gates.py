"""Hard-concrete gates: statistics, attachment to unmodified models, exactness with gates open."""

import copy
import math

import pytest
import torch

import slimbert
from slimbert.pruning.cost import prunable_parameters, unit_costs
from slimbert.pruning.gates import BETA, GAMMA, ZETA, HardConcreteGate
from tests.conftest import random_batch, tiny_model

BLOCKS = slimbert.PruneConfig(prune_blocks=True)  # every gate kind: heads, units and whole blocks


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
    model = slimbert.add_gates(tiny_model(arch), BLOCKS)
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
    gated = slimbert.add_gates(tiny_model(arch), BLOCKS).eval()
    batch = random_batch(gated.config.vocab_size, batch=1, seq=9, pad_from=None)
    short = gated(**batch).start_logits
    ids = torch.cat([batch["input_ids"], torch.full((1, 4), 7)], dim=1)
    mask = torch.cat([batch["attention_mask"], torch.zeros(1, 4, dtype=torch.long)], dim=1)
    padded = gated(input_ids=ids, attention_mask=mask).start_logits[:, :9]
    torch.testing.assert_close(padded, short, atol=1e-5, rtol=0)
    ids[0, 9:] = 99  # and what the padding holds does not matter
    torch.testing.assert_close(gated(input_ids=ids, attention_mask=mask).start_logits[:, :9], short, atol=1e-5, rtol=0)


def test_closed_head_gate_changes_output_and_gets_gradients(arch):
    gated = slimbert.add_gates(tiny_model(arch), BLOCKS).train()
    batch = random_batch(gated.config.vocab_size)
    out = gated(**batch)
    (out.start_logits.sum() + slimbert.expected_size(gated)).backward()
    for g in slimbert.get_gates(gated):
        assert g.heads.log_alpha.grad is not None and g.heads.log_alpha.grad.abs().sum() > 0
        assert g.units.log_alpha.grad is not None and g.ffn_block.log_alpha.grad is not None


def test_sizes_count_parameters_exactly():
    model = slimbert.add_gates(tiny_model("bert"), BLOCKS)
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
    model = slimbert.add_gates(tiny_model("bert"), BLOCKS)
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
    model = slimbert.add_gates(tiny_model("bert"), BLOCKS)
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


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.9, 0.98])
def test_init_probability_is_what_the_config_says(keep):
    model = slimbert.add_gates(tiny_model("bert"), slimbert.PruneConfig(gate_init_keep=keep, prune_blocks=True))
    for g in slimbert.get_gates(model):
        for gate in (g.heads, g.units, g.attn_block, g.ffn_block):
            torch.testing.assert_close(gate.prob_open(), torch.full_like(gate.log_alpha, keep))
    # and sampling agrees: the share of non-zero draws is keep
    gate = HardConcreteGate(200_000, slimbert.pruning.gates.init_log_alpha(keep)).train()
    assert float((gate() > 0).float().mean()) == pytest.approx(keep, abs=0.005)
    with pytest.raises(ValueError, match="gate_init_keep must be in"):
        slimbert.PruneConfig(gate_init_keep=1.0)


def test_fixed_penalties_land_where_they_put_the_gates(tokenizer, squad_files):
    """penalty="fixed" does not snap to --target: the eval-mode gates decide, zeros removed."""
    cfg = slimbert.PruneConfig(target=0.5, penalty="fixed", lambda_att=0.0, lambda_ff=0.0, gate_init="uniform")
    assert cfg.snap is False and slimbert.PruneConfig().snap is True
    result = slimbert.prune(tiny_model("bert"), cfg, squad_files[0], tokenizer=tokenizer,
                            train_cfg=slimbert.TrainConfig(max_steps=2, finetune_steps=0, batch_size=4, max_length=64, doc_stride=16, max_train_examples=8))
    assert result.size == 1.0  # no penalty, gates start at P(open) 0.98: nothing is removed
