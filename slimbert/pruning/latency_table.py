"""A latency table: what one encoder layer's attention and FFN cost on this device, per head count and
FFN width, so ``--budget latency`` can mean "this fraction of the teacher's measured latency".

    table = latency_table(teacher, batch=1, seq_len=384)   # measured once, then read from the cache
    table.attn_ms(6), table.ffn_ms(1536)                   # one layer's blocks, interpolated
    table.fraction([(6, 1536)] * 12)                       # a structure's latency / the teacher's

Every layer of a BERT/RoBERTa has the same shapes, so one layer is timed: its attention block (self-
attention + output projection + LayerNorm) for head counts on a grid, its FFN block for widths on a
grid, each built as a compact layer (models/compact.py) and run at ``batch`` x ``seq_len`` on the
device. Between grid points the time is linear in the count; the measured values are made
non-decreasing (isotonic least squares: timing noise must not make a larger layer cheaper) with a
small minimum slope, so the size term always pulls. Lone blocks are not a whole model: the teacher and
four uniformly pruned random models are then timed end to end, and a least-squares line through them
gives the time outside the blocks (embeddings, QA head, call overhead), so a fraction is of the whole
model's measured latency, which is what the speed-up counts. The table is cached as JSON per device and
shape in ``$SLIMBERT_CACHE`` (default ``~/.cache/slimbert``) and reused by every later run.

The L0 size term (pruning/gates.py) reads it at each layer's expected head count and width; the
post-training search (pruning/methods/posttrain.py) needs equal per-item costs and uses the secant
slopes (:meth:`LatencyTable.item_costs`). What a method finally keeps goes through :func:`on_target`:
timed as a whole model against the teacher, the table's target corrected until the clock agrees.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import warnings
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from slimbert.io import atomic_write_json, cache_dir
from slimbert.latency import compare, measure
from slimbert.models.arch import head_dim
from slimbert.pruning.cost import layer_shapes

log = logging.getLogger(__name__)
TIMING = 4  # how tables are made (4: lone blocks fitted isotonically, calibrated on whole models); part of the
# cache key, so a change re-measures
MIN_SLOPE = 0.01  # of the mean slope: a flat span would give the gates in it no pull toward the target


@dataclass
class LatencyTable:
    device: str
    shape: dict  # hidden, heads, ffn, batch, seq_len, dtype: what the times were measured for
    head_grid: list[int]
    attn: list[float]  # ms of one layer's attention block at each head count of head_grid
    ffn_grid: list[int]
    ffn: list[float]  # ms of one layer's FFN block at each width of ffn_grid
    # The whole model's time outside the layers' blocks (embeddings, QA head, call overhead), in the
    # blocks' units: calibrated against whole models timed end to end (calibrate), so that fractions
    # are of the teacher's measured latency, which is what a user's budget and the speed-up count.
    outside_ms: float = 0.0
    path: str | None = None  # the cache file it was read from or written to

    def attn_ms(self, heads):
        """One layer's attention block with ``heads`` heads (a number or a differentiable tensor)."""
        return _interp(heads, self.head_grid, self.attn)

    def ffn_ms(self, width):
        """One layer's FFN block of width ``width`` (a number or a differentiable tensor)."""
        return _interp(width, self.ffn_grid, self.ffn)

    def model_ms(self, shapes) -> float:
        """Predicted time of a model whose layers have ``(heads, ffn width)`` shapes (cost.layer_shapes)."""
        return float(sum(self.attn_ms(h) + self.ffn_ms(f) for h, f in shapes)) + self.outside_ms

    def dense_ms(self, layers: int) -> float:
        """Predicted time of the unpruned model."""
        return layers * (self.attn[-1] + self.ffn[-1]) + self.outside_ms

    def floor(self, layers: int) -> float:
        """The smallest reachable fraction: every layer with no heads and no FFN units left."""
        return self.fraction([(0, 0)] * layers)

    def fraction(self, shapes) -> float:
        """A structure's predicted latency over the unpruned model's."""
        return self.model_ms(shapes) / self.dense_ms(len(shapes))

    def item_costs(self, layers: int) -> tuple[float, float, float]:
        """(ms per head, ms per FFN unit, fixed ms of a ``layers``-layer model: its empty blocks and the
        outside time): the secant line of each block, for searches that need equal per-item costs
        (posttrain's exact search)."""
        per_head = (self.attn[-1] - self.attn[0]) / self.head_grid[-1]
        per_unit = (self.ffn[-1] - self.ffn[0]) / self.ffn_grid[-1]
        return per_head, per_unit, layers * (self.attn[0] + self.ffn[0]) + self.outside_ms


def _interp(x, xs: list[int], ys: list[float]):
    """Piecewise-linear ys(x), clamped to the grid; a tensor ``x`` keeps its gradient."""
    as_tensor = torch.is_tensor(x)
    x_t = x if as_tensor else torch.tensor(float(x), dtype=torch.float64)
    grid = torch.tensor(xs, dtype=x_t.dtype, device=x_t.device)
    vals = torch.tensor(ys, dtype=x_t.dtype, device=x_t.device)
    x_c = x_t.clamp(grid[0], grid[-1])
    i = torch.searchsorted(grid, x_c.detach().reshape(1), right=True).clamp(1, len(xs) - 1)[0]
    w = (x_c - grid[i - 1]) / (grid[i] - grid[i - 1])
    y = vals[i - 1] + w * (vals[i] - vals[i - 1])
    return y if as_tensor else float(y)


def monotone(xs: list[int], ys: list[float]) -> list[float]:
    """ys made non-decreasing in xs by isotonic least squares (adjacent violators pooled to their mean:
    one slow outlier is averaged with its neighbours, not carried to every larger size as a running
    maximum would), then each step at least MIN_SLOPE of the mean slope."""
    blocks = []  # [mean, count] of pooled runs
    for y in ys:
        blocks.append([y, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, n1), (m2, n2) = blocks.pop(-2), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    fitted = [m for m, n in blocks for _ in range(n)]
    floor = MIN_SLOPE * max(fitted[-1] - fitted[0], max(ys) - min(ys), 1e-9) / max(xs[-1] - xs[0], 1)
    out = [fitted[0]]
    for (x0, x1), y in zip(zip(xs, xs[1:]), fitted[1:]):
        out.append(max(y, out[-1] + floor * (x1 - x0)))
    return out


def grid(n: int, points: int) -> list[int]:
    """0..n, every count when n + 1 <= points, else ``points`` evenly spaced counts."""
    if n + 1 <= points:
        return list(range(n + 1))
    return sorted({round(i * n / (points - 1)) for i in range(points)})


def device_name(device) -> str:
    """Which hardware the times belong to: the GPU's name, or the CPU's model and thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda-{torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"cpu-{cpu}-{torch.get_num_threads()}t"


def cache_path(device: str, shape: dict) -> str:
    key = json.dumps([device, shape, torch.__version__, TIMING], sort_keys=True)
    return os.path.join(cache_dir("latency"), f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json")


@torch.inference_mode()
def _time_blocks(teacher, shape: dict, device, head_grid, ffn_grid, repeats: int) -> tuple[list[float], list[float]]:
    """ms of one compact layer's attention block per head count and FFN block per width."""
    one_layer = copy.deepcopy(teacher.config)
    one_layer.num_hidden_layers = 1

    def layer(heads: int, width: int):
        return shaped_model(one_layer, [(heads, width)], device, teacher.dtype).model.encoder.layer[0]

    x = torch.randn(shape["batch"], shape["seq_len"], shape["hidden"], device=device, dtype=teacher.dtype)  # (B, T, d)
    # measure() times model(**inputs); the blocks take the hidden states x, carried as "input_ids"
    bar = tqdm(total=len(head_grid) + len(ffn_grid), desc="latency table", unit="shape")
    attn, ffn = [], []
    for h in head_grid:
        block = layer(h, 0).attention
        attn.append(measure(lambda input_ids, attention_mask: block(x), {"input_ids": x, "attention_mask": None}, repeats)["median_ms"])
        bar.update(1)
    for w in ffn_grid:
        block = layer(0, w)
        ffn.append(measure(lambda input_ids, attention_mask: block.feed_forward_chunk(x), {"input_ids": x, "attention_mask": None},
                           repeats)["median_ms"])
        bar.update(1)
    bar.close()
    return attn, ffn


def shaped_model(config, shapes, device="cpu", dtype=torch.float32):
    """A compact model of ``config``'s family (a teacher's config) with per-layer ``(heads, ffn width)``
    shapes and random weights, in eval mode: what a pruned model costs, without pruning one."""
    from slimbert.models.compact import SlimBertConfig, SlimBertForQuestionAnswering

    cfg = SlimBertConfig.from_base(config, [h for h, _ in shapes], [f for _, f in shapes])
    with warnings.catch_warnings():  # a Linear of width 0 warns that it has nothing to initialise
        warnings.simplefilter("ignore", UserWarning)
        model = SlimBertForQuestionAnswering(cfg)
    return model.to(device, dtype).eval()


def calibration_shapes(config) -> dict[str, list[tuple[int, int]]]:
    """The whole models the table is calibrated on: every layer at 0, 1/4, 1/2 and 3/4 of the heads and width."""
    L, H, F = config.num_hidden_layers, config.num_attention_heads, config.intermediate_size
    return {f"uniform-{q}": [(round(q * H), round(q * F))] * L for q in (0.0, 0.25, 0.5, 0.75)}


def _time_models(teacher, shapes: dict, batch: int, seq_len: int, repeats: int) -> dict[str, float]:
    """Median ms of the teacher and of a random compact model of each of ``shapes``, end to end, interleaved."""
    device, dtype = next(teacher.parameters()).device, teacher.dtype
    models = {"teacher": teacher} | {name: shaped_model(teacher.config, s, device, dtype) for name, s in shapes.items()}
    return {n: v["median_ms"] for n, v in compare(models, batch, seq_len, repeats=repeats, rounds=repeats).items()}


def calibrate(table: LatencyTable, teacher, times: dict[str, float]) -> dict:
    """Fit measured whole-model ms ≈ scale * (blocks' ms + outside) by least squares over the teacher and
    the calibration models (``times``, from _time_models), and set ``table.outside_ms``. Lone blocks
    miss the embeddings, the QA head and the per-call overhead, and time a little differently alone than
    in a model: the outside time takes the first, the common scale (which fractions do not see) the second."""
    shapes = calibration_shapes(teacher.config) | {"teacher": layer_shapes(teacher)}
    table.outside_ms = 0.0
    blocks = {n: table.model_ms(shapes[n]) for n in times}
    n = len(times)
    mean_b, mean_t = sum(blocks.values()) / n, sum(times.values()) / n
    var = sum((blocks[k] - mean_b) ** 2 for k in times)
    scale = sum((blocks[k] - mean_b) * (times[k] - mean_t) for k in times) / var
    if scale <= 0:  # timing noise beyond any use: keep the blocks alone, and say so
        warnings.warn("latency table: whole-model times did not grow with the blocks' times; not calibrated")
        return {"measured_ms": times, "scale": None}
    table.outside_ms = max((mean_t - scale * mean_b) / scale, -table.model_ms([(0, 0)] * teacher.config.num_hidden_layers))
    return {"measured_ms": times, "predicted_ms": {k: scale * table.model_ms(shapes[k]) for k in times}, "scale": scale}


def latency_table(teacher, batch: int = 1, seq_len: int = 384, device=None, repeats: int = 10,
                  head_points: int = 13, ffn_points: int = 9) -> LatencyTable:
    """The table of ``teacher``'s layer shapes on ``device`` (default: the teacher's), from the cache
    when this device and shape were measured before, else measured now (``teacher`` moved there to be
    timed whole) and cached."""
    device = torch.device(device or next(teacher.parameters()).device)
    cfg = teacher.config
    shape = dict(layers=cfg.num_hidden_layers, hidden=cfg.hidden_size, head_dim=head_dim(cfg), heads=cfg.num_attention_heads,
                 ffn=cfg.intermediate_size, act=str(getattr(cfg, "hidden_act", "")), batch=batch, seq_len=seq_len,
                 dtype=str(teacher.dtype))
    name = device_name(device)
    path = cache_path(name, shape)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("device") == name and saved.get("shape") == shape:
            log.info("latency table from %s", path)
            for raw in ("measured", "calibration"):  # the raw times, kept in the file for inspection
                saved.pop(raw, None)
            return LatencyTable(**(saved | {"path": path}))
    head_grid, ffn_grid = grid(cfg.num_attention_heads, head_points), grid(cfg.intermediate_size, ffn_points)
    attn, ffn = _time_blocks(teacher, shape, device, head_grid, ffn_grid, repeats)
    table = LatencyTable(name, shape, head_grid, monotone(head_grid, attn), ffn_grid, monotone(ffn_grid, ffn), path=path)
    times = _time_models(teacher.to(device).eval(), calibration_shapes(cfg), batch, seq_len, max(2 * repeats, 10))
    calibration = calibrate(table, teacher, times)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    raw = {"measured": {"attn": attn, "ffn": ffn}, "calibration": calibration}
    atomic_write_json({k: v for k, v in asdict(table).items() if k != "path"} | raw, path)
    log.info("latency table measured on %s, cached in %s", name, path)
    return table


def on_target(plan, target: float, teacher, table: LatencyTable, tolerance: float = 0.03, tries: int = 4):
    """From the table to the clock: ``plan(t)`` makes a structure at the table's fraction ``t`` and returns
    ``(what it made, per-layer shapes)``; a random model of those shapes is timed against ``teacher``
    (interleaved) and ``t`` corrected until the measured fraction is within ``tolerance`` of ``target``.
    Returns what ``plan`` made for the measured fraction closest to ``target``, and the tries.

    The table predicts whole models within about 5% (bench/results/latency-table-check-cpu.json), not
    within the noise of one structure: irregular per-layer widths and cache effects it cannot see."""
    batch, seq_len, layers = table.shape["batch"], table.shape["seq_len"], teacher.config.num_hidden_layers
    t, tried, best = target, [], None
    for _ in range(tries):
        made, shapes = plan(t)
        ms = _time_models(teacher, {"plan": shapes}, batch, seq_len, 30)
        measured = ms["plan"] / ms["teacher"]
        tried.append({"table_target": t, "measured_fraction": measured, "shapes": shapes})
        if best is None or abs(measured - target) < abs(best[1] - target):
            best = (made, measured)
        if abs(measured / target - 1) <= tolerance:
            break
        t, before = min(1.0, max(table.floor(layers), t * target / measured)), t
        if t == before:  # at the floor or the whole model: nothing left to correct
            break
    log.info("latency: table targets %s measured %s", [round(r["table_target"], 3) for r in tried],
             [round(r["measured_fraction"], 3) for r in tried])
    return best[0], tried


def speedups(teacher, compact, batch: int, seq_len: int, table: LatencyTable | None = None, tries: list | None = None,
             repeats: int = 30) -> dict:
    """The compact model's measured speed-up over the teacher (slimbert.latency.compare, whole models)
    and, with a ``table``, the speed-up the table predicted and the ``tries`` of on_target, side by side.
    A fresh measurement: on_target's own timings chose the structure, so they would flatter it."""
    ms = compare({"teacher": teacher, "compact": compact}, batch, seq_len, repeats=repeats, rounds=repeats)  # as on_target
    out = {"batch": batch, "seq_len": seq_len, "teacher_ms": ms["teacher"]["median_ms"], "compact_ms": ms["compact"]["median_ms"],
           "measured_speedup": ms["teacher"]["median_ms"] / ms["compact"]["median_ms"]}
    if table is not None:
        out |= {"predicted_speedup": 1 / table.fraction(layer_shapes(compact)),
                "predicted_fraction": table.fraction(layer_shapes(compact)), "table": table.path, "tries": tries or []}
    return out
