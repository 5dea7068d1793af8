"""Post-training pruning (slimbert/pruning/methods/posttrain.py): Fisher importance, mask search and rearrangement,
least-squares rescaling, and the ``method="posttrain"`` path through prune() and the CLI."""

import copy
import itertools
import json

import datasets
import pytest
import torch
from transformers import AutoModelForQuestionAnswering

import slimbert
from slimbert.cli import main
from slimbert.pruning.cost import encoder_flops, layer_shapes
from slimbert.pruning.gates import deterministic_size
from slimbert.pruning.masks import apply_mask, open_gated_copy
import slimbert.pruning.methods.l0 as l0_mod
from slimbert.pruning.methods.l0 import fisher_gate_init
from slimbert.pruning.methods.posttrain import fisher_importance, rearrange_mask, rescale, search_mask
from tests.conftest import tiny_model

FAST = dict(finetune_steps=0, batch_size=4, max_length=96, doc_stride=32, max_train_examples=24, max_eval_examples=8)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tensors here are tiny: on a busy 2-core machine, intra-op threads cost more than the math (10x)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_features(vocab: int, n: int = 16, seed: int = 0) -> datasets.Dataset:
    """Windows of random tokens and lengths (so batches get padded) with random gold spans."""
    g = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "attention_mask": [], "start_positions": [], "end_positions": []}
    for _ in range(n):
        length = int(torch.randint(12, 30, (1,), generator=g))
        start = int(torch.randint(0, length, (1,), generator=g))
        rows["input_ids"].append(torch.randint(5, vocab, (length,), generator=g).tolist())
        rows["attention_mask"].append([1] * length)
        rows["start_positions"].append(start)
        rows["end_positions"].append(min(length - 1, start + 2))
    return datasets.Dataset.from_dict(rows)


def prunable_cost(model, head_mask, unit_mask, budget, seq_len=384):
    """Kept fraction of prunable params, or of encoder FLOPs, measured on the collapsed model."""
    gated = open_gated_copy(model)
    apply_mask(gated, head_mask, unit_mask)
    compact = slimbert.collapse(gated)
    if budget == "params":
        return deterministic_size(compact)
    cfg = model.config
    d, d_h = cfg.hidden_size, cfg.hidden_size // cfg.num_attention_heads
    dense = [(cfg.num_attention_heads, cfg.intermediate_size)] * cfg.num_hidden_layers
    return encoder_flops(layer_shapes(compact), d, d_h, seq_len) / encoder_flops(dense, d, d_h, seq_len)


def encoder_output(model, features, tokenizer):
    batch = slimbert.tasks.base.Collator(tokenizer)([features[i] for i in range(len(features))])
    mask = batch["attention_mask"].bool()
    with torch.no_grad():
        return model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state[mask]


# ----------------------------------------------------------------------------- Fisher
def test_fisher_shapes_nonnegative_and_exact_per_example(arch, tokenizer):
    model = tiny_model(arch)
    before = copy.deepcopy(model.state_dict())
    feats = random_features(model.config.vocab_size, n=10)
    heads, units, head_blocks, unit_blocks = fisher_importance(model, feats, tokenizer, batch_size=4, blocks=True)
    assert heads.shape == (3, 4) and units.shape == (3, 37)
    assert head_blocks.shape == (3, 4, 4) and unit_blocks.shape == (3, 37, 37)
    assert (heads >= 0).all() and (units >= 0).all() and heads.sum() > 0 and units.sum() > 0
    torch.testing.assert_close(head_blocks.diagonal(dim1=1, dim2=2).double(), heads, rtol=1e-4, atol=0)
    # Per-example gradients: one example per batch gives the same sum of squares as padded batches of 4.
    heads_1, units_1 = fisher_importance(model, feats, tokenizer, batch_size=1)
    torch.testing.assert_close(heads_1, heads, rtol=1e-4, atol=1e-12)
    torch.testing.assert_close(units_1, units, rtol=1e-4, atol=1e-12)
    assert not slimbert.get_gates(model), "the caller's model must stay ungated"
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_dead_heads_have_no_importance_and_the_live_head_is_kept(tokenizer):
    model = tiny_model("bert")
    d_h = 8
    with torch.no_grad():  # every head but (1, 2) writes nothing: their masks cannot change the loss
        for l, layer in enumerate(model.bert.encoder.layer):
            for h in range(4):
                if (l, h) != (1, 2):
                    layer.attention.output.dense.weight[:, h * d_h : (h + 1) * d_h] = 0
    heads, units = fisher_importance(model, random_features(model.config.vocab_size, n=8), tokenizer, batch_size=4)
    assert heads[1, 2] > 0
    assert float(heads.sum() - heads[1, 2]) == 0.0
    head_mask, _ = search_mask(heads, units, model, target=0.5)
    assert head_mask[1, 2] and 1 <= int(head_mask.sum()) < 12


def test_search_keeps_a_dominant_head_even_when_one_head_barely_fits():
    model = tiny_model("bert")
    heads, units = torch.rand(3, 4) * 1e-3, torch.rand(3, 37) * 1e-3
    heads[2, 1] = 10.0
    c_head, c_unit = slimbert.pruning.cost.unit_costs(model)
    target = (c_head + 3 * c_unit) / slimbert.pruning.cost.prunable_parameters(model)
    head_mask, unit_mask = search_mask(heads, units, model, target)
    assert head_mask[2, 1] and int(head_mask.sum()) == 1 and int(unit_mask.sum()) == 3


# ----------------------------------------------------------------------------- search
@pytest.mark.parametrize("budget", ["params", "flops"])
def test_search_is_the_exact_optimum_on_a_small_instance(budget):
    model = tiny_model("bert", hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=4)
    g = torch.Generator().manual_seed(3)
    heads, units = torch.rand(1, 2, generator=g, dtype=torch.float64), torch.rand(1, 4, generator=g, dtype=torch.float64)
    c_head, c_unit = slimbert.pruning.cost.item_costs(model, budget, 384)
    total = 2 * c_head + 4 * c_unit
    masks = [(torch.tensor(h), torch.tensor(u)) for h in itertools.product([False, True], repeat=2)
             for u in itertools.product([False, True], repeat=4)]  # all 64 choices
    for target in (0.1, 0.25, 0.4, 0.55, 0.7, 0.9, 1.0):
        best = max(
            float(heads[0][h].sum() + units[0][u].sum())
            for h, u in masks
            if int(h.sum()) * c_head + int(u.sum()) * c_unit <= target * total
        )
        head_mask, unit_mask = search_mask(heads, units, model, target, budget)
        assert int(head_mask.sum()) * c_head + int(unit_mask.sum()) * c_unit <= target * total
        assert float(heads[head_mask].sum() + units[unit_mask].sum()) == pytest.approx(best)


@pytest.mark.parametrize("budget", ["params", "flops"])
def test_search_respects_the_budget(budget):
    model = tiny_model("bert")
    g = torch.Generator().manual_seed(0)
    heads, units = torch.rand(3, 4, generator=g), torch.rand(3, 37, generator=g)
    c_head, c_unit = slimbert.pruning.cost.item_costs(model, budget, 384)
    total = 3 * (4 * c_head + 37 * c_unit)
    for target in (0.05, 0.2, 0.5, 0.77, 1.0):
        head_mask, unit_mask = search_mask(heads, units, model, target, budget, seq_len=384)
        kept = prunable_cost(model, head_mask, unit_mask, budget)
        assert kept <= target + 1e-12
        # Nothing more fits: the slack is below one unit, or every unit is already kept.
        assert kept > target - c_unit / total or bool(unit_mask.all())
    with pytest.raises(ValueError, match="budget must be"):
        search_mask(heads, units, model, 0.5, "seconds")  # "latency" is a budget now: test_latency_table.py


def test_rearrange_keeps_counts_and_lowers_the_block_objective():
    g = torch.Generator().manual_seed(1)
    n_layers, n = 3, 12
    grads = torch.randn(n_layers, 40, n, generator=g) * torch.rand(n_layers, 1, n, generator=g)
    blocks = torch.einsum("lef,leg->lfg", grads, grads) / 40  # (L, n, n): mean g gᵀ, correlated items
    diag = blocks.diagonal(dim1=1, dim2=2)
    keep = torch.zeros(n_layers, n, dtype=torch.bool)
    for l in range(n_layers):  # the diagonal choice: keep the 5 most important
        keep[l, diag[l].argsort(descending=True)[:5]] = True
    head_keep = keep[:, :4]
    new_heads, new_keep = rearrange_mask(head_keep, keep, blocks[:, :4, :4], blocks)
    assert torch.equal(new_keep.sum(1), keep.sum(1)) and torch.equal(new_heads.sum(1), head_keep.sum(1))

    def objective(k, b):
        z = (~k).double()
        return float(torch.einsum("lf,lfg,lg->", z, b.double(), z))

    assert objective(new_keep, blocks) < objective(keep, blocks)  # random correlations: some swap helps
    assert objective(new_heads, blocks[:, :4, :4]) <= objective(head_keep, blocks[:, :4, :4]) + 1e-12


# ----------------------------------------------------------------------------- rescale
def test_rescale_is_the_identity_when_nothing_is_pruned(arch, tokenizer):
    model = tiny_model(arch)
    compact = slimbert.collapse(open_gated_copy(model))
    before = copy.deepcopy(compact.state_dict())
    rows = rescale(compact, model, random_features(model.config.vocab_size, n=8), tokenizer, batch_size=4)
    assert [(r["layer"], r["part"]) for r in rows] == [(l, p) for l in range(3) for p in ("attention", "ffn")]
    for r in rows:
        torch.testing.assert_close(r["scales"], torch.ones_like(r["scales"]), atol=1e-4, rtol=0)
        assert abs(r["error_before"]) < 1e-5
    for k, v in compact.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=1e-4, rtol=1e-4)


def test_rescale_reduces_the_reconstruction_error(arch, tokenizer):
    model = tiny_model(arch)
    feats = random_features(model.config.vocab_size, n=16)
    heads, units = fisher_importance(model, feats, tokenizer, batch_size=8)
    head_mask, unit_mask = search_mask(heads, units, model, target=0.5)
    gated = open_gated_copy(model)
    apply_mask(gated, head_mask, unit_mask)
    compact = slimbert.collapse(gated)
    teacher_out = encoder_output(model, feats, tokenizer)
    err_before = float((encoder_output(compact, feats, tokenizer) - teacher_out).pow(2).mean())

    rows = rescale(compact, model, feats, tokenizer, batch_size=8)
    err_after = float((encoder_output(compact, feats, tokenizer) - teacher_out).pow(2).mean())
    assert err_after < err_before
    assert all(r["error_after"] <= r["error_before"] + 1e-9 for r in rows)
    assert any(r["error_after"] < 0.98 * r["error_before"] for r in rows)

    # A gated model with hard gates is rescaled the same way, and collapses to the same weights.
    rescale(gated, model, feats, tokenizer, batch_size=8)
    for k, v in slimbert.collapse(gated).state_dict().items():
        torch.testing.assert_close(v, compact.state_dict()[k], atol=1e-4, rtol=1e-4)


def test_rescale_skips_layers_with_nothing_left(tokenizer):
    model = tiny_model("bert")
    head_mask, unit_mask = torch.ones(3, 4, dtype=torch.bool), torch.ones(3, 37, dtype=torch.bool)
    head_mask[0], unit_mask[1] = False, False
    gated = open_gated_copy(model)
    apply_mask(gated, head_mask, unit_mask)
    compact = slimbert.collapse(gated)
    assert compact.config.num_heads[0] == 0 and compact.config.ffn_dims[1] == 0
    rows = rescale(compact, model, random_features(model.config.vocab_size, n=6), tokenizer, batch_size=3)
    assert [(r["layer"], r["part"]) for r in rows if r["scales"].numel() == 0] == [(0, "attention"), (1, "ffn")]
    assert all(r["error_after"] <= r["error_before"] + 1e-9 for r in rows)
    with pytest.raises(ValueError, match="already gated or compact"):
        fisher_importance(compact, random_features(model.config.vocab_size, n=2), tokenizer)


# ----------------------------------------------------------------------------- Fisher warm start of L0 gates
def test_fisher_gate_init_starts_from_the_search_mask(tokenizer):
    teacher = tiny_model("bert")
    features = random_features(teacher.config.vocab_size, n=12)
    student = slimbert.add_gates(copy.deepcopy(teacher), slimbert.PruneConfig(prune_blocks=True))
    fisher_gate_init(student, teacher, features, tokenizer, target=0.4, keep=0.9, batch_size=4)
    head_mask, unit_mask = search_mask(*fisher_importance(teacher, features, tokenizer, batch_size=4), teacher, 0.4)
    assert 0 < head_mask.sum() + unit_mask.sum() < head_mask.numel() + unit_mask.numel()
    on, off = slimbert.pruning.gates.init_log_alpha(0.9), slimbert.pruning.gates.init_log_alpha(0.1)
    for g, heads, units in zip(slimbert.get_gates(student), head_mask, unit_mask):
        torch.testing.assert_close(g.heads.log_alpha, torch.where(heads, on, off).float())
        torch.testing.assert_close(g.units.log_alpha, torch.where(units, on, off).float())
        assert g.attn_block.log_alpha.item() == pytest.approx(slimbert.pruning.gates.init_log_alpha(0.98))  # block gates untouched
    # snapping right away keeps exactly the search's mask: the warm start ranks what it kept first
    slimbert.snap_gates(student, 0.4)
    for g, heads, units in zip(slimbert.get_gates(student), head_mask, unit_mask):
        assert torch.equal(g.heads.kept().bool(), heads) and torch.equal(g.units.kept().bool(), units)


def test_a_family_starts_from_the_nested_fisher_masks(tokenizer):
    teacher = tiny_model("bert")
    features = random_features(teacher.config.vocab_size, n=12)
    targets = (0.8, 0.5, 0.3)
    student = slimbert.add_gates(copy.deepcopy(teacher), slimbert.PruneConfig())
    fisher_gate_init(student, teacher, features, tokenizer, target=targets, keep=0.98, batch_size=4)
    fisher = fisher_importance(teacher, features, tokenizer, batch_size=4)
    masks = [search_mask(*fisher, teacher, t) for t in targets]
    for small, big in zip(masks[1:], masks):  # smaller targets keep subsets: the masks are nested
        assert all(torch.equal(s & b, s) for s, b in zip(small, big))
    la = slimbert.pruning.gates.init_log_alpha
    tiers = torch.tensor([la(0.02), la(l0_mod.FAMILY_FLOOR), (la(l0_mod.FAMILY_FLOOR) + la(0.98)) / 2, la(0.98)])
    for l, g in enumerate(slimbert.get_gates(student)):  # each item at the tier of how many targets keep it
        for gate, kind in ((g.heads, 0), (g.units, 1)):
            torch.testing.assert_close(gate.log_alpha, tiers[sum(m[kind][l].long() for m in masks)].float())
    for t, (heads, units) in zip(targets, masks):  # snapped at each target, the start keeps that target's mask
        snapped = copy.deepcopy(student)
        slimbert.snap_gates(snapped, t)
        for g, h, u in zip(slimbert.get_gates(snapped), heads, units):
            assert torch.equal(g.heads.kept().bool(), h) and torch.equal(g.units.kept().bool(), u)


def test_fisher_gate_init_through_prune_and_its_errors(tokenizer, squad_files):
    cfg = slimbert.PruneConfig(target=0.5, gate_init="fisher")
    result = slimbert.prune(tiny_model("bert"), cfg, squad_files[0], tokenizer=tokenizer,
                            train_cfg=slimbert.TrainConfig(max_steps=2, **FAST))
    assert 0.45 < result.size <= 0.5 and len(result.history) == 2
    with pytest.raises(ValueError, match="keep prune_heads and prune_ffn on"):
        slimbert.PruneConfig(gate_init="fisher", prune_ffn=False)
    with pytest.raises(ValueError, match="gate_init must be"):
        slimbert.PruneConfig(gate_init="magic")
    with pytest.raises(ValueError, match="task='squad' only"):
        slimbert.prune(tiny_model("bert"), cfg, squad_files[0], tokenizer=tokenizer,
                       train_cfg=slimbert.TrainConfig(max_steps=1, task="nq", **FAST))


# ----------------------------------------------------------------------------- prune() and CLI
def test_prune_posttrain_end_to_end(tmp_path, tokenizer, squad_files):
    cfg = slimbert.PruneConfig(method="posttrain", target=0.5)
    result = slimbert.prune(
        tiny_model("bert"), cfg, squad_files[0], squad_files[1], tokenizer=tokenizer,
        train_cfg=slimbert.TrainConfig(**FAST), out_dir=str(tmp_path),
    )
    assert type(result.model).__name__ == "SlimBertForQuestionAnswering"
    assert 0.4 < result.size <= 0.5 and result.size == pytest.approx(deterministic_size(result.model))
    assert result.history == [] and result.eval_after["n"] == 8
    assert json.loads((tmp_path / "prune_result.json").read_text())["prune_config"]["method"] == "posttrain"
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path)
    ids = torch.randint(5, 1000, (1, 20))
    assert torch.equal(loaded(input_ids=ids).start_logits, result.model(input_ids=ids).start_logits)


def test_cli_prune_posttrain_flops_with_finetune(tmp_path, tokenizer, squad_files, capsys):
    teacher = tmp_path / "teacher"
    tiny_model("bert").save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    out = tmp_path / "p60"
    args = ["prune", "--model", str(teacher), "--train", squad_files[0], "--out", str(out), "--method", "posttrain",
            "--budget", "flops", "--target", "0.6", "--finetune-steps", "1", "--batch-size", "4", "--max-length", "96",
            "--doc-stride", "32", "--max-train-examples", "16"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(summary["num_heads"]) == 3 and 0 < summary["size"] < 1
    assert main(["report", "--model", str(out), "--seq-len", "96", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["encoder_flops_after"] <= 0.6 * report["encoder_flops_before"]
    with pytest.raises(SystemExit):  # argparse refuses a budget it does not know
        main(args + ["--budget", "time"])
