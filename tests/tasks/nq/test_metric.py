"""NQ scoring with the official semantics, on hand-computed cases."""

import pytest

from slimbert.tasks.nq.metric import NQAnswer, best_threshold, nq_score, prf, score_long, score_short

NULL = NQAnswer()


def test_two_of_five_annotators_make_a_gold_answer():
    one = [NQAnswer(long=(10, 50), short=[(12, 14)])] + [NULL] * 4
    two = [NQAnswer(long=(10, 50)), NQAnswer(long=(60, 90), yes_no="YES")] + [NULL] * 3
    assert score_long(one, NQAnswer(long=(10, 50)))[:3] == (False, True, False)  # 1 vote: no gold, a wrong guess
    assert score_short(one, NQAnswer(short=[(12, 14)]))[:3] == (False, True, False)
    assert score_long(two, NQAnswer(long=(60, 90)))[:3] == (True, True, True)  # matches the minority annotator
    assert score_short(two, NQAnswer(yes_no="YES"))[:3] == (False, True, False)  # 1 short vote (the yes)


def test_a_single_annotation_decides_alone():
    gold = [NQAnswer(long=(5, 9), yes_no="NO")]
    assert score_long(gold, NQAnswer(long=(5, 9)))[:3] == (True, True, True)
    assert score_short(gold, NQAnswer(yes_no="NO"))[:3] == (True, True, True)
    assert score_short(gold, NQAnswer(yes_no="YES"))[:3] == (True, True, False)
    assert score_short([NULL], NQAnswer())[:3] == (False, False, False)


def test_short_answers_match_as_span_sets():
    gold = [NQAnswer(long=(0, 9), short=[(1, 2), (3, 4)])]
    assert not score_short(gold, NQAnswer(short=[(1, 2)]))[2]
    assert score_short(gold, NQAnswer(short=[(3, 4), (1, 2)]))[2]
    assert not score_short(gold, NQAnswer(short=[(1, 4)]))[2]
    with pytest.raises(ValueError, match="cannot hold both"):
        score_short(gold, NQAnswer(short=[(1, 2)], yes_no="YES"))
    with pytest.raises(ValueError, match="yes_no must be"):
        NQAnswer(yes_no="maybe")


def test_precision_recall_f1_and_best_threshold_group_ties():
    # (has gold, has prediction, correct, score); the two 0.8s enter together whatever their order.
    stats = [(True, True, True, 0.9), (True, True, True, 0.8), (False, True, False, 0.8)]
    p, r, f = prf(stats)
    assert (p, r) == pytest.approx((2 / 3, 1.0)) and f == pytest.approx(0.8)
    # At 0.9: P 1, R 1/2, F1 2/3. At 0.8 (both): P 2/3, R 1, F1 0.8 (not P 1, R 1 from one of them).
    assert best_threshold(stats) == pytest.approx((0.8, 2 / 3, 1.0, 0.8))
    assert best_threshold([(True, False, False, 1.0)]) == (0.0, 0.0, 0.0, 0.0)


def _four_examples():
    gold = {
        "q1": [NQAnswer(long=(10, 50), short=[(12, 14)]), NQAnswer(long=(10, 50), short=[(12, 14), (20, 22)]),
               NQAnswer(long=(60, 90)), NULL, NULL],
        "q2": [NQAnswer(long=(10, 50), yes_no="YES"), NULL, NULL, NULL, NULL],
        "q3": [NQAnswer(long=(5, 9), yes_no="NO")],
        "q4": [NQAnswer(long=(0, 4), short=[(1, 2), (3, 4)])],
    }
    pred = {
        "q1": NQAnswer(long=(60, 90), short=[(12, 14)], long_score=2.0, short_score=2.0),
        "q2": NQAnswer(long=(10, 50), yes_no="YES", long_score=1.0, short_score=1.0),
        "q3": NQAnswer(long=(5, 9), yes_no="NO", long_score=-1.0, short_score=-1.0),
        "q4": NQAnswer(long=(0, 4), short=[(1, 2)], long_score=0.5, short_score=0.5),
    }
    return gold, pred


def test_nq_score_hand_computed():
    s = nq_score(*_four_examples())
    # long: gold q1 q3 q4; predicted all 4; correct q1 q3 q4 -> P 3/4, R 1, F1 6/7
    assert (s["long_precision"], s["long_recall"], s["long_f1"]) == pytest.approx((75.0, 100.0, 600 / 7))
    # short: gold q1 q3 q4; predicted all 4; correct q1 q3 -> P 1/2, R 2/3, F1 4/7
    assert (s["short_precision"], s["short_recall"], s["short_f1"]) == pytest.approx((50.0, 200 / 3, 400 / 7))
    # by score 2, 1, 0.5, -1 the F1s are long .5 .4 2/3 6/7 and short .5 .4 1/3 4/7: best at -1
    assert (s["long_best_f1"], s["long_best_threshold"]) == pytest.approx((600 / 7, -1.0))
    assert (s["short_best_f1"], s["short_best_threshold"]) == pytest.approx((400 / 7, -1.0))
    assert s["n"] == 4


def test_nq_score_threshold_drops_low_scores_only_from_the_plain_figures():
    s = nq_score(*_four_examples(), threshold=0.0)  # q3 (score -1) counts as no prediction
    assert (s["long_precision"], s["long_recall"]) == pytest.approx((200 / 3, 200 / 3))
    assert (s["short_precision"], s["short_recall"], s["short_f1"]) == pytest.approx((100 / 3, 100 / 3, 100 / 3))
    assert s["long_best_f1"] == pytest.approx(600 / 7)


def test_nq_score_needs_the_same_examples():
    gold, pred = _four_examples()
    del pred["q2"]
    with pytest.raises(ValueError, match="different examples.*'q2'"):
        nq_score(gold, pred)
    with pytest.raises(ValueError, match="gold is empty"):
        nq_score({}, {})
