"""Post-training pruning with no retraining (after Kwon et al. 2022, "A Fast Post-Training Pruning
Framework for Transformers").

    Fisher importance of every head/unit mask -> mask search under the budget -> mask rearrangement
    -> snap gates to the mask -> collapse -> layer-wise least-squares rescaling of what is left

    compact = posttrain_prune(model, tokenizer, examples, target=0.5)                  # params
    compact = posttrain_prune(model, tokenizer, examples, target=0.6, budget="flops")  # encoder FLOPs

or ``slimbert prune --method posttrain [--budget flops]``. Each step is a public function here
(:func:`fisher_importance`, :func:`search_mask`, :func:`rearrange_mask`, :func:`apply_mask`,
:func:`rescale`), so it can be inspected on its own.

The mask variables are the slimbert gates: m_lh scales head h's context before W_O of layer l, m_lj
scales FFN unit j's activation before W_2 (see gates.py). With every gate exactly 1 the gated model is
the original, and the derivative with respect to a mask is the derivative with respect to its gate.
"""

from __future__ import annotations

import logging
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from slimbert.models.arch import check_qa_model, encoder_layers, head_dim
from slimbert.models.compact import SlimBertForQuestionAnswering
from slimbert.pruning.collapse import collapse
from slimbert.pruning.cost import item_costs
from slimbert.pruning.gates import get_gates
from slimbert.pruning.latency_table import on_target
from slimbert.pruning.masks import apply_mask, check_dense, open_gated_copy
from slimbert.pruning.methods import Found
from slimbert.tasks.base import MODEL_INPUTS, Collator, batches
from slimbert.tasks.squad.data import training_features
from slimbert.train.losses import qa_loss

log = logging.getLogger(__name__)
PARTS = ("attention", "ffn")


# ----------------------------------------------------------------------------- helpers
def _sample(features, n: int, seed: int):
    """``n`` features drawn without replacement (seeded), in their original order; all if n <= 0 or n >= len."""
    if n <= 0 or n >= len(features):
        return features
    idx = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:n].sort().values.tolist()
    return features.select(idx) if hasattr(features, "select") else [features[i] for i in idx]


# ----------------------------------------------------------------------------- 1. Fisher importance
def fisher_importance(
    model: nn.Module, features, tokenizer, num_examples: int = 2048, batch_size: int = 16, blocks: bool = False, seed: int = 0
):
    """Empirical Fisher of every head and FFN-unit mask at m = 1: mean over examples of (∂L/∂m)².

    ``model`` is the dense QA model (left untouched: the work happens on a gated copy with every gate
    exactly 1). ``features`` are training windows (:func:`slimbert.tasks.squad.data.training_features`); up to
    ``num_examples`` of them are drawn at random (seeded). L is the QA cross-entropy on each window's
    gold start/end positions.

    Per-example gradients are exact, not a per-batch approximation: each example gets its own copy of
    the masks (a (B, L, H) and a (B, L, F) tensor of ones that requires grad, multiplied in by hooks
    where the gates act), the batch loss is the sum of the example losses, so one backward pass gives
    every example's gradient at once. The model's weights are frozen, so no weight gradients are built.

    Returns ``(head_fisher (L, H), unit_fisher (L, F))`` as float64 CPU tensors. With ``blocks=True``
    also the per-layer Fisher blocks ``(L, H, H)`` and ``(L, F, F)`` (mean of g gᵀ, float32) that
    :func:`rearrange_mask` uses.
    """
    check_dense(model)
    features = _sample(features, num_examples, seed)
    if len(features) == 0:
        raise ValueError("no training windows to estimate the Fisher information on; pass a non-empty feature set")
    gated = open_gated_copy(model)
    device, dtype = next(gated.parameters()).device, next(gated.parameters()).dtype
    layers = encoder_layers(gated)
    L, H, n_units, d_h = len(layers), gated.config.num_attention_heads, gated.config.intermediate_size, head_dim(gated.config)
    masks = {}  # this batch's per-example mask copies, read by the hooks below

    def mask_heads(l, module, args):
        (ctx,) = args  # (B, T, H·d_h): each head's context, already times its (= 1) gate
        B, T, _ = ctx.shape
        m = masks["heads"][:, l]  # (B, H)
        return ((ctx.view(B, T, H, d_h) * m[:, None, :, None]).view(B, T, H * d_h),)

    def mask_units(l, module, args, out):
        return out * masks["units"][:, l, None, :]  # (B, T, F) · (B, 1, F)

    handles = []
    for l, layer in enumerate(layers):
        handles.append(layer.attention.output.dense.register_forward_pre_hook(partial(mask_heads, l)))
        handles.append(layer.intermediate.register_forward_hook(partial(mask_units, l)))  # after the gate's hook

    head_sq = torch.zeros(L, H, dtype=torch.float64, device=device)
    unit_sq = torch.zeros(L, n_units, dtype=torch.float64, device=device)
    head_blk = torch.zeros(L, H, H, device=device) if blocks else None
    unit_blk = torch.zeros(L, n_units, n_units, device=device) if blocks else None
    bar = tqdm(total=len(features), desc="fisher", unit="ex")
    try:
        for _, batch in batches(features, Collator(tokenizer), batch_size, device=device):
            B = batch["input_ids"].shape[0]
            masks["heads"] = torch.ones(B, L, H, device=device, dtype=dtype, requires_grad=True)
            masks["units"] = torch.ones(B, L, n_units, device=device, dtype=dtype, requires_grad=True)
            with torch.enable_grad():
                out = gated(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
                g_heads, g_units = torch.autograd.grad(qa_loss(out.start_logits, out.end_logits, batch["start_positions"], batch["end_positions"], batch["attention_mask"].bool(), "sum"), (masks["heads"], masks["units"]))
            g_heads, g_units = g_heads.float(), g_units.float()  # (B, L, H), (B, L, F): one row per example
            head_sq += g_heads.double().pow(2).sum(0)
            unit_sq += g_units.double().pow(2).sum(0)
            if blocks:
                head_blk += torch.einsum("blh,blg->lhg", g_heads, g_heads)
                unit_blk += torch.einsum("blf,blg->lfg", g_units, g_units)
            bar.update(B)
    finally:
        bar.close()
        for h in handles:
            h.remove()
    n = len(features)
    diagonal = (head_sq.cpu() / n, unit_sq.cpu() / n)
    return diagonal + (head_blk.cpu() / n, unit_blk.cpu() / n) if blocks else diagonal


# ----------------------------------------------------------------------------- 2. mask search
def search_mask(head_fisher, unit_fisher, model: nn.Module, target: float, budget: str = "params", seq_len: int = 384,
                table=None):
    """Which heads and units to keep: cost within ``target`` of the dense model's, minimal removed importance.

    ``budget="params"``: the cost is prunable parameters (as ``--target`` of the L0 mode);
    ``budget="flops"``: encoder FLOPs for one sequence of ``seq_len`` tokens (report.encoder_flops);
    ``budget="latency"``: the measured latency of ``table`` (pruning/latency_table.py), as its
    secant per-item costs plus the fixed time (empty blocks, embeddings, head), which every structure pays; the
    measured blocks are not linear in their counts, so the plan is then tightened until the table's own
    interpolation at its per-layer counts is within ``target``.

    Under the diagonal Fisher approximation removing a set costs ½ Σ of its importances, so we maximise
    the importance kept. Every head costs the same and every unit costs the same (in both budgets), so
    for a given number of kept heads the best choice is the most important heads overall, and the rest
    of the budget is best spent on as many of the most important units as fit. Trying every head count
    (Kwon et al.'s search) therefore gives the exact optimum of the diagonal problem, not a heuristic.
    Returns boolean masks ``(L, H)`` and ``(L, F)``, True = keep.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1] (fraction of the budget kept), got {target}")
    head_fisher = torch.as_tensor(head_fisher, dtype=torch.float64)
    unit_fisher = torch.as_tensor(unit_fisher, dtype=torch.float64)
    fixed = 0.0
    if budget == "latency":
        if table is None:
            raise ValueError("budget='latency' needs the latency table: pass table=latency_table(model)")
        c_head, c_unit, fixed = table.item_costs(head_fisher.shape[0])
    else:
        c_head, c_unit = item_costs(model, budget, seq_len)
    n_heads, n_units = head_fisher.numel(), unit_fisher.numel()
    whole = n_heads * c_head + n_units * c_unit + fixed
    search = partial(_search, head_fisher, unit_fisher, c_head, c_unit)
    masks = search(target * whole - fixed + 1e-9)  # the same slack as snap_gates
    if table is None:
        return masks

    def fraction(m):  # what the table says the per-layer counts cost, not its secant line
        return table.fraction(list(zip(m[0].sum(1).tolist(), m[1].sum(1).tolist())))

    if fraction(masks) <= target + 1e-9:
        return masks
    # The measured blocks are not linear in their counts, so the secant plan can overrun the target:
    # tighten the secant budget (bisection) to the largest one whose plan the table keeps within it.
    lo, hi, best = 0.0, target, search(0.0)
    for _ in range(30):
        mid = (lo + hi) / 2
        m = search(mid * whole - fixed + 1e-9)
        lo, hi, best = (mid, hi, m) if fraction(m) <= target + 1e-9 else (lo, mid, best)
    return best


def _search(head_fisher, unit_fisher, c_head: float, c_unit: float, allowed: float):
    """The exact optimum of the diagonal problem for a budget of ``allowed`` (see search_mask)."""
    n_heads, n_units = head_fisher.numel(), unit_fisher.numel()
    head_order = head_fisher.flatten().argsort(descending=True, stable=True)
    unit_order = unit_fisher.flatten().argsort(descending=True, stable=True)
    head_cum = torch.cat([torch.zeros(1, dtype=torch.float64), head_fisher.flatten()[head_order].cumsum(0)])  # (n_heads + 1,)
    unit_cum = torch.cat([torch.zeros(1, dtype=torch.float64), unit_fisher.flatten()[unit_order].cumsum(0)])

    kept_heads = torch.arange(n_heads + 1)
    left = allowed - kept_heads.double() * c_head  # budget left for units at each head count
    kept_units = torch.floor(left.clamp_min(0) / c_unit).long().clamp_max(n_units)
    score = head_cum[kept_heads] + unit_cum[kept_units]
    score[left < 0] = -torch.inf  # that many heads alone break the budget
    best = int(score.argmax())

    head_mask = torch.zeros(n_heads, dtype=torch.bool)
    unit_mask = torch.zeros(n_units, dtype=torch.bool)
    head_mask[head_order[:best]] = True
    unit_mask[unit_order[: int(kept_units[best])]] = True
    return head_mask.view_as(head_fisher), unit_mask.view_as(unit_fisher)


def _rearrange_one(keep: torch.Tensor, block: torch.Tensor, max_swaps: int) -> torch.Tensor:
    """Best-improvement swaps of one kept and one removed item, lowering zᵀ·block·z (z = removed)."""
    keep, block = keep.clone(), block.double()
    if keep.all() or not keep.any():
        return keep
    z = (~keep).double()
    s = block @ z  # (n,): each item's interaction with the removed set
    diag = block.diagonal()
    for _ in range(max_swaps):
        removed, kept = torch.nonzero(~keep).flatten(), torch.nonzero(keep).flatten()
        # Bring back removed i, remove kept j: z' = z - e_i + e_j changes zᵀFz by
        # 2(s_j - s_i) + F_ii + F_jj - 2F_ij.
        delta = 2 * (s[kept][None, :] - s[removed][:, None]) + diag[removed][:, None] + diag[kept][None, :]
        delta -= 2 * block[removed][:, kept]  # (n_removed, n_kept)
        best = int(delta.argmin())
        i, j = removed[best // len(kept)], kept[best % len(kept)]
        if delta.flatten()[best] >= -1e-12 * max(float(z @ s), 1e-30):
            break  # no swap lowers the objective: a local optimum
        keep[i], keep[j] = True, False
        z[i], z[j] = 0.0, 1.0
        s += block[:, j] - block[:, i]
    return keep


def rearrange_mask(head_mask, unit_mask, head_blocks, unit_blocks, max_swaps: int | None = None):
    """Kwon et al.'s mask rearrangement: within each layer, with its kept counts fixed, pick which
    heads/units to keep using the layer's Fisher block instead of only its diagonal.

    The loss increase of removing the set z (indicator) of a layer is ≈ ½ zᵀ I_l z with I_l the Fisher
    block (interactions inside the layer, none across layers). Finding the best z of a given size is a
    binary quadratic problem; here it is a local search: start from the diagonal choice, apply the
    single swap (one kept <-> one removed) that lowers zᵀ I_l z most, stop when none does or after
    ``max_swaps`` (default: the layer's item count). Attention heads and FFN units are separate
    problems, as in the paper. The budget is unchanged because the counts are.
    """
    head_mask, unit_mask = head_mask.clone(), unit_mask.clone()
    for masks, blocks in ((head_mask, head_blocks), (unit_mask, unit_blocks)):
        for l in range(masks.shape[0]):
            n = masks.shape[1]
            masks[l] = _rearrange_one(masks[l], blocks[l], n if max_swaps is None else max_swaps)
    return head_mask, unit_mask


# ----------------------------------------------------------------------------- 3. rescaling
class _Stop(Exception):
    pass


@torch.no_grad()
def _encoder_inputs(model: nn.Module, batch: dict):
    """(embeddings (B, T, d), the attention mask the model gives its layers), stopping before layer 0.

    Taking the mask from the model's own forward keeps it in whatever form its attention expects.
    """
    got = {}

    def grab(module, args, kwargs):
        got["x"] = args[0] if args else kwargs["hidden_states"]
        got["mask"] = args[1] if len(args) > 1 else kwargs.get("attention_mask")
        raise _Stop

    handle = encoder_layers(model)[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
    except _Stop:
        pass
    finally:
        handle.remove()
    return got["x"], got["mask"]


def _projection_input(layer: nn.Module, part: str, x: torch.Tensor, mask) -> torch.Tensor:
    """What the part's output projection W_O / W_2 multiplies: (B, T, H·d_h) contexts or (B, T, F) units."""
    if part == "attention":
        return layer.attention.self(x, attention_mask=mask)[0]
    return layer.intermediate(x)


def _output(layer: nn.Module, part: str) -> nn.Module:
    """The module holding the part's output projection (``dense``) and its ``LayerNorm``."""
    return layer.attention.output if part == "attention" else layer.output


def _kept_groups(layer: nn.Module, part: str) -> torch.Tensor:
    """Indices of the heads/units present: all of a compact layer, the non-zero gates of a gated one."""
    if part == "attention":
        gate, n = getattr(layer.attention.self, "head_gate", None), layer.attention.self.num_attention_heads
    else:
        gate, n = getattr(layer.intermediate, "gate", None), layer.intermediate.dense.out_features
    return torch.arange(n) if gate is None else torch.nonzero(gate.kept()).flatten().cpu()


class _LeastSquares:
    """Normal equations of min_s Σ_t ‖Σ_g s_g·W_g a_g(t) − b(t)‖², accumulated over token batches.

    a (N, width): the output projection's inputs on the kept columns; W (d, width) their weights;
    columns come in groups of ``group`` (d_h for a head, 1 for a unit) that share one scale s_g. With
    P = Σ_t a aᵀ and M = WᵀW, the Gram matrix is G_gh = Σ_{i∈g, j∈h} P_ij M_ij and the right-hand
    side r_g = Σ_{i∈g} Σ_t a_i (bᵀW)_i, so the (tokens·d × groups) design matrix is never built.
    """

    def __init__(self, weight: torch.Tensor, group: int):
        self.w, self.group = weight, group
        width = weight.shape[1]
        self.p = torch.zeros(width, width, dtype=torch.float64, device=weight.device)
        self.q = torch.zeros(width, dtype=torch.float64, device=weight.device)
        self.bb = 0.0

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        a, b = a.float(), b.float()
        self.p += (a.T @ a).double()
        self.q += (a * (b @ self.w)).sum(0).double()
        self.bb += float(b.double().pow(2).sum())

    def system(self) -> tuple[torch.Tensor, torch.Tensor]:
        n, k = self.w.shape[1] // self.group, self.group
        gram = (self.p * (self.w.T @ self.w).double()).view(n, k, n, k).sum((1, 3))  # (n, n)
        return gram.cpu(), self.q.view(n, k).sum(1).cpu()  # (n,)

    def solve(self, ridge: float) -> torch.Tensor:
        """The scales, pulled toward 1 by a small ridge so unused (all-zero) items keep scale 1."""
        gram, r = self.system()
        lam = ridge * float(gram.diagonal().mean().clamp_min(1e-30))
        eye = torch.eye(len(r), dtype=torch.float64)
        return torch.linalg.lstsq(gram + lam * eye, (r + lam)[:, None], driver="gelsd").solution[:, 0]

    def error(self, s: torch.Tensor) -> float:
        """‖residual‖² / ‖b‖² at scales ``s`` (s = 1: the weights as they are)."""
        gram, r = self.system()
        s = s.double()
        return float(s @ gram @ s - 2 * s @ r + self.bb) / max(self.bb, 1e-30)


@torch.no_grad()
def rescale(
    model: nn.Module,
    teacher: nn.Module,
    features,
    tokenizer,
    num_examples: int = 512,
    batch_size: int = 16,
    ridge: float = 1e-4,
    seed: int = 0,
) -> list[dict]:
    """Kwon et al.'s mask tuning: per sub-layer least-squares scales for what is kept, in place.

    ``model`` is a compact model (or a gated one with hard gates) pruned from ``teacher``. Going through
    the sub-layers in order (attention of layer 0, its FFN, attention of layer 1, ...), each kept head's
    W_O columns (its d_h of them) / each kept unit's W_2 column get the scale that makes the pruned
    sub-layer's LayerNorm input best match the teacher's, over the non-padding tokens of up to
    ``num_examples`` windows:

        min_s Σ_t ‖(x'_t + b_O + Σ_g s_g·W_g a_g(x')_t) − (x_t + F_teacher(x)_t)‖²

    with x' the pruned model's own input to that sub-layer (computed with the scales already fitted
    before it) and x the teacher's. The residual x' is part of the match, not only the sub-layer's
    output: it is what LayerNorm sees, and it lets a sub-layer correct drift from the ones before
    (identical to matching the sub-layer output when x' = x). Biases are not tuned. The normal
    equations are solved with ``torch.linalg.lstsq`` plus a ridge of ``ridge``·mean(diag G) toward
    s = 1, which keeps rank-deficient cases (dead units, few tokens) well-posed.
    Both models' hidden states for all the windows stay in memory (2 × windows × T × d floats).

    Returns one row per sub-layer: layer, part, scales, and the relative squared error with the
    weights as they were (``error_before``) and after (``error_after``).
    """
    check_qa_model(teacher)
    features = _sample(features, num_examples, seed)
    if len(features) == 0:
        raise ValueError("no windows to rescale on; pass a non-empty feature set (or rescale_examples=0 to skip)")
    model.eval()
    teacher.eval()
    device, t_device = next(model.parameters()).device, next(teacher.parameters()).device
    data = [b for _, b in batches(features, Collator(tokenizer), batch_size, device=device)]
    x_t, mask_t, x_p, mask_p = [], [], [], []  # per batch: each model's input to the current sub-layer
    for batch in data:
        x, m = _encoder_inputs(teacher, {k: v.to(t_device) for k, v in batch.items()})
        x_t.append(x)
        mask_t.append(m)
        x, m = _encoder_inputs(model, batch)
        x_p.append(x)
        mask_p.append(m)
    d_h = head_dim(model.config)
    rows = []
    bar = tqdm(total=2 * len(encoder_layers(model)), desc="rescale", unit="sub-layer")
    for l, (t_layer, p_layer) in enumerate(zip(encoder_layers(teacher), encoder_layers(model))):
        for part in PARTS:
            t_out, p_out = _output(t_layer, part), _output(p_layer, part)
            group = d_h if part == "attention" else 1
            kept = _kept_groups(p_layer, part)
            cols = (kept[:, None] * group + torch.arange(group)[None, :]).flatten().to(device)  # (kept · group,)
            # An L0-gated model's block gate scales the projection's weights and bias alike.
            z = float(p_out.dense.gate.deterministic().reshape(-1)[0]) if hasattr(p_out.dense, "gate") else 1.0
            lsq = _LeastSquares(p_out.dense.weight[:, cols].float() * z, group)
            for i, batch in enumerate(data):
                target = t_out.dense(_projection_input(t_layer, part, x_t[i], mask_t[i])) + x_t[i]  # teacher's LN input
                x_t[i] = t_out.LayerNorm(target)
                b = target.to(device) - x_p[i] - p_out.dense.bias * z  # what the kept items should add up to
                tokens = batch["attention_mask"].bool()  # (B, T): non-padding tokens only
                lsq.add(_projection_input(p_layer, part, x_p[i], mask_p[i])[..., cols][tokens], b[tokens])
            ones = torch.ones(len(kept), dtype=torch.float64)
            scales = lsq.solve(ridge) if len(kept) and z > 0 else ones
            p_out.dense.weight[:, cols] *= scales.repeat_interleave(group).to(p_out.dense.weight)
            errors = dict(error_before=lsq.error(ones), error_after=lsq.error(scales))
            rows.append(dict(layer=l, part=part, scales=scales.float(), **errors))
            for i in range(len(data)):  # the pruned model's input to the next sub-layer, with these scales
                x_p[i] = p_out.LayerNorm(p_out.dense(_projection_input(p_layer, part, x_p[i], mask_p[i])) + x_p[i])
            bar.update(1)
    bar.close()
    return rows


# ----------------------------------------------------------------------------- the whole path
def posttrain_gates(model: nn.Module, sample, tokenizer, target: float, budget: str = "params", *, batch_size: int = 16,
                    seq_len: int = 384, rearrange: bool = True, table=None) -> tuple[nn.Module, list]:
    """Steps 1-2 on the windows ``sample``: a gated copy of dense ``model`` whose hard gates keep the mask,
    and, with a latency ``table``, the tries that brought its measured latency to the target
    (latency_table.on_target; else [])."""
    check_dense(model)
    fisher = fisher_importance(model, sample, tokenizer, len(sample), batch_size, blocks=rearrange)

    def plan(t: float):
        head_mask, unit_mask = search_mask(fisher[0], fisher[1], model, t, budget, seq_len, table)
        if rearrange:  # keeps every layer's counts, so the shapes (and so the latency) stay
            head_mask, unit_mask = rearrange_mask(head_mask, unit_mask, fisher[2], fisher[3])
        return (head_mask, unit_mask), list(zip(head_mask.sum(1).tolist(), unit_mask.sum(1).tolist()))

    (head_mask, unit_mask), tries = on_target(plan, target, model, table) if table is not None else (plan(target)[0], [])
    gated = open_gated_copy(model)
    apply_mask(gated, head_mask, unit_mask)
    return gated, tries


def _rescaled(compact, teacher, sample, tokenizer, rescale_examples: int, batch_size: int, seed: int):
    if rescale_examples:
        rows = rescale(compact, teacher, sample, tokenizer, rescale_examples, batch_size, seed=seed)
        log.info("rescale: relative sub-layer error %s", [f"{r['error_before']:.3g}->{r['error_after']:.3g}" for r in rows])
    return compact.eval()


def posttrain_prune(
    model: nn.Module,
    tokenizer,
    train_examples=None,
    target: float = 0.5,
    budget: str = "params",
    num_examples: int = 2048,
    rescale_examples: int = 512,
    *,
    features=None,
    max_length: int = 384,
    doc_stride: int = 128,
    batch_size: int = 16,
    seq_len: int | None = None,
    rearrange: bool = True,
    seed: int = 0,
) -> SlimBertForQuestionAnswering:
    """Prune ``model`` (a BERT/RoBERTa QA model, left unchanged) to ``target`` without training.

    ``train_examples``: SQuAD-schema examples (``slimbert.load_squad``), windowed here with
    ``max_length``/``doc_stride``; or pass ready ``features`` (training windows) instead.
    ``num_examples`` windows (drawn at random, seeded) estimate the Fisher information; a random
    ``rescale_examples`` of those fit the rescaling (0 skips it). ``budget="flops"`` counts encoder
    FLOPs at ``seq_len`` tokens (default ``max_length``). ``rearrange=False`` skips the rearrangement
    and the (L, F, F) Fisher blocks it needs.
    """
    check_dense(model)
    if features is None:
        if train_examples is None:
            raise ValueError("posttrain_prune needs data: pass train_examples (slimbert.load_squad(...)) or features")
        features = training_features(train_examples, tokenizer, max_length, doc_stride)
    sample = _sample(features, num_examples, seed)
    teacher = model.eval()
    gated, _ = posttrain_gates(teacher, sample, tokenizer, target, budget, batch_size=batch_size, seq_len=seq_len or max_length,
                               rearrange=rearrange)
    compact = collapse(gated)
    log.info("posttrain: heads %s, FFN widths %s", compact.config.num_heads, compact.config.ffn_dims)
    return _rescaled(compact, teacher, sample, tokenizer, rescale_examples, batch_size, seed)


def find_structure(model: nn.Module, run) -> Found:
    """The method interface (pruning/methods/__init__.py): mask now, rescaling after collapse."""
    tcfg = run.tcfg
    sample = _sample(run.features, run.cfg.fisher_examples or 2048, tcfg.seed)
    gated, tries = posttrain_gates(model.to(run.accelerator.device), sample, run.tokenizer, run.cfg.target, run.cfg.budget,
                                   batch_size=tcfg.batch_size, seq_len=tcfg.max_length, table=run.cost)
    refine = partial(_rescaled, teacher=model, sample=sample, tokenizer=run.tokenizer, rescale_examples=512,
                     batch_size=tcfg.batch_size, seed=tcfg.seed)
    return Found(gated, [], refine, tries)
