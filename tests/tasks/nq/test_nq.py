"""Natural Questions: reader and its errors, SQuAD conversion, windows, post-processing, the answer-type
head through gates and collapse, and pruning end to end (library and CLI) on converted real text."""

import gzip
import json
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForQuestionAnswering

import slimbert
from slimbert.cli import main
from slimbert.tasks.squad.data import DataError
from slimbert.tasks.nq.data import hub_row_to_simplified, load_nq, parse_example, squad_to_nq
from slimbert.tasks.nq.evaluate import postprocess_nq
from slimbert.tasks.nq.features import eval_features, training_features
from slimbert.models.answer_type import LONG, NO, NONE, SHORT, YES, nq_model_from
from tests.conftest import ROOT, random_batch, tiny_model

FIXTURES = ROOT / "tests" / "fixtures"
SIMPLIFIED = str(FIXTURES / "nq-simplified.jsonl")
ORIGINAL = str(FIXTURES / "nq-original.jsonl")
DEV_SLICE = str(ROOT / "slimbert" / "demo" / "squad2-dev-slice.json")


# ----------------------------------------------------------------------------- reading
def test_reads_simplified_and_original_formats_plain_or_gzipped(tmp_path):
    exs = list(load_nq(SIMPLIFIED))
    assert [e.example_id for e in exs] == ["1001", "1002", "1003", "1004", "1005", "1006"]
    ex = exs[0]
    assert ex.tokens[18] == "1889" and ex.is_html[:5] == [True, False, False, True, True]
    assert [(c.start, c.end, c.top_level) for c in ex.candidates][-1] == (22, 31, False)
    assert len(ex.annotations) == 5 and ex.annotations[0].short == [(18, 19)] and ex.annotations[3].long is None
    assert exs[1].annotations[0].yes_no == "YES" and exs[1].annotations[0].long == (4, 13)

    gz = tmp_path / "original.jsonl.gz"  # gzip is recognised by content, not by name
    with open(ORIGINAL, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.move(gz, tmp_path / "original.data")
    orig = list(load_nq(str(tmp_path / "original.data")))
    assert orig[0].tokens == ex.tokens and orig[0].is_html == ex.is_html
    assert orig[0].annotations[0].long == (13, 21) and orig[0].annotations[0].short == [(18, 19)]
    assert len(list(load_nq(SIMPLIFIED, limit=2))) == 2


def _bad_file(tmp_path):
    good = open(SIMPLIFIED).readline()
    obj = json.loads(good)
    no_question = {k: v for k, v in obj.items() if k != "question_text"}
    out_of_range = json.loads(good)
    out_of_range["annotations"][0]["short_answers"][0]["end_token"] = 99
    wrong_candidate = json.loads(good)
    wrong_candidate["annotations"][0]["long_answer"]["candidate_index"] = 0
    lines = [good, "{not json\n", "\n", json.dumps(no_question) + "\n", json.dumps(out_of_range) + "\n",
             json.dumps(wrong_candidate) + "\n", good.replace("1001", "1007")]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(lines))
    return str(path)


@pytest.mark.parametrize(
    "line, match",
    [(2, "not valid JSON"), (4, r"missing field\(s\) \['question_text'\]"),
     (5, r"annotations\[0\]\.short_answers\[0\] token span \[18, 99\) is out of range for a document of 32 tokens"),
     (6, r"annotations\[0\]\.long_answer \[13, 21\] differs from its candidate 0 \[4, 13\)")],
)
def test_bad_lines_are_errors_with_the_line_number(tmp_path, line, match):
    path = _bad_file(tmp_path)
    lines = open(path).read().splitlines(keepends=True)
    only = tmp_path / "one-bad.jsonl"
    only.write_text("".join(lines[:1] + ["\n"] * (line - 2) + [lines[line - 1]]))  # one bad line, same number
    with pytest.raises(DataError, match=rf"one-bad.jsonl:{line}: {match}.*--skip-bad-lines"):
        list(load_nq(str(only)))


def test_skip_bad_lines_counts_them(tmp_path):
    src = load_nq(_bad_file(tmp_path), skip_bad=True)
    assert [e.example_id for e in src] == ["1001", "1007"]
    assert src.skipped == 4 and "bad.jsonl:2: not valid JSON" in src.errors[0]


def test_missing_truncated_and_offline(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="not found"):
        load_nq(str(tmp_path / "nope.jsonl"))
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(gzip.compress(open(SIMPLIFIED, "rb").read())[:-40])
    with pytest.raises(DataError, match="corrupt or truncated"):
        list(load_nq(str(gz)))
    import datasets

    def offline(*args, **kwargs):  # what datasets raises without a network (the real call waits on timeouts)
        raise ConnectionError("Couldn't reach 'google-research-datasets/natural_questions' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="Offline\\? Pass a local NQ JSON-lines file"):
        load_nq(None)


def test_hub_rows_map_onto_the_nq_format():
    row = {  # the hub's natural_questions layout: sequences of structs as dicts of lists
        "id": "42",
        "document": {"title": "T", "tokens": {"token": ["<P>", "Paris", "is", "big", "</P>"], "is_html": [True, False, False, False, True]}},
        "question": {"text": "is paris big", "tokens": ["is", "paris", "big"]},
        "long_answer_candidates": {"start_token": [0], "end_token": [5], "top_level": [True]},
        "annotations": {
            "id": ["1", "2"],
            "long_answer": [{"start_token": 0, "end_token": 5, "candidate_index": 0}, {"start_token": -1, "end_token": -1, "candidate_index": -1}],
            "short_answers": [{"start_token": [], "end_token": [], "text": []}, {"start_token": [1], "end_token": [2], "text": ["Paris"]}],
            "yes_no_answer": [1, -1],
        },
    }
    ex = parse_example(hub_row_to_simplified(row))
    assert ex.example_id == "42" and ex.is_html == [True, False, False, False, True]
    assert ex.annotations[0].yes_no == "YES" and ex.annotations[0].long == (0, 5)
    assert ex.annotations[1].long is None and ex.annotations[1].short == [(1, 2)]


# ----------------------------------------------------------------------------- SQuAD -> NQ
def test_squad_to_nq_keeps_answers_on_real_text(tmp_path):
    out = str(tmp_path / "dev.jsonl.gz")
    counts = squad_to_nq(DEV_SLICE, out, limit=40)
    squad = [qa for p in json.load(open(DEV_SLICE))["data"][0]["paragraphs"] for qa in p["qas"]][:40]
    exs = list(load_nq(out))
    assert counts["examples"] == len(exs) == 40
    assert counts["unanswerable"] == sum(1 for qa in squad if qa.get("is_impossible"))
    for ex, qa in zip(exs, squad):
        assert ex.example_id == qa["id"] and ex.question == qa["question"]
        if qa.get("is_impossible"):
            assert [(a.long, a.short) for a in ex.annotations] == [(None, [])]
            continue
        spans = [ann.short[0] for ann in ex.annotations]
        assert len(spans) == len(set(spans))  # one annotator per distinct answer: a repeated answer counts once
        for ann in ex.annotations:
            (s, e), (ls, le) = ann.short[0], ann.long
            assert ls <= s < e <= le and ex.tokens[ls] == "<P>" and ex.tokens[le - 1] == "</P>"
        for gold in qa["answers"]:
            assert "".join(gold["text"].split()) in ["".join(ex.tokens[s:e]) for s, e in spans]


# ----------------------------------------------------------------------------- windows
def test_training_windows_label_type_and_span(tokenizer):
    feats = training_features(load_nq(SIMPLIFIED), tokenizer, max_length=64, doc_stride=16)
    got = [(f["answer_types"], tokenizer.decode(f["input_ids"][f["start_positions"] : f["end_positions"] + 1])) for f in feats]
    assert got == [
        (SHORT, "1889"),  # the first annotation with a short answer
        (YES, "the eiffel tower is in paris."),  # yes/no and long-only point at the long answer
        (LONG, "the eiffel tower is in paris."),
        (NONE, "[CLS]"),
        (NO, "the eiffel tower is in paris."),
        (SHORT, "330 m"),
    ]


def test_small_windows_label_only_where_the_target_fits(tokenizer):
    one = [e for e in load_nq(SIMPLIFIED) if e.example_id == "1002"]  # target: an 8-token paragraph
    feats = training_features(one, tokenizer, max_length=24, doc_stride=6)
    # windows: "eiffel tower the eiffel tower is in paris ." | "##el tower is in paris . it ..." | "was ..."
    assert list(feats["answer_types"]) == [YES, NONE, NONE]  # the second holds only part of the target
    assert [f["start_positions"] > 0 for f in feats] == [True, False, False]
    thinned = training_features(one, tokenizer, max_length=24, doc_stride=6, null_window_rate=0.01)
    assert list(thinned["answer_types"]) == [YES]


def test_eval_windows_map_pieces_to_document_tokens(tokenizer):
    ev = eval_features(load_nq(SIMPLIFIED), tokenizer, max_length=64, doc_stride=16)
    assert len(ev) == 6 and set(ev.gold) == set(ev.candidates)
    ex = next(iter(load_nq(SIMPLIFIED)))
    f = ev.features[0]
    for piece, t in zip(f["input_ids"], f["token_map"]):
        if t >= 0:
            assert not ex.is_html[t]
            assert tokenizer.decode([piece]).replace("##", "") in ex.tokens[t].lower()
    with pytest.raises(DataError, match="duplicate example_id"):
        eval_features(list(load_nq(SIMPLIFIED)) * 2, tokenizer, max_length=64, doc_stride=16)


def test_postprocess_picks_span_long_answer_and_type(tokenizer):
    ev = eval_features(load_nq(SIMPLIFIED, limit=1), tokenizer, max_length=64, doc_stride=16)
    tm = ev.features[0]["token_map"]
    width = len(tm)
    start, end = np.zeros((1, width)), np.zeros((1, width))

    def aim(first, last):
        start[:], end[:] = 0.0, 0.0
        start[0, tm.index(first)] = end[0, len(tm) - 1 - tm[::-1].index(last)] = 5.0

    aim(18, 18)  # "1889"
    p = postprocess_nq(ev, start, end)["1001"]
    assert p.short == [(18, 19)] and p.long == (13, 21) and p.long_score == pytest.approx(10.0)
    aim(27, 28)  # "330 m": inside a non-top-level row; the top-level table wins
    assert postprocess_nq(ev, start, end)["1001"].long == (21, 32)
    types = np.zeros((1, 5))
    types[0, YES] = 1.0
    p = postprocess_nq(ev, start, end, types)["1001"]
    assert p.yes_no == "YES" and p.short == [] and p.long == (21, 32)
    types[0, SHORT] = 2.0  # the span head's answer stands unless another type beats "short"
    assert postprocess_nq(ev, start, end, types)["1001"].short == [(27, 29)]


# ----------------------------------------------------------------------------- the answer-type head
def test_nq_model_from_keeps_span_logits(arch):
    src = tiny_model(arch)
    nq = nq_model_from(src).eval()
    batch = random_batch(src.config.vocab_size, batch=2, seq=11)
    want, got = src(**batch), nq(**batch)
    torch.testing.assert_close(got.start_logits, want.start_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.end_logits, want.end_logits, atol=1e-5, rtol=0)
    assert got.answer_type_logits.shape == (2, 5) and not got.answer_type_logits.any()  # fresh: all equal
    labels = {"start_positions": torch.tensor([1, 0]), "end_positions": torch.tensor([2, 0]), "answer_types": torch.tensor([SHORT, NONE])}
    assert nq(**batch, **labels).loss.ndim == 0


def test_gated_and_collapsed_answer_types_agree(arch, tmp_path):
    gated = slimbert.add_gates(nq_model_from(tiny_model(arch)), slimbert.PruneConfig(prune_blocks=True)).eval()
    with torch.no_grad():
        gated.answer_type.weight.normal_()
        for g in slimbert.get_gates(gated):
            for gate in (g.heads, g.units, g.attn_block, g.ffn_block):
                gate.log_alpha.uniform_(-3.0, 1.5)  # some exact zeros (below about -2.4), the rest folded in
        slimbert.get_gates(gated)[1].attn_block.log_alpha[:] = -6.0
    compact = slimbert.collapse(gated)
    assert compact.config.num_answer_types == 5 and compact.config.base_model_type == arch
    assert sum(compact.config.num_heads) < 3 * 4
    batch = random_batch(gated.config.vocab_size, batch=3, seq=13, pad_from=5)
    want, got = gated(**batch), compact(**batch)
    for k in ("start_logits", "end_logits", "answer_type_logits"):
        torch.testing.assert_close(getattr(got, k), getattr(want, k), atol=1e-5, rtol=0)
    compact.save_pretrained(tmp_path)
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path)
    assert torch.equal(loaded(**batch).answer_type_logits, got.answer_type_logits)


# ----------------------------------------------------------------------------- end to end
SMALL = dict(finetune_steps=0, batch_size=4, max_length=128, doc_stride=32, max_train_examples=4, max_eval_examples=3)


def test_prune_on_converted_squad_end_to_end(tmp_path, tokenizer):
    data = str(tmp_path / "dev-as-nq.jsonl.gz")
    squad_to_nq(DEV_SLICE, data, limit=10)
    teacher = nq_model_from(tiny_model("bert"))
    result = slimbert.prune(
        teacher,
        slimbert.PruneConfig(target=0.5),
        data,
        data,
        tokenizer=tokenizer,
        train_cfg=slimbert.TrainConfig(task="nq", max_steps=2, **SMALL),
        out_dir=str(tmp_path / "out"),
    )
    compact = result.model
    assert compact.config.num_answer_types == 5 and result.params_after < result.params_before
    for scores in (result.eval_before, result.eval_after):
        assert scores["n"] == 3
        assert all(0 <= scores[f"{k}_{m}"] <= 100 for k in ("long", "short") for m in ("precision", "recall", "f1", "best_f1"))
    loaded = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "out")
    ids = torch.randint(5, 1000, (1, 20))
    torch.testing.assert_close(loaded(input_ids=ids).answer_type_logits, compact(input_ids=ids).answer_type_logits, atol=1e-6, rtol=0)


def test_cli_convert_prune_eval_nq(tmp_path, tokenizer, capsys):
    teacher = tmp_path / "teacher"
    tiny_model("bert").save_pretrained(teacher)  # a SQuAD-style model: prune adds the answer-type head
    tokenizer.save_pretrained(teacher)
    data = str(tmp_path / "nq.jsonl.gz")
    assert main(["convert", "squad-to-nq", DEV_SLICE, data, "--limit", "8"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["examples"] == 8
    out = str(tmp_path / "p50")
    flags = ["--max-steps", "1", "--finetune-steps", "0", "--batch-size", "4", "--max-length", "128", "--doc-stride", "32", "--max-train-examples", "2"]
    assert main(["prune", "--task", "nq", "--model", str(teacher), "--train", data, "--out", out, *flags]) == 0
    assert "num_heads" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ev = ["eval", "--task", "nq", "--model", out, "--max-examples", "2", "--max-length", "128", "--doc-stride", "32"]
    assert main([*ev, "--data", data]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["n"] == 2 and {"long_f1", "short_f1", "long_precision", "short_recall", "short_best_f1"} <= set(scores)

    bad = _bad_file(tmp_path)
    assert main([*ev, "--data", bad]) == 2
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert main([*ev, "--data", bad, "--skip-bad-lines"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == 4
