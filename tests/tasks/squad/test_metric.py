"""Tests for slimbert.tasks.squad.metric: SQuAD 2.0 scoring and span post-processing.

Every expected number is worked out by hand in the comments next to it.
"""

import math

import numpy as np
import pytest

from slimbert.tasks.squad.metric import (
    exact_match,
    f1,
    normalize_answer,
    postprocess_predictions,
    squad_v2_score,
)

# ---------------------------------------------------------------------------
# normalization, EM, F1
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("  The  Quick,\tbrown FOX!\n", "quick brown fox"),
        ("An apple a day", "apple day"),
        # articles only as whole words
        ("theory of anatomy", "theory of anatomy"),
        # punctuation is removed before articles: "a-b" -> "ab", not "b"
        ("A-B", "ab"),
        ("the", ""),
        ("", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match():
    assert exact_match("The Eiffel Tower", "eiffel tower!") == 1
    assert exact_match("Eiffel Tower", "Eiffel Tower in Paris") == 0
    # "an" normalizes to "" so it matches an empty gold
    assert exact_match("", "an") == 1


def test_f1_partial_overlap():
    # gold [eiffel, tower], pred [eiffel, tower, in, paris]: common 2,
    # P = 2/4, R = 2/2, F1 = 2*(1/2*1)/(1/2+1) = 2/3
    assert f1("the Eiffel Tower", "Eiffel Tower in Paris") == pytest.approx(2 / 3)


def test_f1_counts_repeated_tokens_once_per_match():
    # gold [x, y, y, z], pred [y, y, y]: common min(2, 3) = 2 y's,
    # P = 2/3, R = 2/4, F1 = 2*(1/3)/(2/3+1/2) = (2/3)/(7/6) = 4/7
    assert f1("x y y z", "y y y") == pytest.approx(4 / 7)


def test_f1_empty_cases():
    assert f1("", "") == 1.0
    assert f1("the", "") == 1.0  # both normalize to no tokens
    assert f1("", "Paris") == 0.0
    assert f1("Paris", "") == 0.0
    assert f1("Paris", "London") == 0.0


# ---------------------------------------------------------------------------
# squad_v2_score
# ---------------------------------------------------------------------------

# q1: pred [tower, in, paris]
#     vs [eiffel, tower]: common 1, P 1/3, R 1/2, F1 = (1/3)/(5/6) = 2/5
#     vs [eiffel, tower, in, paris]: common 3, P 1, R 3/4, F1 = (3/2)/(7/4) = 6/7
#     -> EM 0, F1 6/7 (max over golds)
# q2: [1889] vs [in, 1889]: P 1/2, R 1, F1 = 1/(3/2) = 2/3; EM 0
# q3: EM 1, F1 1
# q4: unanswerable, pred "" -> 1, 1
# q5: unanswerable, pred "Paris" -> 0, 0
MIXED_GOLD = {
    "q1": ["Eiffel Tower", "the Eiffel Tower in Paris"],
    "q2": ["1889"],
    "q3": ["Gustave Eiffel"],
    "q4": [],
    "q5": [],
}
MIXED_PRED = {
    "q1": "Tower in Paris",
    "q2": "in 1889",
    "q3": "Gustave Eiffel",
    "q4": "",
    "q5": "Paris",
}


def test_mixed_set_breakdown():
    r = squad_v2_score(MIXED_GOLD, MIXED_PRED)
    # exact: (0+0+1+1+0)/5 = 40
    assert r["exact"] == pytest.approx(40.0)
    # f1: (6/7 + 2/3 + 1 + 1 + 0)/5 = (74/21)/5 = 74/105
    assert r["f1"] == pytest.approx(100 * 74 / 105)
    assert r["total"] == 5
    # HasAns q1..q3: exact 1/3, f1 (6/7 + 2/3 + 1)/3 = (53/21)/3 = 53/63
    assert r["HasAns_exact"] == pytest.approx(100 / 3)
    assert r["HasAns_f1"] == pytest.approx(100 * 53 / 63)
    assert r["HasAns_total"] == 3
    # NoAns q4, q5: 1/2
    assert r["NoAns_exact"] == pytest.approx(50.0)
    assert r["NoAns_f1"] == pytest.approx(50.0)
    assert r["NoAns_total"] == 2
    assert "best_exact" not in r


def test_all_empty_predictions_score_noans_share():
    r = squad_v2_score(MIXED_GOLD, {q: "" for q in MIXED_GOLD})
    # only the 2 NoAns of 5 are right: 2/5 = 40%
    assert r["exact"] == pytest.approx(40.0)
    assert r["f1"] == pytest.approx(40.0)
    assert r["HasAns_f1"] == 0.0
    assert r["NoAns_f1"] == 100.0


def test_gold_normalizing_to_empty_is_still_has_ans_as_in_the_official_script():
    # official: has_ans = bool(qa["answers"]); golds that normalize to "" are scored as [""]
    gold = {"a": ["the", "!"], "b": ["The."], "c": []}
    r = squad_v2_score(gold, {"a": "", "b": "Paris", "c": ""})
    assert r["HasAns_total"] == 2 and r["NoAns_total"] == 1
    # a: "" matches [""] (1), b: "Paris" does not (0) -> HasAns 50%
    assert r["HasAns_exact"] == pytest.approx(50.0) and r["HasAns_f1"] == pytest.approx(50.0)
    assert r["exact"] == pytest.approx(200 / 3)


def test_only_answerable_has_no_noans_keys():
    r = squad_v2_score({"a": ["Paris"]}, {"a": "paris"})
    assert r["exact"] == 100.0 and r["HasAns_total"] == 1
    assert not any(k.startswith("NoAns") for k in r)


def test_na_prob_threshold_nulls_predictions():
    na = {"q1": 0.1, "q2": 0.6, "q3": 0.3, "q4": 0.9, "q5": 0.2}
    r = squad_v2_score(MIXED_GOLD, MIXED_PRED, na, na_prob_thresh=0.5)
    # q2 (answerable) and q4 (unanswerable) are nulled: q2 -> 0, q4 -> 1.
    # exact: 0,0,1,1,0 -> 40; f1: 6/7 + 0 + 1 + 1 + 0 = 20/7, /5 = 4/7
    assert r["exact"] == pytest.approx(40.0)
    assert r["f1"] == pytest.approx(100 * 4 / 7)
    assert r["HasAns_f1"] == pytest.approx(100 * (6 / 7 + 1) / 3)


# na_prob ascending: q1..q7. NoAns: q2, q5, q6 (3 of 7).
BT_GOLD = {
    "q1": ["Paris"],
    "q2": [],
    "q3": ["Eiffel Tower"],
    "q4": ["the Eiffel Tower"],
    "q5": [],
    "q6": [],
    "q7": ["1889"],
}
BT_PRED = {
    "q1": "Paris",  # EM 1, F1 1
    "q2": "London",  # answers an unanswerable one
    "q3": "Eiffel Tower",  # EM 1, F1 1
    "q4": "Eiffel Tower in Paris",  # EM 0, F1 2/3
    "q5": "",
    "q6": "Rome",
    "q7": "1900",  # EM 0, F1 0
}
BT_NA = {"q1": 0.1, "q2": 0.2, "q3": 0.3, "q4": 0.4, "q5": 0.5, "q6": 0.6, "q7": 0.7}


def test_best_threshold():
    r = squad_v2_score(BT_GOLD, BT_PRED, BT_NA)
    # default thresh 1.0 nulls nothing:
    # exact (1+0+1+0+1+0+0)/7 = 3/7; f1 (1+0+1+2/3+1+0+0)/7 = 11/21
    assert r["exact"] == pytest.approx(100 * 3 / 7)
    assert r["f1"] == pytest.approx(100 * 11 / 21)
    # exact walk, start 3 (all NoAns right):
    #   q1 +1 -> 4 (best, t=0.1); q2 -1 -> 3; q3 +1 -> 4 (not >);
    #   q4 +0; q5 +0; q6 -1 -> 3; q7 +0.  best 4/7 at 0.1
    assert r["best_exact"] == pytest.approx(100 * 4 / 7)
    assert r["best_exact_thresh"] == pytest.approx(0.1)
    # f1 walk, start 3: q1 -> 4 (t=0.1); q2 -> 3; q3 -> 4;
    #   q4 +2/3 -> 14/3 (best, t=0.4); q5 +0; q6 -> 11/3; q7 +0.
    #   best (14/3)/7 = 2/3 at 0.4, strictly inside the na_prob range
    assert r["best_f1"] == pytest.approx(100 * 2 / 3)
    assert r["best_f1_thresh"] == pytest.approx(0.4)


def test_best_threshold_is_zero_when_abstaining_everywhere_wins():
    # only NoAns question is answered: start 1, q -1 -> 0; best stays 1/1 at 0.0
    r = squad_v2_score({"q": []}, {"q": "x"}, {"q": 0.5})
    assert r["best_exact"] == 100.0 and r["best_exact_thresh"] == 0.0


def test_missing_prediction_raises():
    with pytest.raises(ValueError, match=r"1 of 5.*'q3'"):
        squad_v2_score(MIXED_GOLD, {q: p for q, p in MIXED_PRED.items() if q != "q3"})


def test_missing_na_prob_raises():
    with pytest.raises(ValueError, match="na_prob"):
        squad_v2_score(MIXED_GOLD, MIXED_PRED, {"q1": 0.0})


def test_extra_prediction_warns_and_is_ignored():
    with pytest.warns(UserWarning, match="1 predictions"):
        r = squad_v2_score({"a": ["Paris"]}, {"a": "Paris", "zzz": "x"})
    assert r["total"] == 1 and r["exact"] == 100.0


# ---------------------------------------------------------------------------
# postprocess_predictions
# ---------------------------------------------------------------------------

# context words and char offsets: aa(0,2) bb(3,5) cc(6,8) dd(9,11) ee(12,14) ff(15,17)
CTX = "aa bb cc dd ee ff"
W = {"aa": [0, 2], "bb": [3, 5], "cc": [6, 8], "dd": [9, 11], "ee": [12, 14], "ff": [15, 17]}
LOW = -10.0  # baseline logit: any pair using it loses to the designed spans


def _feature(eid, words):
    # layout: [CLS] q [SEP] w w w w [SEP]  (seq_len 8, context at 3..6)
    return {"example_id": eid, "offset_mapping": [None, None, None] + [W[w] for w in words] + [None]}


def _logits(**set_):
    row = np.full(8, LOW)
    for idx, val in set_.items():
        row[int(idx[1:])] = val
    return row


def _run(features, starts, ends, examples=None, **kw):
    examples = examples or [{"id": "e", "context": CTX}]
    return postprocess_predictions(examples, features, np.stack(starts), np.stack(ends), **kw)


def test_span_in_second_window_wins():
    feats = [_feature("e", ["aa", "bb", "cc", "dd"]), _feature("e", ["cc", "dd", "ee", "ff"])]
    # window 0: best bb..cc = 3 + 3 = 6; window 1: ee..ff = 4 + 4 = 8
    # null = min(1+1, 0.5+0.5) = 1 -> diff 1 - 8 = -7
    starts = [_logits(t0=1, t4=3), _logits(t0=0.5, t5=4)]
    ends = [_logits(t0=1, t5=3), _logits(t0=0.5, t6=4)]
    pred, diff, score = _run(feats, starts, ends)
    assert pred == {"e": "ee ff"}
    assert score["e"] == 8.0
    assert diff["e"] == -7.0


def test_max_answer_len_rejects_long_span():
    feats = [_feature("e", ["aa", "bb", "cc", "dd"])]
    # pairs: (3,6) 5+5 = 10 "aa bb cc dd" (4 tokens); (5,6) 2+5 = 7 "cc dd";
    # (3,4) 5+1 = 6 "aa bb"; (5,4) end < start
    starts = [_logits(t3=5, t5=2)]
    ends = [_logits(t4=1, t6=5)]
    assert _run(feats, starts, ends, max_answer_len=4)[0] == {"e": "aa bb cc dd"}
    pred, _, score = _run(feats, starts, ends, max_answer_len=3)
    assert pred == {"e": "cc dd"} and score["e"] == 7.0


def test_end_before_start_rejected():
    feats = [_feature("e", ["aa", "bb", "cc", "dd"])]
    # (6,3) 5+5 and (6,5), (4,3) are reversed; best valid is (4,5) = 1 + 1 = 2
    # ((6,6) = 5 - 10 and (3,3) = -10 + 5 are far lower)
    starts = [_logits(t6=5, t4=1)]
    ends = [_logits(t3=5, t5=1)]
    pred, _, score = _run(feats, starts, ends)
    assert pred == {"e": "bb cc"} and score["e"] == 2.0


def test_non_context_tokens_rejected():
    feats = [_feature("e", ["aa", "bb", "cc", "dd"])]
    # start peak on a question token (1), end peak on the last [SEP] (7):
    # only (4,4) = 1 + 1 = 2 is valid among the high ones; null -20 -> diff -22
    starts = [_logits(t1=9, t4=1)]
    ends = [_logits(t7=9, t4=1)]
    pred, diff, score = _run(feats, starts, ends)
    assert pred == {"e": "bb"}
    assert score["e"] == 2.0 and diff["e"] == -22.0


def test_null_vs_span_and_threshold():
    feats = [_feature("e", ["aa", "bb", "cc", "dd"])]
    # null 2 + 2 = 4; best span aa = 1 + 1.5 = 2.5; diff 1.5 (exact in binary)
    starts = [_logits(t0=2, t3=1)]
    ends = [_logits(t0=2, t3=1.5)]
    pred, diff, _ = _run(feats, starts, ends)
    assert pred == {"e": ""} and diff["e"] == 1.5  # 1.5 > 0
    assert _run(feats, starts, ends, null_threshold=2.0)[0] == {"e": "aa"}
    # diff must be strictly greater than the threshold to give ""
    assert _run(feats, starts, ends, null_threshold=1.5)[0] == {"e": "aa"}
    assert _run(feats, starts, ends, null_threshold=1.4)[0] == {"e": ""}


def test_null_score_is_min_over_features():
    feats = [_feature("e", ["aa", "bb", "cc", "dd"]), _feature("e", ["cc", "dd", "ee", "ff"])]
    # window 0: null 3 + 3 = 6, span aa = 2 + 2 = 4; window 1: null 0.5 + 0.5 = 1,
    # spans all -20. min null 1 -> diff 1 - 4 = -3 -> "aa"
    # (max null 6, or window 0's own null 6, would give diff 2 -> "")
    starts = [_logits(t0=3, t3=2), _logits(t0=0.5)]
    ends = [_logits(t0=3, t3=2), _logits(t0=0.5)]
    pred, diff, _ = _run(feats, starts, ends)
    assert pred == {"e": "aa"} and diff["e"] == -3.0


def test_no_valid_span_and_no_feature():
    examples = [{"id": "e", "context": CTX}, {"id": "lost", "context": "xx"}]
    feats = [_feature("e", ["aa", "bb", "cc", "dd"])]
    # n_best=1 keeps only the top start (question token 1): nothing valid
    starts = [_logits(t1=9, t3=1)]
    ends = [_logits(t4=1)]
    pred, diff, score = _run(feats, starts, ends, examples=examples, n_best=1)
    assert pred == {"e": "", "lost": ""}
    assert diff == {"e": math.inf, "lost": math.inf}
    assert score == {"e": -math.inf, "lost": -math.inf}


class _FakeTensor:
    """Duck-typed torch tensor, so the test does not pay for importing torch."""

    def __init__(self, a):
        self.a = a

    def detach(self):
        return self

    def cpu(self):
        return self

    def float(self):
        return _FakeTensor(self.a.astype(np.float32))

    def numpy(self):
        return self.a


class _FakeDataset:
    """Column-access interface of datasets.Dataset."""

    def __init__(self, rows):
        self.rows = rows
        self.column_names = list(rows[0])

    def __getitem__(self, name):
        return [r[name] for r in self.rows]

    def __len__(self):
        return len(self.rows)


def test_tensor_and_dataset_inputs():
    feats = _FakeDataset([_feature("e", ["aa", "bb", "cc", "dd"])])
    starts = np.stack([_logits(t4=2)])
    ends = np.stack([_logits(t5=2)])
    pred, _, score = postprocess_predictions(
        _FakeDataset([{"id": "e", "context": CTX}]), feats, _FakeTensor(starts), _FakeTensor(ends)
    )
    assert pred == {"e": "bb cc"} and score["e"] == 4.0


def test_shape_mismatch_raises():
    feats = [_feature("e", ["aa", "bb", "cc", "dd"])] * 2
    with pytest.raises(ValueError, match="2 features but logits for 1"):
        _run(feats, [_logits()], [_logits()])


def test_eval_writes_the_official_prediction_files(tmp_path, model_dir, squad_files, capsys):
    """`slimbert eval --predictions DIR`: predictions.json (id -> text) and na_prob.json (id -> prob in
    [0, 1]) for every question, and the metric on the written files equals the printed scores."""
    import json

    from slimbert.cli import main
    from slimbert.tasks.squad.data import load_squad

    out = tmp_path / "preds"
    assert main(["eval", "--model", model_dir, "--data", squad_files[1], "--max-examples", "12",
                 "--max-length", "96", "--doc-stride", "32", "--predictions", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    preds = json.loads((out / "predictions.json").read_text())
    na = json.loads((out / "na_prob.json").read_text())
    examples = load_squad(squad_files[1], limit=12)
    assert set(preds) == set(na) == set(examples["id"])
    assert all(isinstance(v, str) for v in preds.values()) and all(0.0 <= v <= 1.0 for v in na.values())
    gold = {i: a["text"] for i, a in zip(examples["id"], examples["answers"])}
    again = squad_v2_score(gold, preds, na)
    for k in ("exact", "f1", "HasAns_f1", "best_f1"):
        if k in printed:
            assert again[k] == pytest.approx(printed[k])
