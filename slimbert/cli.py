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


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per config field, with the field's help text and default."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help = f"{f.metadata.get('help', '')} (default: {default})"
        if hints[f.name] in (bool, bool | None):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help)
        elif get_origin(hints[f.name]) is Literal:
            parser.add_argument(flag, choices=get_args(hints[f.name]), default=default, help=help)
        else:
            parser.add_argument(flag, type=str if default is None else type(default), default=default, help=help)


def _pick(args, cls):
    try:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
    except ValueError as e:
        raise CliError(str(e)) from e


def cmd_prune(args) -> dict:
    from slimbert.tasks.squad.data import check_tokenizer
    from slimbert.api import RESULT, prune

    out = args.out
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
        _pick(args, PruneConfig),
        train_data=train,
        eval_data=evl,
        tokenizer=tokenizer,
        train_cfg=_pick(args, TrainConfig),
        out_dir=out,
        resume=args.resume,
    )
    summary = result.summary()
    summary.pop("history")
    return summary


def cmd_eval(args) -> dict:
    from slimbert.tasks.squad.data import check_tokenizer, load_squad
    from slimbert.tasks.squad.evaluate import evaluate

    model, tokenizer = load_model(args.model)
    check_tokenizer(tokenizer, model)
    if args.task == "nq":
        if args.predictions:
            raise CliError("--predictions writes SQuAD 2.0 files; NQ prediction files are not written yet")
        from slimbert.tasks.nq.data import load_nq
        from slimbert.tasks.nq.evaluate import evaluate_nq

        examples = load_nq(args.data, limit=args.max_examples, skip_bad=args.skip_bad_lines)
        scores = evaluate_nq(model, tokenizer, examples, args.batch_size, args.max_length, args.doc_stride, args.null_threshold)
        return {k: v for k, v in scores.items() if "best_precision" not in k and "best_recall" not in k}
    examples = load_squad(args.data, split="validation", limit=args.max_examples)
    scores = evaluate(model, tokenizer, examples, args.batch_size, args.max_length, args.doc_stride, args.null_threshold,
                      predictions_dir=args.predictions)
    keys = ["exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_exact", "best_f1_thresh", "n", "seconds"]
    return {k: scores[k] for k in keys if k in scores}


def cmd_convert(args) -> dict:
    from slimbert.tasks.nq.data import squad_to_nq

    return squad_to_nq(args.src, args.dst, limit=args.limit)


def cmd_report(args) -> dict:
    from slimbert.pruning.cost import format_report, model_report

    model, _ = load_model(args.model)
    r = model_report(model, args.seq_len)
    if not args.json:
        print(format_report(r))
    return r


def cmd_sweep(args) -> dict:
    from slimbert.sweep import DEFAULT_METHODS, SweepError, sweep

    try:
        methods = args.methods.split(",") if args.methods else DEFAULT_METHODS
        rows = sweep(
            args.model, args.train, args.eval, args.targets.split(","), methods, out_dir=args.out,
            train_cfg=_pick(args, TrainConfig), seq_len=args.seq_len, batch_size=args.latency_batch,
        )
    except SweepError as e:
        raise CliError(str(e)) from e
    return {"csv": os.path.join(args.out, "curve.csv"), "png": os.path.join(args.out, "curve.png"), "rows": len(rows)}


def cmd_demo(args) -> dict:
    from slimbert.demo import run_demo

    return run_demo(out=args.out, steps=args.steps)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimbert", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    pr = sub.add_parser("prune", help="learn gates toward a target size with distillation, collapse, save")
    pr.add_argument("--model", required=True, help="folder of a BERT/RoBERTa QA model (the teacher)")
    pr.add_argument("--train", default=None, help="SQuAD 2.0 JSON, or NQ JSON lines with --task nq (default: the hub)")
    pr.add_argument("--eval", default=None, help="SQuAD 2.0 JSON (NQ JSON lines with --task nq) to evaluate on (optional)")
    pr.add_argument("--out", required=True, help="folder for the compact model and checkpoints")
    pr.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    pr.add_argument("--resume", action="store_true", help="continue a killed run from its last checkpoint in --out")
    pr.add_argument("--skip-bad-lines", action="store_true", help="--task nq: skip and count malformed lines instead of stopping")
    _add_dataclass_flags(pr, PruneConfig)
    _add_dataclass_flags(pr, TrainConfig)
    pr.set_defaults(fn=cmd_prune)

    ev = sub.add_parser("eval", help="SQuAD 2.0 EM/F1, or NQ long/short P/R/F1, of a model (one JSON line)")
    ev.add_argument("--model", required=True)
    ev.add_argument("--task", choices=["squad", "nq"], default="squad")
    ev.add_argument("--data", default=None, help="SQuAD 2.0 JSON, or NQ JSON lines with --task nq (default: the hub)")
    ev.add_argument("--skip-bad-lines", action="store_true", help="--task nq: skip and count malformed lines instead of stopping")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--max-length", type=int, default=384)
    ev.add_argument("--doc-stride", type=int, default=128)
    ev.add_argument("--null-threshold", type=float, default=0.0)
    ev.add_argument("--max-examples", type=int, default=0, help="0: all")
    ev.add_argument("--predictions", default=None, metavar="DIR",
                    help="write the official predictions.json and na_prob.json there (SQuAD 2.0)")
    ev.set_defaults(fn=cmd_eval)

    rp = sub.add_parser("report", help="per-layer heads and FFN width, parameters and FLOPs before/after")
    rp.add_argument("--model", required=True)
    rp.add_argument("--seq-len", type=int, default=384)
    rp.add_argument("--json", action="store_true", help="print only the JSON")
    rp.set_defaults(fn=cmd_report)

    cv = sub.add_parser("convert", help="convert data between formats: squad-to-nq IN.json OUT.jsonl[.gz]")
    cv.add_argument("kind", choices=["squad-to-nq"])
    cv.add_argument("src", help="SQuAD 2.0 JSON file")
    cv.add_argument("dst", help="NQ JSON-lines file to write (gzip when it ends in .gz)")
    cv.add_argument("--limit", type=int, default=0, help="questions to convert (0: all)")
    cv.set_defaults(fn=cmd_convert)

    sw = sub.add_parser("sweep", help="prune at several sizes with several methods; curve.csv and curve.png of F1 vs speed")
    sw.add_argument("--model", required=True, help="folder of a BERT/RoBERTa QA model (the teacher)")
    sw.add_argument("--train", default=None, help="SQuAD 2.0 JSON (default: the hub)")
    sw.add_argument("--eval", default=None, help="SQuAD 2.0 JSON to score every point on (default: the hub)")
    sw.add_argument("--targets", required=True, help="comma list of kept fractions of prunable parameters, e.g. 0.8,0.5,0.3")
    sw.add_argument("--methods", default=None, help="comma list of l0,l0-heads,l0-ffn,l0-fisher,random,uniform,posttrain (default: all)")
    sw.add_argument("--out", required=True, help="folder for points/, curve.csv, curve.png; rerun to finish a killed sweep")
    sw.add_argument("--seq-len", type=int, default=384, help="sequence length of the latency and FLOP measurements")
    sw.add_argument("--latency-batch", type=int, default=1, help="batch size of the latency measurement")
    _add_dataclass_flags(sw, TrainConfig)
    sw.set_defaults(fn=cmd_sweep)

    dm = sub.add_parser("demo", help="prune the vendored small SQuAD 2.0 model on a vendored slice (CPU, ~10 min)")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's budget)")
    dm.set_defaults(fn=cmd_demo)
    return p


def main(argv=None) -> int:
    from slimbert.io import ModelLoadError
    from slimbert.models.arch import UnsupportedModelError
    from slimbert.tasks.squad.data import DataError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        result = args.fn(args)
    except (CliError, DataError, ModelLoadError, UnsupportedModelError) as e:
        print(f"slimbert {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
