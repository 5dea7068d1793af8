"""SQuAD loading, validation errors, and sliding-window features."""


import pytest

from slimbert.tasks.squad.data import DataError, check_tokenizer, eval_features, load_squad, training_features
from tests.conftest import tiny_model


def test_load_local_file_flattens_to_hub_schema(squad_files):
    ds = load_squad(squad_files[0])
    assert set(ds.column_names) == {"id", "title", "context", "question", "answers"}
    assert len(ds) == 753
    unanswerable = sum(1 for a in ds["answers"] if not a["text"])
    assert unanswerable == 357
    assert len(load_squad(squad_files[0], limit=10)) == 10


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ('{"version": "v2"}', "no top-level 'data' list"),
        ('{"data": [{"title": "x"}]}', "no 'paragraphs' list"),
        ('{"data": [{"title": "x", "paragraphs": [{"context": "c", "qas": [{"id": "1"}]}]}]}', "lacks \\['question'\\]"),
        ('{"data": [{"title": "x", "paragraphs": [{"context": "c", "qas": []}]}]}', "contains no questions"),
    ],
)
def test_malformed_files_give_clear_errors(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_squad(str(path))


def test_missing_file_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="not found"):
        load_squad(str(tmp_path / "nope.json"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="Offline\\? Pass a local SQuAD 2.0 JSON file"):
        load_squad(None)


def test_training_labels_point_at_the_answer(squad_files, tokenizer):
    ds = load_squad(squad_files[0], limit=60)
    feats = training_features(ds, tokenizer, max_length=128, doc_stride=48)
    assert len(feats) > len(ds)  # long contexts make several windows
    hits = 0
    answers = {" ".join(a["text"][0].lower().split()) for a in ds["answers"] if a["text"]}
    for f in feats:
        s, e = f["start_positions"], f["end_positions"]
        assert 0 <= s <= e < len(f["input_ids"])
        if s:
            span = tokenizer.decode(f["input_ids"][s : e + 1])
            hits += any(span.replace(" ", "") in a.replace(" ", "") for a in answers)
    assert hits > 20


def test_unanswerable_labelled_at_cls(squad_files, tokenizer):
    ds = load_squad(squad_files[0])
    ds = ds.filter(lambda ex: not ex["answers"]["text"]).select(range(5))
    feats = training_features(ds, tokenizer, max_length=128, doc_stride=48)
    assert all(f["start_positions"] == 0 and f["end_positions"] == 0 for f in feats)


def test_eval_features_mark_context_offsets(squad_files, tokenizer):
    ds = load_squad(squad_files[1], limit=5)
    feats = eval_features(ds, tokenizer, max_length=128, doc_stride=48)
    ctx = dict(zip(ds["id"], ds["context"]))
    for f in feats:
        offs = f["offset_mapping"]
        assert offs[0] is None  # CLS is never part of an answer
        spans = [o for o in offs if o is not None]
        assert spans and all(0 <= a <= b <= len(ctx[f["example_id"]]) for a, b in spans)


def test_tokenizer_that_does_not_match_the_model(tokenizer):
    model = tiny_model("roberta")  # vocabulary of 120
    with pytest.raises(DataError, match="do not match"):
        check_tokenizer(tokenizer, model)


def test_tokenizer_errors_say_what_happened(tokenizer):
    from slimbert.tasks.squad.data import tokenize_windows

    with pytest.raises(DataError, match="a question is too long for windows of max_length=8"):
        tokenize_windows(tokenizer, ["a long question with many words in it"], ["some context"], 8, 2)
    with pytest.raises(DataError, match="the tokenizer failed") as e:  # not text: not "too long"
        tokenize_windows(tokenizer, ["fine question"], [None], 64, 16)
    assert "too long" not in str(e.value)
