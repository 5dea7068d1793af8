"""The ``slimbert`` command: prune | eval | report | sweep | demo | convert.

    slimbert prune --model M --train T.json --eval D.json --target 0.5 --out runs/p50
    slimbert eval --model runs/p50 --data D.json          # one JSON line
    slimbert report --model runs/p50                      # per-layer heads/FFN, params, FLOPs
    slimbert sweep --model M --train T.json --eval D.json --targets 0.8,0.5,0.3 --out runs/sweep
    slimbert demo                                         # the README's embedded default
    slimbert convert squad-to-nq IN.json OUT.jsonl.gz     # SQuAD 2.0 as Natural Questions lines
    slimbert prune --task nq --train T.jsonl.gz ...       # and eval --task nq: Natural Questions

``prune`` flags map one-to-one onto the fields of PruneConfig and TrainConfig.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import MISSING, fields
from typing import Literal, get_args, get_origin, get_type_hints

from slimbert.config import PruneConfig, TrainConfig
from slimbert.io import load_model


class CliError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line that says what to do, not the usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # a required flag has no default to show
        return action.help if action.required else super()._get_help_string(action)


def _count(least: int):
    """An argparse type: an integer of at least ``least``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {n}")
        return n

    return parse


def _writable(path: str, flag: str, folder: bool = True) -> None:
    """Refuse an output path that cannot be made (saves write a sibling first, so its parent counts), before any work."""
    path = os.path.abspath(path)
    kinds = ("folder", "file") if folder else ("file", "folder")
    if os.path.exists(path) and os.path.isdir(path) != folder:
        raise CliError(f"{flag} {path} is a {kinds[1]}, not a {kinds[0]}; pick another {flag}")
    probe = os.path.dirname(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise CliError(f"{flag} {path} cannot be made: {probe} is a file, not a folder; pick another {flag}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CliError(f"{flag} {path} cannot be made: no write permission in {probe}; pick another {flag}")


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per config field, with the field's help text and default."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help = f.metadata.get("help", "")
        if hints[f.name] in (bool, bool | None):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)
        elif get_origin(hints[f.name]) is Literal:
            parser.add_argument(flag, choices=get_args(hints[f.name]), default=default, help=help)
        elif hints[f.name] == float | None:
            parser.add_argument(flag, type=float, default=default, help=help)
        else:
            parser.add_argument(flag, type=str if default is None else type(default), default=default, help=help)


def _pick(args, cls):
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})  # ConfigError says what is wrong


def cmd_prune(args) -> dict:
    from slimbert.tasks.squad.data import check_tokenizer
    from slimbert.api import RESULT, prune

    out = args.out
    if args.resume and args.overwrite:
        raise CliError("--resume continues the run in --out and --overwrite starts a new one: pass only one")
    prune_cfg, train_cfg = _pick(args, PruneConfig), _pick(args, TrainConfig)
    _writable(out, "--out")
    if os.path.exists(os.path.join(out, RESULT)) and not args.overwrite:
        raise CliError(f"{out} already holds a pruned model; pass --overwrite to replace it or pick another --out")
    if os.path.isdir(out) and os.listdir(out) and not (args.overwrite or args.resume):
        raise CliError(f"{out} exists and is not empty; pass --overwrite to reuse it, or --resume to continue a run there")
    model, tokenizer = load_model(args.model)
    check_tokenizer(tokenizer, model)
    train, evl = args.train, args.eval
    if args.task == "nq":  # read here so --skip-bad-lines reaches the reader
        from slimbert.tasks.nq.data import load_nq

        train = load_nq(args.train, split="train", skip_bad=args.skip_bad_lines)
        evl = load_nq(args.eval, skip_bad=args.skip_bad_lines) if args.eval is not None else None
    result = prune(
        model,
        prune_cfg,
        train_data=train,
        eval_data=evl,
        tokenizer=tokenizer,
        train_cfg=train_cfg,
        out_dir=out,
        resume=args.resume,
    )
    summary = result.summary()
    summary.pop("history")
    return summary


def cmd_eval(args) -> dict:
    from slimbert.tasks.squad.data import check_max_length, check_tokenizer, load_squad
    from slimbert.tasks.squad.evaluate import evaluate

    if args.predictions:
        _writable(args.predictions, "--predictions")
    model, tokenizer = load_model(args.model)
    check_tokenizer(tokenizer, model)
    check_max_length(model, args.max_length)
    if args.task == "nq":
        from slimbert.tasks.nq.data import load_nq
        from slimbert.tasks.nq.evaluate import evaluate_nq

        examples = load_nq(args.data, limit=args.max_examples, skip_bad=args.skip_bad_lines)
        scores = evaluate_nq(model, tokenizer, examples, args.batch_size, args.max_length, args.doc_stride, args.null_threshold,
                             predictions_dir=args.predictions)
        return {k: v for k, v in scores.items() if "best_precision" not in k and "best_recall" not in k}
    examples = load_squad(args.data, split="validation", limit=args.max_examples)
    scores = evaluate(model, tokenizer, examples, args.batch_size, args.max_length, args.doc_stride, args.null_threshold,
                      predictions_dir=args.predictions)
    keys = ["exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_exact", "best_f1_thresh", "n", "seconds"]
    return {k: scores[k] for k in keys if k in scores}


def cmd_convert(args) -> dict:
    from slimbert.tasks.nq.data import squad_to_nq

    _writable(args.dst, "dst", folder=False)
    return squad_to_nq(args.src, args.dst, limit=args.limit, original=args.original)


def cmd_report(args) -> dict:
    from slimbert.models.arch import max_tokens
    from slimbert.pruning.cost import format_report, model_report

    model, _ = load_model(args.model)
    seq_len = args.seq_len or min(384, max_tokens(model.config))
    if seq_len > max_tokens(model.config):
        raise CliError(f"--seq-len {seq_len} is longer than this model's {max_tokens(model.config)} positions; lower it")
    r = model_report(model, seq_len)
    if not args.json:
        print(format_report(r))
    return r


def cmd_sweep(args) -> dict:
    from slimbert.sweep import DEFAULT_METHODS, sweep

    train_cfg = _pick(args, TrainConfig)
    _writable(args.out, "--out")
    methods = args.methods.split(",") if args.methods else DEFAULT_METHODS
    rows = sweep(
        args.model, args.train, args.eval, args.targets.split(","), methods, out_dir=args.out,
        train_cfg=train_cfg, seq_len=args.seq_len, batch_size=args.latency_batch,
    )
    return {"csv": os.path.join(args.out, "curve.csv"), "png": os.path.join(args.out, "curve.png"), "rows": len(rows)}


def cmd_demo(args) -> dict:
    from slimbert.demo import run_demo

    _writable(args.out, "--out")
    return run_demo(out=args.out, steps=args.steps, overwrite=args.overwrite)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="slimbert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def command(name: str, help: str, fn) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help, formatter_class=_Help)
        sp.set_defaults(fn=fn)
        return sp

    teacher = "folder of a BERT/RoBERTa extractive QA model and its tokenizer (the teacher)"
    skip = "--task nq: skip and count malformed lines instead of stopping at the first"
    pr = command("prune", "learn gates toward a target size with distillation, collapse, save", cmd_prune)
    pr.add_argument("--model", required=True, help=teacher)
    pr.add_argument("--train", default=None, help="SQuAD 2.0 JSON, or NQ JSON lines with --task nq (None: the hub's)")
    pr.add_argument("--eval", default=None, help="SQuAD 2.0 JSON (NQ JSON lines with --task nq) to score before and after (None: no scores)")
    pr.add_argument("--out", required=True, help="folder for the compact model, prune_result.json and checkpoints")
    pr.add_argument("--overwrite", action="store_true", help="start a new run in a non-empty --out (its old checkpoints are removed)")
    pr.add_argument("--resume", action="store_true", help="continue the killed run in --out from its last checkpoint (same model, data, settings)")
    pr.add_argument("--skip-bad-lines", action="store_true", help=skip)
    _add_dataclass_flags(pr, PruneConfig)
    _add_dataclass_flags(pr, TrainConfig)

    ev = command("eval", "SQuAD 2.0 EM/F1, or NQ long/short P/R/F1, of a model (one JSON line)", cmd_eval)
    ev.add_argument("--model", required=True, help="folder of an extractive QA model and its tokenizer")
    ev.add_argument("--task", choices=["squad", "nq"], default="squad", help="squad: SQuAD 2.0 JSON; nq: Natural Questions JSON lines")
    ev.add_argument("--data", default=None, help="SQuAD 2.0 JSON, or NQ JSON lines with --task nq (None: the hub's dev set)")
    ev.add_argument("--skip-bad-lines", action="store_true", help=skip)
    ev.add_argument("--batch-size", type=_count(1), default=32, help="windows per forward pass")
    ev.add_argument("--max-length", type=_count(1), default=384, help="tokens per window, at most the model's positions")
    ev.add_argument("--doc-stride", type=_count(0), default=128, help="overlap of consecutive windows, below max-length / 2")
    ev.add_argument("--null-threshold", type=float, default=0.0, help="answer only where the best span beats no-answer by more than this")
    ev.add_argument("--max-examples", type=_count(0), default=0, help="score only the first N questions (0: all)")
    ev.add_argument("--predictions", default=None, metavar="DIR",
                    help="write the official prediction files there: predictions.json and na_prob.json (SQuAD 2.0), "
                    "predictions.json (NQ, as nq_eval.py reads it)")

    rp = command("report", "per-layer heads and FFN width, parameters and FLOPs before/after", cmd_report)
    rp.add_argument("--model", required=True, help="folder of a QA model, dense or pruned by slimbert")
    rp.add_argument("--seq-len", type=_count(1), default=None, help="sequence length the FLOPs are counted at (None: 384 or the model's limit)")
    rp.add_argument("--json", action="store_true", help="print only the JSON line, not the table")

    cv = command("convert", "convert data between formats: squad-to-nq IN.json OUT.jsonl[.gz]", cmd_convert)
    cv.add_argument("kind", choices=["squad-to-nq"], help="the conversion (squad-to-nq: SQuAD 2.0 JSON to NQ JSON lines)")
    cv.add_argument("src", help="SQuAD 2.0 JSON file")
    cv.add_argument("dst", help="NQ JSON-lines file to write (gzip when it ends in .gz)")
    cv.add_argument("--limit", type=_count(0), default=0, help="questions to convert (0: all)")
    cv.add_argument("--original", action="store_true",
                    help="write the original NQ format that nq_eval.py reads (document_tokens, byte offsets) instead of the simplified one")

    sw = command("sweep", "prune at several sizes with several methods; curve.csv and curve.png of F1 vs speed", cmd_sweep)
    sw.add_argument("--model", required=True, help=teacher)
    sw.add_argument("--train", default=None, help="SQuAD 2.0 JSON (None: the hub's)")
    sw.add_argument("--eval", default=None, help="SQuAD 2.0 JSON to score every point on (None: the hub's)")
    sw.add_argument("--targets", required=True, help="comma list of kept fractions of prunable parameters, e.g. 0.8,0.5,0.3")
    sw.add_argument("--methods", default=None, help="comma list of l0,l0-heads,l0-ffn,l0-fisher,random,uniform,posttrain,l0-family (None: all)")
    sw.add_argument("--out", required=True, help="folder for points/, curve.csv, curve.png; rerun to finish a killed sweep")
    sw.add_argument("--seq-len", type=_count(1), default=384, help="sequence length of the latency and FLOP measurements")
    sw.add_argument("--latency-batch", type=_count(1), default=1, help="batch size of the latency measurement")
    _add_dataclass_flags(sw, TrainConfig)

    dm = command("demo", "prune the vendored small SQuAD 2.0 model on a vendored slice (CPU, ~7 min)", cmd_demo)
    dm.add_argument("--out", default="runs/demo", help="folder for the compact model; a killed demo there resumes")
    dm.add_argument("--steps", type=_count(1), default=None, help="gate-training steps (None: the demo's 100)")
    dm.add_argument("--overwrite", action="store_true", help="start over in an --out that holds something else or a finished demo")
    return p


def main(argv=None) -> int:
    from slimbert.config import ConfigError
    from slimbert.io import ModelLoadError
    from slimbert.models.arch import UnsupportedModelError
    from slimbert.tasks.squad.data import DataError
    from slimbert.train.checkpoint import CheckpointError

    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun / accelerate launch only rank 0 reports
    logging.basicConfig(level=logging.INFO if main_process else logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        result = args.fn(args)
    except (CliError, ConfigError, DataError, ModelLoadError, UnsupportedModelError, CheckpointError) as e:
        print(f"slimbert {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a permission or a path the checks above could not foresee
        print(f"slimbert {args.cmd}: error: {e}; check the path, its permissions and free space", file=sys.stderr)
        return 2
    if main_process:
        print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
