"""Real data and the real teacher from ../shared (skipped with a reason only where it is absent)."""

import json

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

import slimbert
from slimbert.cli import main
from tests.conftest import require_shared

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher_dir():
    return require_shared("models", "minilm-l6-squad2")


@pytest.fixture(scope="module")
def dev_path():
    return str(require_shared("data", "squad2", "dev.json"))


def test_teacher_scores_like_its_eval_card(teacher_dir, dev_path):
    """Every 11th dev question (all 11 articles): the teacher answers well and over-answers (NoAns low)."""
    model = AutoModelForQuestionAnswering.from_pretrained(teacher_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    examples = slimbert.load_squad(dev_path)
    examples = examples.select(range(0, len(examples), 11))  # one article alone can be much harder
    s = slimbert.evaluate(model, tok, examples)
    assert s["HasAns_total"] + s["NoAns_total"] == 407
    assert s["HasAns_f1"] > 62  # EVAL.md: 70.6 on all 4,474 questions
    assert s["NoAns_f1"] < 40  # EVAL.md: 19.5 at threshold 0
    assert s["best_f1"] > s["f1"]


def test_short_real_prune_and_cli_eval_agree(tmp_path, teacher_dir, dev_path, capsys):
    train = str(require_shared("data", "squad2", "train.json"))
    out = tmp_path / "p50"
    assert main(["prune", "--model", str(teacher_dir), "--train", train, "--eval", dev_path, "--target", "0.5",
                 "--out", str(out), "--max-steps", "3", "--finetune-steps", "0", "--batch-size", "4", "--max-length", "192", "--doc-stride", "64",
                 "--max-train-examples", "64", "--max-eval-examples", "60"]) == 0
    result = json.loads((out / "prune_result.json").read_text())
    assert result["size"] <= 0.5 and result["params_after"] < result["params_before"]
    # the saved model, evaluated by the CLI, gives exactly the scores the run reported
    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--data", dev_path, "--max-examples", "60", "--max-length", "192", "--doc-stride", "64"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1"):
        assert scores[key] == pytest.approx(result["eval_after"][key], abs=1e-9), key
