"""Dataset loaders: TweetEval dirs, JSONL, CSV; label sets from the data; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jurystream.config import Settings
from jurystream.models.training.datasets import (
    DatasetError,
    LabeledSet,
    load_csv,
    load_dataset,
    load_jsonl,
    load_tweeteval,
    tweeteval_dir,
)

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    root = Settings().data_root
    return root if root.is_absolute() else REPO / root


def write_tweeteval(directory: Path, texts: list[str], labels: list[str], mapping: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train_text.txt").write_text("\n".join(texts))  # last line without newline
    (directory / "train_labels.txt").write_text("\n".join(labels) + "\n")
    (directory / "mapping.txt").write_text(mapping)
    return directory


def test_real_tweeteval_offensive_splits() -> None:
    directory = tweeteval_dir(data_root(), "offensive")
    train = load_tweeteval(directory, "train")
    val = load_tweeteval(directory, "val")
    assert train.label_names == ("not-offensive", "offensive")
    assert len(train) == 11916 and len(val) == 1324
    counts = train.summary()["labels"]
    assert counts["offensive"] + counts["not-offensive"] == 11916
    assert 0.25 < counts["offensive"] / 11916 < 0.4


def test_real_tweeteval_emotion_has_four_labels() -> None:
    emotion = load_tweeteval(tweeteval_dir(data_root(), "emotion"), "val")
    assert len(emotion.label_names) == 4
    assert set(emotion.labels) == {0, 1, 2, 3}


def test_tweeteval_last_line_without_newline(tmp_path: Path) -> None:
    d = write_tweeteval(tmp_path / "t", ["good day", "bad day"], ["0", "1"], "0\tpos\n1\tneg")
    data = load_tweeteval(d)
    assert data.texts == ("good day", "bad day")
    assert data.gold() == ["pos", "neg"]


def test_tweeteval_empty_text_is_refused_or_dropped_with_its_label(tmp_path: Path) -> None:
    d = write_tweeteval(tmp_path / "t", ["a", "  ", "c"], ["0", "1", "1"], "0\tx\n1\ty\n")
    with pytest.raises(DatasetError, match=r"train_text\.txt:2: empty text"):
        load_tweeteval(d)
    data = load_tweeteval(d, drop_empty=True)
    assert data.texts == ("a", "c") and data.labels == (0, 1)


def test_every_format_drops_empty_texts_only_when_asked(tmp_path: Path) -> None:
    tweeteval = write_tweeteval(tmp_path / "t", ["a", " ", "c"], ["0", "1", "1"], "0\tx\n1\ty\n")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"text": t, "label": y}) + "\n"
            for t, y in [("a", "x"), ("", "y"), ("c", "y")]
        )
    )
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\na,x\n  ,y\nc,y\n")
    for source in (tweeteval, jsonl, csv):
        with pytest.raises(DatasetError, match=r":[23]: .*empty.*--drop-empty"):
            load_dataset(source)
        data = load_dataset(source, drop_empty=True)
        assert data.texts == ("a", "c") and data.gold() == ["x", "y"], source


def test_real_tweeteval_hate_train_has_seven_empty_tweets() -> None:
    hate = load_tweeteval(tweeteval_dir(data_root(), "hate"), "train", drop_empty=True)
    assert len(hate) == 9000 - 7


def test_tweeteval_label_not_in_mapping_names_file_and_line(tmp_path: Path) -> None:
    d = write_tweeteval(tmp_path / "t", ["a", "b", "c"], ["0", "1", "7"], "0\tx\n1\ty\n")
    with pytest.raises(DatasetError, match=r"train_labels\.txt:3: label '7'"):
        load_tweeteval(d)


def test_tweeteval_line_count_mismatch(tmp_path: Path) -> None:
    d = write_tweeteval(tmp_path / "t", ["a", "b"], ["0"], "0\tx\n1\ty\n")
    with pytest.raises(DatasetError, match=r"has 2 lines but .* has 1"):
        load_tweeteval(d)


def test_tweeteval_bad_mapping_line(tmp_path: Path) -> None:
    d = write_tweeteval(tmp_path / "t", ["a"], ["0"], "0\tx\n1 y\n")
    with pytest.raises(DatasetError, match=r"mapping\.txt:2: expected '<id><TAB><name>'"):
        load_tweeteval(d)


def test_tweeteval_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    d = write_tweeteval(tmp_path / "t", ["a", "b"], ["0", "1"], "0\tx\n1\ty\n")
    (d / "train_text.txt").write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(DatasetError, match=r"train_text\.txt:2: not valid UTF-8"):
        load_tweeteval(d)


def test_jsonl_labels_come_from_the_data(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    rows = [{"body": "x", "tag": "spam"}, {"body": "y", "tag": "ham"}, {"body": "z", "tag": "spam"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    data = load_jsonl(path, text_field="body", label_field="tag")
    assert data.label_names == ("ham", "spam")
    assert data.labels == (1, 0, 1)
    assert load_dataset(path, text_field="body", label_field="tag") == data


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ('{"text": "a", "label": "x"}\n{oops\n', r"d\.jsonl:2: not JSON"),
        ('{"text": "a", "label": "x"}\n{"text": "b"}\n', r"d\.jsonl:2: no 'label' field"),
        ('{"text": "", "label": "x"}\n', r"d\.jsonl:1: 'text' is empty"),
        ('{"text": ["a"], "label": "x"}\n', r"d\.jsonl:1: 'text' must be a string"),
        ('["a", "x"]\n', r"d\.jsonl:1: expected a JSON object"),
        ("\n\n", r"d\.jsonl: no examples"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path: Path, content: str, error: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError, match=error):
        load_jsonl(path)


def test_jsonl_with_fixed_label_set_rejects_unknown_label(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "z"}\n')
    with pytest.raises(DatasetError, match=r"d\.jsonl:2: label 'z' is not one of"):
        load_jsonl(path, labels=["x", "y"])


def test_csv_with_quotes_and_named_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('id,post,verdict\n1,"hello, world",ok\n2,"say ""hi""",bad')
    data = load_csv(path, text_column="post", label_column="verdict")
    assert data.texts == ("hello, world", 'say "hi"')
    assert data.gold() == ["ok", "bad"]
    assert load_dataset(path, text_field="post", label_field="verdict") == data


def test_csv_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,x\nb\n")
    with pytest.raises(DatasetError, match=r"d\.csv:3: wrong number of fields"):
        load_csv(path)
    path.write_text("words,label\na,x\n")
    with pytest.raises(DatasetError, match=r"d\.csv:1: no 'text' column"):
        load_csv(path)


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "d.parquet").write_bytes(b"x")
    with pytest.raises(DatasetError, match="unknown format"):
        load_dataset(tmp_path / "d.parquet")
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(tmp_path / "missing.txt")


@given(
    labels=st.lists(st.integers(0, 2), min_size=3, max_size=200),
    n=st.integers(1, 200),
    seed=st.integers(0, 10),
)
def test_stratified_sample_properties(labels: list[int], n: int, seed: int) -> None:
    data = LabeledSet(tuple(f"t{i}" for i in range(len(labels))), tuple(labels), ("a", "b", "c"))
    sample = data.sample(n, seed=seed)
    assert len(sample) == min(n, len(data))
    assert len(set(sample.texts)) == len(sample)  # without replacement
    assert set(sample.texts) <= set(data.texts)
    if n >= 3 and n < len(data):  # every label present in the data appears in the sample
        assert set(sample.labels) == set(labels)
    assert data.sample(n, seed=seed) == sample  # deterministic
    if n < len(data):  # label proportions are kept up to rounding
        for y in set(labels):
            expected = len(sample) * labels.count(y) / len(labels)
            assert abs(sample.labels.count(y) - expected) <= 4


def test_split_off_holds_out_a_stratified_share_disjoint_from_the_rest() -> None:
    data = LabeledSet(tuple(f"t{i}" for i in range(100)), tuple([0] * 80 + [1] * 20), ("a", "b"))
    rest, held = data.split_off(0.2, seed=3)
    assert len(held) == 20 and len(rest) == 80
    assert set(held.texts).isdisjoint(rest.texts)
    assert held.labels.count(1) == 4  # the file's 20% share of "b"
