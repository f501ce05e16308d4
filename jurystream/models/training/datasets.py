"""Labeled text datasets: TweetEval directories, JSONL, CSV and (online) the HF datasets hub.

Every loader returns a ``LabeledSet``: texts, integer label ids and the label names, with the
label set taken from the data itself (TweetEval's ``mapping.txt``, or the distinct values of a
label column). A malformed file fails with ``DatasetError`` naming the file and the line, so a
user bringing their own data learns what to fix instead of training on garbage.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DatasetError(ValueError):
    """A dataset file that cannot be used, with the file and line that are wrong."""


@dataclass(frozen=True)
class LabeledSet:
    """Texts with label ids into ``label_names`` (the label set, in id order)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        bad = {y for y in self.labels if not 0 <= y < len(self.label_names)}
        if bad:
            raise ValueError(f"label ids {sorted(bad)} outside 0..{len(self.label_names) - 1}")

    def __len__(self) -> int:
        return len(self.texts)

    def gold(self) -> list[str]:
        """Label names of every example, in order."""
        return [self.label_names[y] for y in self.labels]

    def subset(self, indices: Sequence[int]) -> LabeledSet:
        return LabeledSet(
            tuple(self.texts[i] for i in indices),
            tuple(self.labels[i] for i in indices),
            self.label_names,
            self.source,
        )

    def sample(self, n: int, seed: int = 0, stratified: bool = True) -> LabeledSet:
        """``n`` examples drawn without replacement; stratified keeps the label proportions.

        Stratification also guarantees every label at least one example when ``n`` allows,
        which a classifier head (and skl2onnx) needs.
        """
        if n >= len(self):
            return self
        return self.subset(self._sample_indices(n, seed, stratified))

    def split_off(self, share: float, seed: int = 0) -> tuple[LabeledSet, LabeledSet]:
        """(the rest, a stratified ``share`` held out): one labeled file made into train and
        held-out sets, so metrics are not measured on the examples trained on."""
        n = max(1, round(len(self) * share))
        held = set(self._sample_indices(min(n, len(self) - 1), seed, stratified=True))
        rest = [i for i in range(len(self)) if i not in held]
        return self.subset(rest), self.subset(sorted(held))

    def _sample_indices(self, n: int, seed: int, stratified: bool) -> list[int]:
        rng = random.Random(seed)
        if not stratified:
            return sorted(rng.sample(range(len(self)), n))
        by_label: dict[int, list[int]] = {}
        for i, y in enumerate(self.labels):
            by_label.setdefault(y, []).append(i)
        pools = {y: rng.sample(members, len(members)) for y, members in sorted(by_label.items())}
        # One of each label first (when n allows), then the rest in proportion to label size,
        # and whatever rounding leaves over drawn at random from what is left.
        chosen = [pool.pop() for pool in pools.values()][:n]
        rest = n - len(chosen)
        left = sum(len(pool) for pool in pools.values())
        for pool in pools.values():
            take = min(len(pool), rest * len(pool) // left) if left else 0
            chosen.extend(pool[:take])
            del pool[:take]
        remaining = [i for pool in pools.values() for i in pool]
        chosen.extend(rng.sample(remaining, n - len(chosen)))
        return sorted(chosen)

    def with_label_order(self, names: Sequence[str], what: str = "data") -> LabeledSet:
        """The same examples with label ids into ``names``, the same label set in another order.

        Raises ``LabelSetError`` when ``names`` is not the same set of label names.
        """
        from jurystream.models.rules.labelsets import label_order

        if tuple(names) == self.label_names:
            return self
        order = label_order(names, self.label_names, what)  # our id -> id in ``names``
        return LabeledSet(
            self.texts, tuple(order[y] for y in self.labels), tuple(names), self.source
        )

    def summary(self) -> dict[str, Any]:
        """What a model was trained or evaluated on (kept in manifests and reports)."""
        counts = Counter(self.labels)
        return {
            "source": self.source,
            "examples": len(self),
            "labels": {name: counts.get(i, 0) for i, name in enumerate(self.label_names)},
        }


def _read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file; the last line may lack its newline."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not valid UTF-8") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def _read_mapping(path: Path) -> tuple[str, ...]:
    names: dict[int, str] = {}
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip().isdigit() or not parts[1].strip():
            raise DatasetError(f"{path}:{number}: expected '<id><TAB><name>', got {line!r}")
        label_id = int(parts[0])
        if label_id in names:
            raise DatasetError(f"{path}:{number}: label id {label_id} defined twice")
        names[label_id] = parts[1].strip()
    if not names:
        raise DatasetError(f"{path}: no labels defined")
    if sorted(names) != list(range(len(names))):
        raise DatasetError(f"{path}: label ids must be 0..{len(names) - 1}, got {sorted(names)}")
    return tuple(names[i] for i in range(len(names)))


def load_tweeteval(
    directory: Path | str, split: str = "train", drop_empty: bool = False
) -> LabeledSet:
    """A TweetEval task dir: ``<split>_text.txt``, ``<split>_labels.txt``, ``mapping.txt``.

    An empty text is an error unless ``drop_empty``: TweetEval's own hate train split has seven
    (the first on line 1468); the benchmarks drop such rows with their labels.
    """
    directory = Path(directory)
    label_names = _read_mapping(directory / "mapping.txt")
    text_path = directory / f"{split}_text.txt"
    label_path = directory / f"{split}_labels.txt"
    texts = _read_lines(text_path)
    raw_labels = _read_lines(label_path)
    if len(texts) != len(raw_labels):
        raise DatasetError(
            f"{text_path} has {len(texts)} lines but {label_path} has {len(raw_labels)}"
        )
    labels = []
    for number, value in enumerate(raw_labels, start=1):
        value = value.strip()
        if not value.isdigit() or int(value) >= len(label_names):
            raise DatasetError(
                f"{label_path}:{number}: label {value!r} is not an id in mapping.txt"
            )
        labels.append(int(value))
    empty = [i for i, text in enumerate(texts) if not text.strip()]
    if empty and not drop_empty:
        raise DatasetError(
            f"{text_path}:{empty[0] + 1}: empty text ({len(empty)} in all); "
            "to skip such rows with their labels: --drop-empty"
        )
    dropped = set(empty)
    keep = [i for i in range(len(texts)) if i not in dropped]
    return LabeledSet(
        tuple(texts[i] for i in keep),
        tuple(labels[i] for i in keep),
        label_names,
        f"tweeteval:{directory}:{split}",
    )


def _index(
    rows: list[tuple[int, str, str]], path: Path, labels: Sequence[str] | None
) -> LabeledSet:
    """Turn (line, text, label name) rows into a LabeledSet; the label set is sorted names."""
    if not rows:
        raise DatasetError(f"{path}: no examples")
    names = tuple(labels) if labels is not None else tuple(sorted({r[2] for r in rows}))
    ids = {name: i for i, name in enumerate(names)}
    out = []
    for line, _, label in rows:
        if label not in ids:
            raise DatasetError(f"{path}:{line}: label {label!r} is not one of {list(names)}")
        out.append(ids[label])
    return LabeledSet(tuple(r[1] for r in rows), tuple(out), names, str(path))


def _blank(record: dict[str, Any], key: str) -> bool:
    value = record.get(key)
    return isinstance(value, str) and not value.strip()


def _field(record: dict[str, Any], key: str, path: Path, line: int) -> str:
    if key not in record:
        raise DatasetError(f"{path}:{line}: no {key!r} field (fields: {sorted(record)})")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DatasetError(f"{path}:{line}: {key!r} must be a string, got {type(value).__name__}")
    value = str(value)
    if not value.strip():
        raise DatasetError(f"{path}:{line}: {key!r} is empty (to skip such rows: --drop-empty)")
    return value


def load_jsonl(
    path: Path | str,
    text_field: str = "text",
    label_field: str = "label",
    labels: Sequence[str] | None = None,
    drop_empty: bool = False,
) -> LabeledSet:
    """One JSON object per line; blank lines are skipped. Labels may be strings or ints.

    A record with an empty text is an error unless ``drop_empty``."""
    path = Path(path)
    rows = []
    for number, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DatasetError(f"{path}:{number}: expected a JSON object")
        if drop_empty and _blank(record, text_field):
            continue
        text = _field(record, text_field, path, number)
        rows.append((number, text, _field(record, label_field, path, number)))
    return _index(rows, path, labels)


def load_csv(
    path: Path | str,
    text_column: str = "text",
    label_column: str = "label",
    labels: Sequence[str] | None = None,
    delimiter: str = ",",
    drop_empty: bool = False,
) -> LabeledSet:
    """A CSV file with a header row naming the text and label columns; a row with an empty
    text is an error unless ``drop_empty``."""
    path = Path(path)
    content = "\n".join(_read_lines(path))
    reader = csv.DictReader(content.splitlines(keepends=False), delimiter=delimiter)
    header = reader.fieldnames or []
    for column in (text_column, label_column):
        if column not in header:
            raise DatasetError(f"{path}:1: no {column!r} column in header {header}")
    rows = []
    for record in reader:
        number = reader.line_num
        if None in record or any(record[c] is None for c in (text_column, label_column)):
            raise DatasetError(f"{path}:{number}: wrong number of fields")
        if drop_empty and _blank(record, text_column):
            continue
        rows.append(
            (
                number,
                _field(record, text_column, path, number),
                _field(record, label_column, path, number),
            )
        )
    return _index(rows, path, labels)


def load_hub(
    name: str,
    split: str = "train",
    config: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
) -> LabeledSet:
    """A dataset from the Hugging Face hub (needs the ``hub`` extra and network access).

    A ClassLabel column gives the label names; other label columns are indexed by value.
    """
    try:
        import datasets
    except ImportError as exc:
        raise DatasetError("loading from the hub needs: pip install 'jurystream[hub]'") from exc
    data = datasets.load_dataset(name, config, split=split)
    feature = data.features.get(label_column)
    texts = [str(t) for t in data[text_column]]
    values = data[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return LabeledSet(tuple(texts), tuple(int(v) for v in values), tuple(feature.names), name)
    rows = [(i + 1, t, str(v)) for i, (t, v) in enumerate(zip(texts, values, strict=True))]
    return _index(rows, Path(name), None)


def load_dataset(
    source: str | Path,
    split: str = "train",
    text_field: str = "text",
    label_field: str = "label",
    drop_empty: bool = False,
) -> LabeledSet:
    """Dispatch on the source: a TweetEval dir, ``*.jsonl``, ``*.csv``, or ``hub:NAME[:CONFIG]``.

    For files the split is ignored (one file is one split). ``drop_empty`` skips examples whose
    text is empty (TweetEval hate has seven) instead of refusing the file.
    """
    text = str(source)
    if text.startswith("hub:"):
        name, _, config = text[4:].partition(":")
        return load_hub(name, split, config or None, text_field, label_field)
    path = Path(source)
    if path.is_dir():
        return load_tweeteval(path, split, drop_empty=drop_empty)
    if path.suffix in (".jsonl", ".ndjson"):
        return load_jsonl(path, text_field, label_field, drop_empty=drop_empty)
    if path.suffix in (".csv", ".tsv"):
        delimiter = "\t" if path.suffix == ".tsv" else ","
        return load_csv(path, text_field, label_field, delimiter=delimiter, drop_empty=drop_empty)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    raise DatasetError(f"{path}: unknown format; use a TweetEval dir, .jsonl, .csv or hub:NAME")


def load_task_dataset(
    source: str | Path,
    split: str,
    task: str,
    setting: str,
    labels: Sequence[str],
    drop_empty: bool = False,
) -> LabeledSet:
    """The dataset ``tasks.<task>.<setting>`` names (``seed_data``, ``gold_data``,
    ``gold_pool``), refused at start when it cannot be read or holds a label the task does not
    have: such examples would be trained on, judged against or shown to the reviewer as
    answers the task cannot give."""
    where = f"tasks.{task}.{setting}"
    try:
        data = load_dataset(source, split, drop_empty=drop_empty)
    except DatasetError as exc:
        raise DatasetError(
            f"{where}: {exc}; point it at the task's data (a TweetEval dir, .jsonl or .csv) "
            "or leave it out"
        ) from exc
    stray = sorted(set(data.label_names) - set(labels))
    if stray:
        raise DatasetError(
            f"{where} ({source}) holds labels {stray} that task {task} does not have (its "
            f"labels: {list(labels)}): relabel the data with the task's label names, or "
            f"point {where} at this task's data"
        )
    return data


def tweeteval_dir(data_root: Path, task: str) -> Path:
    """Where a TweetEval task lives under the data root (``<root>/tweeteval/<task>``)."""
    return Path(data_root) / "tweeteval" / task
