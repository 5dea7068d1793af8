"""One CPU smoke test per CLI subcommand, and the errors a user meets on bad input."""

import json

import pytest
from transformers import BertConfig, BertModel

from slimbert.cli import main
from tests.conftest import tiny_model

SMALL = ["--max-steps", "2", "--finetune-steps", "0", "--batch-size", "4", "--max-length", "96", "--doc-stride", "32",
         "--max-train-examples", "16", "--max-eval-examples", "8"]


def _json_line(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_prune_eval_report(tmp_path, model_dir, squad_files, capsys):
    out = str(tmp_path / "p50")
    assert main(["prune", "--model", model_dir, "--train", squad_files[0], "--eval", squad_files[1],
                 "--target", "0.5", "--out", out, *SMALL]) == 0
    summary = _json_line(capsys)
    assert {"size", "params_before", "params_after", "num_heads", "ffn_dims"} <= set(summary)

    assert main(["eval", "--model", out, "--data", squad_files[1], "--max-examples", "8", "--max-length", "96", "--doc-stride", "32"]) == 0
    scores = _json_line(capsys)
    assert {"exact", "f1", "HasAns_f1", "NoAns_f1", "n", "seconds"} <= set(scores) and scores["n"] == 8

    assert main(["report", "--model", out]) == 0
    text = capsys.readouterr().out
    assert "heads" in text and "parameters:" in text and "GFLOPs" in text
    assert main(["report", "--model", model_dir, "--json"]) == 0
    rep = _json_line(capsys)
    assert rep["params_before"] == rep["params_after"] and rep["flops_ratio"] == 1.0

    # an existing --out is refused unless --overwrite
    assert main(["prune", "--model", model_dir, "--train", squad_files[0], "--out", out, *SMALL]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--target", "1.5"], "target must be in"),
        (["--target", "0"], "target must be in"),
        (["--train", "/nonexistent.json"], "data file not found"),
        (["--batch-size", "0"], "batch_size must be at least 1"),
        (["--lr", "-1"], "lr must be > 0"),
        (["--max-length", "4096"], "lower --max-length to at most"),
        (["--gate-init-keep", "1"], "gate_init_keep must be in (0, 1)"),
    ],
)
def test_prune_bad_input(tmp_path, model_dir, squad_files, capsys, extra, match):
    args = ["prune", "--model", model_dir, "--train", squad_files[0], "--out", str(tmp_path / "o"), *SMALL]
    assert main(args + extra) == 2
    assert match in capsys.readouterr().err


def test_not_a_qa_model(tmp_path, squad_files, capsys):
    path = tmp_path / "encoder"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)).save_pretrained(path)
    assert main(["eval", "--model", str(path), "--data", squad_files[1]]) == 2
    assert "not an extractive QA model" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "missing"), "--data", squad_files[1]]) == 2
    assert "cannot load a model config" in capsys.readouterr().err


def test_tokenizer_mismatch(tmp_path, squad_files, tokenizer, capsys):
    path = tmp_path / "rob"
    tiny_model("roberta").save_pretrained(path)
    tokenizer.save_pretrained(path)  # a 30k-token BERT tokenizer beside a 120-token model
    assert main(["eval", "--model", str(path), "--data", squad_files[1]]) == 2
    assert "do not match" in capsys.readouterr().err


def test_every_flag_says_what_it_does_and_its_default():
    from slimbert.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.dest == "cmd").choices
    assert set(subs) == {"prune", "eval", "report", "sweep", "convert", "demo"}
    for name, sub in subs.items():
        text = sub.format_help()
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help and len(action.help) > 10, f"slimbert {name} {action.option_strings or action.dest} has no help"
            if action.option_strings and not action.required:
                assert f"(default: {action.default})" in " ".join(text.split()), f"slimbert {name} {action.option_strings}"
