"""The official NQ files: the original format ``convert squad-to-nq --original`` writes (gold, as
nq_eval.py reads it) and the predictions JSON ``eval --task nq --predictions`` writes, checked field
by field against the format's documentation (natural-questions README and eval_utils.py), and the
project's metric on the written predictions against its in-memory figures."""

import gzip
import json

import pytest

from slimbert.cli import main
from slimbert.tasks.nq.data import load_nq, squad_to_nq
from slimbert.tasks.nq.evaluate import evaluate_nq, read_nq_predictions
from slimbert.tasks.nq.features import eval_features
from slimbert.tasks.nq.metric import nq_score
from tests.conftest import ROOT, tiny_model

DEV_SLICE = str(ROOT / "slimbert" / "demo" / "squad2-dev-slice.json")
SPAN = {"start_token", "end_token", "start_byte", "end_byte"}


def _check_span(span: dict, tokens: list[dict]) -> None:
    """A span as eval_utils.Span accepts it: both ends null (-1) or a non-empty range, bytes matching tokens."""
    assert SPAN <= set(span) and all(isinstance(span[k], int) for k in SPAN)
    if span["start_token"] < 0:
        assert span["end_token"] < 0 and span["start_byte"] < 0 and span["end_byte"] < 0
        return
    assert 0 <= span["start_token"] < span["end_token"] <= len(tokens)
    assert span["start_byte"] == tokens[span["start_token"]]["start_byte"] < span["end_byte"] == tokens[span["end_token"] - 1]["end_byte"]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("nq") / "dev.jsonl.gz")  # nq_eval.py reads gold gzipped
    counts = squad_to_nq(DEV_SLICE, path, limit=60, original=True)
    assert counts["examples"] == 60
    return path


def test_original_format_field_by_field(original, tmp_path):
    with gzip.open(original, "rt", encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    squad = {qa["id"]: qa for a in json.load(open(DEV_SLICE))["data"] for p in a["paragraphs"] for qa in p["qas"]}
    repeated = 0
    for ex in lines:
        assert {"example_id", "question_text", "question_tokens", "document_title", "document_url", "document_html",
                "document_tokens", "long_answer_candidates", "annotations"} <= set(ex)
        assert ex["question_tokens"] and all(isinstance(t, str) for t in ex["question_tokens"])
        tokens, html = ex["document_tokens"], ex["document_html"].encode("utf-8")
        for t in tokens:
            assert set(t) == {"token", "start_byte", "end_byte", "html_token"} and isinstance(t["html_token"], bool)
            assert html[t["start_byte"] : t["end_byte"]].decode("utf-8") == t["token"]  # byte offsets index the HTML
            assert t["html_token"] == (t["token"] in ("<H1>", "</H1>", "<P>", "</P>"))
        for c in ex["long_answer_candidates"]:
            _check_span(c, tokens)
            assert c["top_level"] is True and tokens[c["start_token"]]["token"] == "<P>"
        shorts = []
        for i, ann in enumerate(ex["annotations"]):
            assert ann["annotation_id"] == i and ann["yes_no_answer"] in ("NONE", "YES", "NO")
            long = ann["long_answer"]
            _check_span(long, tokens)
            if long["start_token"] < 0:
                assert long["candidate_index"] == -1 and ann["short_answers"] == []
                continue
            cand = ex["long_answer_candidates"][long["candidate_index"]]
            assert {k: cand[k] for k in SPAN} == {k: long[k] for k in SPAN}
            for s in ann["short_answers"]:
                _check_span(s, tokens)
                assert long["start_token"] <= s["start_token"] < s["end_token"] <= long["end_token"]
                shorts.append((s["start_token"], s["end_token"]))
        assert len(shorts) == len(set(shorts))  # distinct answers are distinct annotations, each once
        answers = squad[ex["example_id"]]["answers"]
        repeated += len(answers) > len(shorts)
    assert repeated  # the slice has questions whose gold answers repeat: they were folded

    # the reader takes it, and it is the same data as the simplified conversion
    simplified = str(tmp_path / "simple.jsonl")
    squad_to_nq(DEV_SLICE, simplified, limit=60)
    for a, b in zip(load_nq(original), load_nq(simplified), strict=True):
        assert (a.example_id, a.tokens, a.is_html, a.annotations) == (b.example_id, b.tokens, b.is_html, b.annotations)
        assert [(c.start, c.end) for c in a.candidates] == [(c.start, c.end) for c in b.candidates]


def test_predictions_file_field_by_field_and_scores_match(original, tmp_path, tokenizer):
    model = tiny_model("bert", max_position_embeddings=128)
    eval_set = eval_features(load_nq(original, limit=12), tokenizer, 96, 32)
    scores = evaluate_nq(model, tokenizer, eval_set, 8, 96, 32, predictions_dir=str(tmp_path / "preds"))
    doc = json.loads((tmp_path / "preds" / "predictions.json").read_text())
    assert set(doc) == {"predictions"} and len(doc["predictions"]) == 12
    gold = {}
    with gzip.open(original, "rt", encoding="utf-8") as f:
        for line in f:
            ex = json.loads(line)
            gold[ex["example_id"]] = ex
    for p in doc["predictions"]:
        assert set(p) == {"example_id", "long_answer", "long_answer_score", "short_answers", "short_answers_score", "yes_no_answer"}
        ex = gold[p["example_id"]]  # the id as the gold file has it
        tokens = ex["document_tokens"]
        _check_span(p["long_answer"], tokens)
        if p["long_answer"]["start_token"] >= 0:  # a candidate, with its bytes
            cands = [{k: c[k] for k in SPAN} for c in ex["long_answer_candidates"]]
            assert p["long_answer"] in cands
        for s in p["short_answers"]:
            assert SPAN <= set(s) and 0 <= s["start_token"] < s["end_token"] <= len(tokens)
        assert p["yes_no_answer"] in ("NONE", "YES", "NO")
        assert not (p["yes_no_answer"] != "NONE" and p["short_answers"])  # cannot coexist (eval_utils)
        for k in ("long_answer_score", "short_answers_score"):
            assert isinstance(p[k], float) and abs(p[k]) < float("inf")
    again = nq_score(eval_set.gold, read_nq_predictions(str(tmp_path / "preds" / "predictions.json")), threshold=0.0)
    assert {k: v for k, v in scores.items() if k in again} == again


def test_cli_writes_nq_predictions_and_original_gold(tmp_path, tokenizer, capsys):
    teacher = tmp_path / "teacher"
    tiny_model("bert").save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    data = str(tmp_path / "gold.jsonl.gz")
    assert main(["convert", "squad-to-nq", DEV_SLICE, data, "--limit", "6", "--original"]) == 0
    assert main(["eval", "--task", "nq", "--model", str(teacher), "--data", data, "--max-length", "96", "--doc-stride", "32",
                 "--predictions", str(tmp_path / "p")]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    preds = read_nq_predictions(str(tmp_path / "p" / "predictions.json"))
    assert len(preds) == scores["n"] == 6
