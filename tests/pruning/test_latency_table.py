"""The latency table (slimbert/pruning/latency_table.py): monotone interpolation, a cache reused per
device and shape, and the L0 size term, snapping and the post-training search counting milliseconds."""

import json

import pytest
import torch

import slimbert
import slimbert.pruning.latency_table as lt
from slimbert.cli import main
from slimbert.pruning.collapse import collapse
from slimbert.pruning.cost import layer_shapes
from slimbert.pruning.gates import HARD, add_gates, deterministic_size, expected_size, get_gates, snap_gates
from slimbert.pruning.methods.posttrain import search_mask
from tests.conftest import tiny_model


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMBERT_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _table(attn=(1.0, 3.0, 2.5, 6.0, 7.0), ffn=(2.0, 2.0, 9.0, 8.0, 12.0)):
    """A table from noisy 'measurements' (each block once cheaper at a larger size) over a tiny model's shapes."""
    heads, widths = [0, 1, 2, 3, 4], [0, 9, 18, 28, 37]
    return lt.LatencyTable("test", {}, heads, lt.monotone(heads, list(attn)), widths, lt.monotone(widths, list(ffn)))


def test_interpolation_is_monotone_linear_and_differentiable():
    table = _table()
    for block, top in ((table.attn_ms, 4), (table.ffn_ms, 37)):
        xs = torch.linspace(0, top, 400)
        ys = [block(float(x)) for x in xs]
        assert all(b > a for a, b in zip(ys, ys[1:])), "strictly increasing: noise never makes a larger block cheaper"
    assert table.attn_ms(3) == 6.0 and table.attn_ms(4) == 7.0  # measured points where already monotone
    # the dip (3.0 at 1 head, 2.5 at 2) is pooled to its mean, not lifted to the running maximum
    assert table.attn_ms(1) == pytest.approx(2.75) and 2.75 < table.attn_ms(2) < 2.8
    assert table.attn_ms(3.5) == pytest.approx(6.5)  # linear between grid points
    assert table.attn_ms(-1) == table.attn_ms(0) and table.attn_ms(9) == table.attn_ms(4)  # clamped
    x = torch.tensor(3.25, requires_grad=True)
    table.attn_ms(x).backward()
    assert x.grad == pytest.approx(1.0)
    assert table.fraction([(4, 37)] * 3) == 1.0


def test_the_table_is_measured_once_per_device_and_shape(monkeypatch):
    model = tiny_model("bert")
    first = lt.latency_table(model, batch=1, seq_len=32, repeats=2)
    assert first.head_grid == [0, 1, 2, 3, 4] and first.ffn_grid[0] == 0 and first.ffn_grid[-1] == 37
    assert all(b > a for a, b in zip(first.attn, first.attn[1:])) and all(b > a for a, b in zip(first.ffn, first.ffn[1:]))
    saved = json.loads(open(first.path).read())
    assert saved["device"] == first.device and len(saved["measured"]["attn"]) == 5

    def no_timing(*a, **k):
        raise AssertionError("the cached table must be reused, not measured again")

    monkeypatch.setattr(lt, "_time_blocks", no_timing)
    monkeypatch.setattr(lt, "_time_models", no_timing)
    again = lt.latency_table(model, batch=1, seq_len=32)
    assert again == first
    with pytest.raises(AssertionError, match="reused"):  # another shape is another file
        lt.latency_table(model, batch=2, seq_len=32)


def test_size_term_snap_and_search_count_the_tables_milliseconds():
    model = add_gates(tiny_model("bert"), slimbert.PruneConfig())
    table = _table()
    with torch.no_grad():
        for g in get_gates(model):
            g.heads.log_alpha.fill_(HARD)
            g.units.log_alpha.fill_(HARD)
    assert float(expected_size(model, table)) == pytest.approx(1.0)
    torch.manual_seed(0)
    with torch.no_grad():
        for g in get_gates(model):
            g.heads.log_alpha.copy_(torch.randn_like(g.heads.log_alpha))
            g.units.log_alpha.copy_(torch.randn_like(g.units.log_alpha))
    size = snap_gates(model, 0.5, table)
    compact = collapse(model.eval())
    assert size == pytest.approx(table.fraction(layer_shapes(compact)))  # what snapping counted is what collapse kept
    assert 0.4 < size <= 0.5 + 1e-9
    assert deterministic_size(compact, table) == pytest.approx(size)

    dense = tiny_model("bert")
    heads, units = search_mask(torch.rand(3, 4), torch.rand(3, 37), dense, 0.5, "latency", table=table)
    per_head, per_unit, fixed = table.item_costs(3)
    kept = heads.sum() * per_head + units.sum() * per_unit + fixed
    assert kept <= 0.5 * table.dense_ms(3) + 1e-9
    # and by the table's own (non-linear) interpolation at the per-layer counts, not only its secant line
    assert 0.3 < table.fraction(list(zip(heads.sum(1).tolist(), units.sum(1).tolist()))) <= 0.5 + 1e-9
    with pytest.raises(ValueError, match="latency table"):
        search_mask(torch.rand(3, 4), torch.rand(3, 37), dense, 0.5, "latency")


def test_calibration_recovers_the_time_outside_the_blocks():
    # whole models that take 1.3 x (their blocks + 4 ms): the fit finds the 4 ms, the scale drops out
    model = tiny_model("bert")
    table = _table()
    shapes = lt.calibration_shapes(model.config) | {"teacher": layer_shapes(model)}
    times = {name: 1.3 * (table.model_ms(s) + 4.0) for name, s in shapes.items()}
    record = lt.calibrate(table, model, times)
    assert table.outside_ms == pytest.approx(4.0) and record["scale"] == pytest.approx(1.3)
    half = [(2, 18)] * 3
    assert table.fraction(half) == pytest.approx((3 * (table.attn_ms(2) + table.ffn_ms(18)) + 4.0) / (3 * (7.0 + 12.0) + 4.0))
    assert table.floor(3) == pytest.approx((3 * (1.0 + 2.0) + 4.0) / (3 * 19.0 + 4.0))
    # and every consumer counts it: the secant costs' fixed part, the gates' size term
    assert table.item_costs(3)[2] == pytest.approx(3 * 3.0 + 4.0)
    gated = add_gates(tiny_model("bert"), slimbert.PruneConfig())
    with torch.no_grad():
        for g in get_gates(gated):
            g.heads.log_alpha.fill_(-HARD)
            g.units.log_alpha.fill_(-HARD)
    assert deterministic_size(gated, table) == pytest.approx(table.floor(3))


def test_a_table_is_calibrated_on_whole_models_when_measured(monkeypatch):
    _linear_times(monkeypatch, 0.5)  # whole models: their blocks + 1 ms
    seen = {}
    time_models = lt._time_models
    monkeypatch.setattr(lt, "_time_models", lambda teacher, shapes, *a: seen.update(shapes) or time_models(teacher, shapes, *a))
    table = lt.latency_table(tiny_model("bert"), batch=1, seq_len=32)
    assert set(seen) == {"uniform-0.0", "uniform-0.25", "uniform-0.5", "uniform-0.75"}
    assert table.outside_ms == pytest.approx(1.0)
    saved = json.loads(open(table.path).read())
    assert saved["calibration"]["scale"] == pytest.approx(1.0) and "teacher" in saved["calibration"]["measured_ms"]


def test_a_shaped_model_has_the_shapes_asked_for():
    model = tiny_model("roberta")
    compact = lt.shaped_model(model.config, [(0, 5), (4, 0), (2, 37)])
    assert layer_shapes(compact) == [(0, 5), (4, 0), (2, 37)] and compact.config.base_model_type == "roberta"
    assert not compact.training


def _slow_small_models(monkeypatch, table, power=0.8):
    """Whole models that take (table fraction) ** power of the teacher's time: small ones slower than the
    table says, as irregular shapes measured on the CPU (bench/results/latency-table-check-cpu.json)."""
    def whole(teacher, shapes, batch, seq_len, repeats):
        return {"teacher": 100.0} | {n: 100.0 * table.fraction(s) ** power for n, s in shapes.items()}

    monkeypatch.setattr(lt, "_time_models", whole)


def test_on_target_corrects_the_table_by_the_clock(monkeypatch):
    table = _table()
    table.shape = {"batch": 1, "seq_len": 32}
    _slow_small_models(monkeypatch, table)
    fisher = torch.rand(3, 4), torch.rand(3, 37)
    dense = tiny_model("bert")

    def plan(t):
        heads, units = search_mask(*fisher, dense, t, "latency", table=table)
        return (heads, units), list(zip(heads.sum(1).tolist(), units.sum(1).tolist()))

    (heads, units), tries = lt.on_target(plan, 0.5, dense, table, tolerance=0.03)
    first, last = tries[0]["measured_fraction"], tries[-1]["measured_fraction"]
    assert first > 0.53  # the table alone overshoots: small models are slower than it says
    assert abs(last / 0.5 - 1) <= 0.03 and len(tries) > 1 and tries[-1]["table_target"] < 0.5
    assert table.fraction(list(zip(heads.sum(1).tolist(), units.sum(1).tolist()))) ** 0.8 == pytest.approx(last)


def _linear_times(monkeypatch, fixed: float):
    """A stand-in for timing: each block costs ``fixed`` ms plus 1 ms per head or 0.1 ms per FFN unit, and
    a whole model its blocks plus 1 ms, so the whole-prune tests do not depend on the machine's load."""
    def whole(teacher, shapes, batch, seq_len, repeats):
        shapes = shapes | {"teacher": layer_shapes(teacher)}
        return {name: sum(2 * fixed + h + 0.1 * f for h, f in s) + 1.0 for name, s in shapes.items()}

    monkeypatch.setattr(lt, "_time_blocks", lambda teacher, shape, device, head_grid, ffn_grid, repeats: (
        [fixed + h for h in head_grid], [fixed + 0.1 * w for w in ffn_grid]))
    monkeypatch.setattr(lt, "_time_models", whole)


def _prune_args(model_dir, squad_file, out, target):
    return ["prune", "--model", model_dir, "--train", squad_file, "--out", str(out), "--target", str(target),
            "--budget", "latency", "--latency-seq", "32", "--max-steps", "2", "--finetune-steps", "0", "--batch-size", "4",
            "--max-length", "64", "--doc-stride", "24", "--max-train-examples", "8"]


def test_prune_with_a_latency_budget_reports_predicted_and_measured_speedup(tmp_path, model_dir, squad_files, monkeypatch):
    _linear_times(monkeypatch, 0.5)
    out = tmp_path / "run"
    assert main(_prune_args(model_dir, squad_files[0], out, 0.5)) == 0
    saved = json.loads((out / "prune_result.json").read_text())
    lat = saved["latency"]
    assert lat["predicted_speedup"] > 1.0 and lat["measured_speedup"] > 0 and lat["seq_len"] == 32
    assert 0.4 < lat["predicted_fraction"] <= 0.5 + 1e-9  # the table's own count, as snapping kept it
    assert lat["predicted_speedup"] == pytest.approx(1 / lat["predicted_fraction"])
    assert saved["prune_config"]["budget"] == "latency"


def test_a_latency_target_below_the_fixed_cost_is_one_clear_error(tmp_path, model_dir, squad_files, monkeypatch, capsys):
    # measured under load, a tiny model's LayerNorms and call overhead can be over half its layers' time
    _linear_times(monkeypatch, 20.0)
    assert main(_prune_args(model_dir, squad_files[0], tmp_path / "run", 0.5)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    err = [line for line in err.splitlines() if "error:" in line]
    assert len(err) == 1 and "below what --budget latency can reach" in err[0] and "raise --target" in err[0]
    assert not (tmp_path / "run" / "prune_result.json").exists()


@pytest.mark.parametrize("method", ["l0", "posttrain"])
def test_a_latency_budget_lands_on_the_measured_target(tmp_path, model_dir, squad_files, monkeypatch, method):
    # whole models whose time grows as (their blocks' time) ** 0.7: small ones slower than a line predicts
    _linear_times(monkeypatch, 0.5)
    blocks = lt._time_models

    def whole(teacher, shapes, *a):
        return {n: 100.0 * (ms / 100.0) ** 0.7 for n, ms in blocks(teacher, shapes, *a).items()}

    monkeypatch.setattr(lt, "_time_models", whole)
    out = tmp_path / method
    assert main(_prune_args(model_dir, squad_files[0], out, 0.5) + ["--method", method]) == 0
    saved = json.loads((out / "prune_result.json").read_text())
    tries = saved["latency"]["tries"]
    assert len(tries) > 1 and tries[0]["table_target"] == 0.5
    best = min(tries, key=lambda t: abs(t["measured_fraction"] - 0.5))
    assert abs(best["measured_fraction"] / 0.5 - 1) <= 0.03
    assert [list(s) for s in zip(saved["num_heads"], saved["ffn_dims"])] == [list(s) for s in best["shapes"]]  # the model kept
