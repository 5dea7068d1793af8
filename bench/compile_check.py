#!/usr/bin/env python
"""Compile every Triton kernel for A100 (sm_80) and H100 (sm_90) on a machine without a GPU.

    python bench/compile_check.py [--arch 80,90] [--dtype fp16,bf16,fp32] [--only attn-train,...] [--jobs N]

The kernels' own front doors (``slimbert.kernels.attention`` / ``attention_varlen`` / ``ffn`` and the
attention backward) run on empty CPU tensors while ``JITFunction.run`` records each launch instead of
running it, so every launch is captured with exactly the arguments, block sizes, warps and stages the
launchers choose on a GPU (for an autotuned kernel: every config it may pick). Each distinct
specialisation is then compiled with ``triton.compile`` for ``GPUTarget("cuda", arch, 32)``; ptxas,
shipped in the triton wheel, reports registers and spills.

One row per compiled kernel: registers, spilled bytes, shared memory, the dot instruction in the PTX
(wgmma on sm_90, mma on sm_80, FMA = no tensor cores) and whether the K loop is software-pipelined
(2-D tile copies become async copies in the TTGIR). Exit status 1 on a compile failure, a spill, an
unpipelined dot loop or an FMA-only dot in fp16/bf16/TF32; fp32 runs as the kernels run it by default
(TF32, ``SLIMBERT_FP32_DOT``), ``--fp32 ieee`` checks the exact-fp32 opt-in too
(FMA there is expected; spills still fail).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import re
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from unittest import mock

os.environ.pop("TRITON_INTERPRET", None)  # compile for real: the launchers pick their GPU configs
os.environ["TRITON_ALWAYS_COMPILE"] = "1"  # so ptxas runs (and logs) for every compile
os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9's default, without its warning
os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="slimbert_compile_check_"))

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402
from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: E402

import slimbert.kernels as K  # noqa: E402

# The package rebinds ``attention`` / ``ffn`` to the front-door functions: take the modules.
kattn, kffn = sys.modules["slimbert.kernels.attention"], sys.modules["slimbert.kernels.ffn"]

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
HIDDEN = 768  # BERT-base width; the FFN's other dimension

# Representative shapes (issue 11): head_dim, heads, FFN width, batch, sequence length.
HEAD_DIMS, HEADS, WIDTHS, BATCHES, SEQS = (32, 64, 80), (1, 5, 12), (1, 397, 1536, 3072), (1, 32), (128, 384)


# --------------------------------------------------------------------------------------------
# 1. Capture: run the front doors with every launch recorded instead of executed
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def recording(sink: list):
    def jit_run(self, *args, grid, warmup, **kwargs):
        sink.append((self, grid, args, kwargs))

    def autotune_run(self, *args, **kwargs):
        named = dict(zip(self.arg_names, args))
        self.nargs = named
        candidates = self.prune_configs(kwargs)
        self.nargs = None
        for cfg in candidates:  # every config the tuner may pick for this launch must compile cleanly
            meta = {**named, **kwargs, **cfg.all_kwargs()}
            grid = kwargs["grid"](meta) if callable(kwargs["grid"]) else kwargs["grid"]
            extra = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}
            sink.append((self.fn, grid, args, {**extra, **cfg.all_kwargs()}))

    force = mock.patch.multiple  # the front doors ask use_triton(); on CPU tensors it would say no
    with mock.patch.object(JITFunction, "run", jit_run), mock.patch.object(Autotuner, "run", autotune_run), \
            force(kattn, use_triton=lambda t: True), force(kffn, use_triton=lambda t: True):
        yield


def scenarios(B, H, T, d, F, dtype):
    """The library's call patterns: compact model at inference, gated model in training, unpadded."""

    def qkv(grad=False):  # HF layout: proj(x).view(B, T, H, d).transpose(1, 2), non-contiguous
        return [torch.zeros(B, T, H, d, dtype=dtype).transpose(1, 2).requires_grad_(grad) for _ in range(3)]

    mask = torch.ones(B, T, dtype=torch.bool)

    def attn_infer():
        with torch.no_grad():
            K.attention(*qkv(), key_padding_mask=mask)

    def attn_train():  # mask + head gate + dropout, forward and backward
        q, k, v = qkv(True)
        out = K.attention(q, k, v, key_padding_mask=mask, head_scale=torch.ones(H, requires_grad=True),
                          dropout_p=0.1, seed=1)
        out.backward(torch.zeros_like(out))

    def attn_varlen():  # unpadded inference: B sequences of 3/4 T tokens packed together
        n = B * (3 * T // 4)
        cu = torch.arange(0, n + 1, 3 * T // 4, dtype=torch.int32)
        with torch.inference_mode():
            q, k, v = (torch.zeros(n, H * d, dtype=dtype).view(n, H, d) for _ in range(3))
            K.attention_varlen(q, k, v, cu, 3 * T // 4)

    def ffn(train):
        def run():
            x = torch.zeros(B, T, HIDDEN, dtype=dtype, requires_grad=train)
            gate = torch.ones(F, requires_grad=True) if train else None
            with torch.set_grad_enabled(train):
                K.ffn(x, torch.zeros(F, HIDDEN, dtype=dtype), torch.zeros(F, dtype=dtype),
                      torch.zeros(HIDDEN, F, dtype=dtype), torch.zeros(HIDDEN, dtype=dtype), gate)
        return run

    return {"attn-infer": attn_infer, "attn-train": attn_train, "attn-varlen": attn_varlen,
            "ffn-infer": ffn(False), "ffn-train": ffn(True)}


def capture(dtypes, only, fp32, head_dims=HEAD_DIMS):
    """Distinct (kernel, arch-independent specialisation) launches, each with a readable case name."""
    launches = {}
    for dname, (B, T), H, d, F in itertools.product(dtypes, itertools.product(BATCHES, SEQS), HEADS, head_dims, WIDTHS):
        for name, run in scenarios(B, H, T, d, F, DTYPES[dname]).items():
            attn = name.startswith("attn")
            if (only and name not in only) or (attn and F != WIDTHS[0]) or (not attn and (H, d) != (HEADS[0], head_dims[0])):
                continue  # attention does not depend on the FFN width, nor the FFN on heads
            sink = []
            with recording(sink), mock.patch.dict(os.environ, SLIMBERT_FP32_DOT=fp32):
                run()
            case = f"{name} B{B} T{T} " + (f"H{H} d{d}" if attn else f"F{F}")
            for fn, grid, args, kwargs in sink:
                key = (fn.__name__, dname, _spec_key(fn, args, kwargs))
                entry = launches.setdefault(key, dict(fn=fn, args=args, kwargs=kwargs, dtype=dname, cases=[], grids=[]))
                entry["cases"].append(case)
                entry["grids"].append(tuple(grid))
    return list(launches.values())


def _bind(fn, args, kwargs, arch):
    """What ``JITFunction.run`` does before compiling: bind, specialise, pack."""
    backend = make_backend(GPUTarget("cuda", arch, 32))
    bound, spec, opts = create_function_from_signature(fn.signature, fn.params, backend)(*args, **dict(kwargs, debug=False))
    options, signature, constexprs, attrs = fn._pack_args(backend, dict(kwargs, debug=False), bound, spec, opts)
    return options, signature, constexprs, attrs


def _spec_key(fn, args, kwargs):
    options, signature, constexprs, attrs = _bind(fn, args, kwargs, 90)
    return repr((sorted(signature.items()), sorted(constexprs.items()), sorted(attrs.items()),
                 sorted(options.__dict__.items())))


# --------------------------------------------------------------------------------------------
# 2. Compile and read what came out
# --------------------------------------------------------------------------------------------

_JOBS: list = []  # filled before the worker pool forks


def compile_one(i: int) -> dict:
    launch, arch = _JOBS[i]
    fn, kwargs = launch["fn"], launch["kwargs"]
    options, signature, constexprs, attrs = _bind(fn, launch["args"], kwargs, arch)
    row = dict(kernel=fn.__name__, case=launch["cases"][0], arch=arch, dtype=launch["dtype"],
               config=_config(kwargs, options), grid=max(_ctas(g) for g in launch["grids"]),
               min_grid=min(_ctas(g) for g in launch["grids"]), problems=[])
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            ck = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                                options=options.__dict__)
    except Exception as e:  # noqa: BLE001 - reported in the table, counted as a failure
        row["problems"].append(f"compile error: {str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__}")
        return row
    regs = re.findall(r"Used (\d+) registers", log.getvalue())
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log.getvalue())
    ttgir, ptx = ck.asm["ttgir"], ck.asm["ptx"]
    row["regs"] = int(regs[-1]) if regs else None
    row["spill"] = int(spills[-1][0]) + int(spills[-1][1]) if spills else 0
    row["smem_kib"] = ck.metadata.shared / 1024
    row["dot"] = _dot_kind(ptx) if "tt.dot" in ttgir or "warp_group_dot" in ttgir else "-"
    loop_dot = _has_dot_loop(ttgir)
    async_copies = len(re.findall(r"async_copy_global_to_local[^\n]*tensor<\d+x\d+x|async_tma_copy", ttgir))
    row["pipelined"] = ("yes" if async_copies else "NO") if loop_dot else "-"
    if row["spill"]:
        row["problems"].append(f"spills {row['spill']} B")
    if row["pipelined"] == "NO":
        row["problems"].append("dot loop not pipelined")
    tensor_cores_expected = row["dtype"] != "fp32" or kwargs.get("PRECISION") == "tf32"
    if row["dot"] == "FMA" and tensor_cores_expected:
        row["problems"].append("dot on FMA, not tensor cores")
    return row


def _config(kwargs, options) -> str:
    blocks = "x".join(str(kwargs[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_D") if k in kwargs)
    return f"{blocks} w{options.num_warps} s{options.num_stages}"


def _ctas(grid) -> int:
    n = 1
    for g in grid:
        n *= g
    return n


def _dot_kind(ptx: str) -> str:
    kinds = {f"wgmma.{m}" for m in re.findall(r"wgmma\.mma_async\S*?\.(f16|bf16|tf32)\.", ptx)}
    kinds |= {f"mma.{m}" for m in re.findall(r"mma\.sync\.aligned\.\S*?\.(f16|bf16|tf32)\.", ptx)}
    return "+".join(sorted(kinds)) or "FMA"


def _has_dot_loop(ttgir: str) -> bool:
    """A dot inside an scf.for body (the K loop of a matmul, the key loop of attention)."""
    depth, in_loop = 0, []
    for line in ttgir.splitlines():
        if "scf.for" in line:
            in_loop.append(depth)
        if in_loop and ("tt.dot" in line or "warp_group_dot" in line):
            return True
        depth += line.count("{") - line.count("}")
        while in_loop and depth <= in_loop[-1]:
            in_loop.pop()
    return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="80,90", help="compute capabilities to compile for (default: 80,90)")
    ap.add_argument("--dtype", default="fp16,bf16,fp32", help="input dtypes (default: fp16,bf16,fp32)")
    ap.add_argument("--fp32", default="tf32", choices=["tf32", "ieee"], help="fp32 dot precision to check (default: tf32, the kernels' default)")
    ap.add_argument("--only", default="", help="comma list of attn-infer,attn-train,attn-varlen,ffn-infer,ffn-train (default: all)")
    ap.add_argument("--head-dims", default=",".join(map(str, HEAD_DIMS)), help="attention head sizes (default: 32,64,80)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="compile processes (default: all cores)")
    a = ap.parse_args(argv)
    archs = [int(x) for x in a.arch.split(",")]
    only = set(filter(None, a.only.split(",")))
    launches = capture(a.dtype.split(","), only, a.fp32, tuple(int(x) for x in a.head_dims.split(",")))
    _JOBS[:] = [(launch, arch) for launch in launches for arch in archs]
    print(f"triton {triton.__version__}, torch {torch.__version__}; {len(launches)} specialisations x "
          f"{len(archs)} archs, fp32 dots: {a.fp32}", flush=True)

    import multiprocessing
    with ProcessPoolExecutor(max(1, a.jobs), mp_context=multiprocessing.get_context("fork")) as pool:
        rows = list(pool.map(compile_one, range(len(_JOBS))))

    hdr = (f"{'kernel':28} {'case (first of its kind)':30} {'sm':>3} {'dtype':5} {'config':18} {'regs':>4} {'spill':>5} "
           f"{'smem':>6} {'dot':14} {'pipe':4} {'CTAs':>11}  status")
    print(hdr + "\n" + "-" * len(hdr))
    for r in sorted(rows, key=lambda r: (r["kernel"], r["dtype"], r["case"], r["arch"])):
        status = "; ".join(r["problems"]) or "ok"
        print(f"{r['kernel']:28} {r['case']:30} {r['arch']:>3} {r['dtype']:5} {r['config']:18} {r.get('regs') or '-':>4} "
              f"{r.get('spill', '-'):>5} {r.get('smem_kib', 0):5.1f}K {r.get('dot', '-'):14} {r.get('pipelined', '-'):4} "
              f"{r['min_grid']:>5}-{r['grid']:<5}  {status}")
    bad = [r for r in rows if r["problems"]]
    print(f"\n{len(rows)} compiled, {len(bad)} with problems"
          + "".join(f"\n  {r['kernel']} sm_{r['arch']} {r['dtype']} {r['case']}: {'; '.join(r['problems'])}" for r in bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
