"""Every subcommand on bad input: exit status 2, one line that says what to do, never a traceback.

Each row is (argv, words the error line must hold); ``{name}`` in argv is a path from ``paths``.
All run in-process on a tiny random model, so the table takes seconds.
"""

import gzip
import json
import shutil

import pytest
from transformers import BertConfig, BertModel

from slimbert.cli import main
from tests.conftest import DEMO, tiny_model

TRAIN, DEV = str(DEMO / "squad2-train-slice.json"), str(DEMO / "squad2-dev-slice.json")
SMALL = ["--max-steps", "2", "--finetune-steps", "0", "--batch-size", "4", "--max-length", "96", "--doc-stride", "32",
         "--max-train-examples", "8", "--max-eval-examples", "4", "--gate-init", "uniform"]
PRUNE = ["prune", "--model", "{teacher}", "--train", TRAIN, "--out", "{out}", *SMALL]
EVAL = ["eval", "--model", "{teacher}", "--data", DEV, "--max-examples", "4", "--max-length", "96", "--doc-stride", "32"]
SWEEP = ["sweep", "--model", "{teacher}", "--train", TRAIN, "--eval", DEV, "--out", "{out}", "--targets", "0.5",
         "--methods", "uniform", "--seq-len", "64", *SMALL[:-2]]
CONVERT = ["convert", "squad-to-nq"]

CASES = [
    # prune: sizes, lengths, targets, methods
    (PRUNE + ["--batch-size", "0"], "batch_size must be at least 1"),
    (PRUNE + ["--batch-size", "-4"], "batch_size must be at least 1"),
    (PRUNE + ["--max-length", "4096"], "lower --max-length to at most 128"),
    (PRUNE + ["--max-length", "0"], "max_length must be at least 1"),
    (PRUNE + ["--max-length", "8", "--doc-stride", "2"], "a question is too long"),
    (PRUNE + ["--doc-stride", "60"], "lower --doc-stride"),
    (PRUNE + ["--target", "0"], "target must be in (0, 1]"),
    (PRUNE + ["--target", "1.5"], "target must be in (0, 1]"),
    (PRUNE + ["--target", "-0.3"], "target must be in (0, 1]"),
    (PRUNE + ["--target", "half"], "invalid float value"),
    (PRUNE + ["--method", "magic"], "invalid choice"),
    (PRUNE + ["--lr", "0"], "lr must be > 0"),
    (PRUNE + ["--gate-init-keep", "1"], "gate_init_keep must be in (0, 1)"),
    (PRUNE + ["--distill-alpha", "2"], "distill_alpha must be in [0, 1]"),
    (PRUNE + ["--max-steps", "0", "--epochs", "0"], "epochs must be > 0"),
    (PRUNE + ["--max-steps", "-1"], "max_steps must be >= 0"),
    (PRUNE + ["--method", "uniform", "--no-prune-ffn", "--target", "0.05"], "out of reach"),
    (PRUNE + ["--task", "nq", "--method", "posttrain"], "use method='l0' for NQ"),
    (PRUNE + ["--resume", "--overwrite"], "pass only one"),
    # prune: a family (--targets) and the latency budget
    (PRUNE + ["--targets", "0.5,0.8"], "strictly descending"),
    (PRUNE + ["--targets", "0.8,0.8"], "strictly descending"),
    (PRUNE + ["--targets", "0.8,1.5"], "targets must each be in (0, 1]"),
    (PRUNE + ["--targets", "0.8,0"], "targets must each be in (0, 1]"),
    (PRUNE + ["--targets", "0.8,half"], "targets must be numbers"),
    (PRUNE + ["--targets", "0.8,0.5", "--method", "posttrain"], "needs method='l0'"),
    (PRUNE + ["--targets", "0.8,0.6,0.5", "--latency-seq", "64"], "raise --max-steps"),
    (PRUNE + ["--targets", "0.8,0.5"], "lower --latency-seq"),
    (PRUNE + ["--budget", "time"], "invalid choice"),
    (PRUNE + ["--budget", "latency"], "lower --latency-seq"),
    (PRUNE + ["--budget", "latency", "--latency-batch", "0"], "latency_batch and latency_seq must be at least 1"),
    # prune: files
    (PRUNE + ["--train", "{missing}"], "data file not found"),
    (PRUNE + ["--train", "{empty}"], "is not valid JSON"),
    (PRUNE + ["--train", "{corrupt}"], "is not valid JSON"),
    (PRUNE + ["--train", "{truncated}"], "is not valid JSON"),
    (PRUNE + ["--train", "{schema}"], "no top-level 'data' list"),
    (PRUNE + ["--extra-train", "{missing}"], "data file not found"),
    (PRUNE + ["--eval", "{corrupt}"], "is not valid JSON"),
    (PRUNE + ["--task", "nq", "--train", DEV], "missing field"),
    (PRUNE + ["--model", "{encoder}"], "not an extractive QA model"),
    (PRUNE + ["--model", "{missing}"], "cannot load a model config"),
    (PRUNE + ["--model", "{othervocab}"], "do not match"),
    (PRUNE + ["--model", "{badweights}"], "cannot load the model"),
    (PRUNE + ["--out", "{file}/run"], "is a file, not a folder"),
    (PRUNE + ["--out", "{file}"], "is a file, not a folder"),
    (PRUNE + ["--out", "{badckpt}", "--resume"], "not a readable checkpoint"),
    # eval
    (EVAL + ["--batch-size", "0"], "must be at least 1"),
    (EVAL + ["--max-length", "4096"], "lower --max-length to at most 128"),
    (EVAL + ["--max-length", "long"], "expected an integer"),
    (EVAL + ["--doc-stride", "-1"], "must be at least 0"),
    (EVAL + ["--max-examples", "-1"], "must be at least 0"),
    (EVAL + ["--data", "{missing}"], "data file not found"),
    (EVAL + ["--data", "{empty}"], "is not valid JSON"),
    (EVAL + ["--data", "{schema}"], "no top-level 'data' list"),
    (EVAL + ["--task", "nq", "--data", "{badgz}"], "corrupt or truncated"),
    (EVAL + ["--task", "nq", "--data", DEV], "missing field"),
    (EVAL + ["--predictions", "{file}/preds"], "is a file, not a folder"),
    (EVAL + ["--model", "{encoder}"], "not an extractive QA model"),
    (EVAL + ["--model", "{othervocab}"], "do not match"),
    (EVAL + ["--model", "{emptydir}"], "cannot load a model config"),
    # report
    (["report", "--model", "{missing}"], "cannot load a model config"),
    (["report", "--model", "{encoder}"], "not an extractive QA model"),
    (["report", "--model", "{teacher}", "--seq-len", "0"], "must be at least 1"),
    (["report", "--model", "{teacher}", "--seq-len", "100000"], "longer than this model's 128 positions"),
    # sweep
    (SWEEP + ["--targets", "0,1.5"], "targets must be fractions in (0, 1)"),
    (SWEEP + ["--targets", "most"], "targets must be numbers"),
    (SWEEP + ["--methods", "foo"], "unknown method"),
    (SWEEP + ["--seq-len", "4096"], "pick a smaller one"),
    (SWEEP + ["--latency-batch", "0"], "must be at least 1"),
    (SWEEP + ["--batch-size", "0"], "batch_size must be at least 1"),
    (SWEEP + ["--task", "nq"], "task='squad'"),
    (SWEEP + ["--out", "{file}/sweep"], "is a file, not a folder"),
    (SWEEP + ["--model", "{missing}"], "cannot load a model config"),
    (SWEEP + ["--train", "{missing}"], "data file not found"),
    # convert
    (CONVERT + ["{missing}", "{out}.jsonl"], "data file not found"),
    (CONVERT + ["{corrupt}", "{out}.jsonl"], "is not valid JSON"),
    (CONVERT + ["{schema}", "{out}.jsonl"], "no top-level 'data' list"),
    (CONVERT + [DEV, "{file}/x.jsonl"], "is a file, not a folder"),
    (CONVERT + [DEV, "{emptydir}"], "is a folder, not a file"),
    (CONVERT + [DEV, "{out}.jsonl", "--limit", "-1"], "must be at least 0"),
    (["convert", "nq-to-squad", DEV, "{out}.json"], "invalid choice"),
    # demo
    (["demo", "--steps", "0", "--out", "{out}"], "must be at least 1"),
    (["demo", "--steps", "-5", "--out", "{out}"], "must be at least 1"),
    (["demo", "--out", "{foreign}"], "something other than a slimbert demo"),
    (["demo", "--out", "{finished}"], "holds a finished demo"),
    (["demo", "--out", "{file}/demo"], "is a file, not a folder"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("bad")
    tok = AutoTokenizer.from_pretrained(DEMO / "teacher")
    p = {name: root / name for name in ("teacher", "encoder", "othervocab", "badweights", "emptydir", "badckpt", "foreign", "finished")}
    tiny_model("bert").save_pretrained(p["teacher"])
    tok.save_pretrained(p["teacher"])
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)).save_pretrained(p["encoder"])
    tiny_model("roberta").save_pretrained(p["othervocab"])
    tok.save_pretrained(p["othervocab"])  # a 30k-token BERT tokenizer beside a 120-token model
    shutil.copytree(p["teacher"], p["badweights"])
    weights = p["badweights"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a truncated download
    p["emptydir"].mkdir()
    p["badckpt"].mkdir()
    (p["badckpt"] / "gated_train_state.pt").write_bytes(b"half a checkpoint")
    p["foreign"].mkdir()
    (p["foreign"] / "notes.txt").write_text("someone else's")
    p["finished"].mkdir()
    (p["finished"] / "demo_run.json").write_text("{}")
    (p["finished"] / "demo_result.json").write_text("{}")
    text = open(DEV).read()
    files = {"empty": "", "corrupt": "{not json", "truncated": text[: len(text) // 2], "schema": json.dumps([{"data": 1}]),
             "file": "a file, not a folder"}
    for name, content in files.items():
        p[name] = root / f"{name}.json"
        p[name].write_text(content)
    p["badgz"] = root / "bad.jsonl.gz"
    p["badgz"].write_bytes(gzip.compress(open(DEV, "rb").read())[:500])
    p["missing"] = root / "missing"
    return {k: str(v) for k, v in p.items()}


@pytest.mark.parametrize("argv, says", CASES, ids=[f"{a[0]}-{i}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_exits_2_with_one_clear_line(argv, says, paths, tmp_path, capsys):
    argv = [a.format(**paths, out=tmp_path / "out") for a in argv]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own refusals
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("slimbert") and ": error: " in line]
    assert len(errors) == 1, err
    assert says in errors[0], errors[0]


def test_the_table_covers_every_subcommand():
    assert {argv[0] for argv, _ in CASES} == {"prune", "eval", "report", "sweep", "convert", "demo"}
    assert len(CASES) >= 40
