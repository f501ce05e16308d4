"""Labels out to the tools people review with, and their corrections back in.

Pure: records and file contents in, rows and feedback records out. ``export_rows`` joins the
``labels`` topic with the posts' texts; the writers produce JSONL, CSV, a Label Studio task
import (the jury's label as a *prediction*, so reviewers start from it) and Argilla records
(the label as a *suggestion* with its score and agent). ``read_corrections`` reads what those
tools export — Label Studio's JSON (``annotations``) and JSON-MIN, Argilla records
(``responses``) — or a plain CSV/JSONL with ``id`` and ``label`` columns, and turns each
into the feedback record the monitor and the trainer read (``records.Feedback``).

Label Studio labeling config matching the export (``from_name`` "label", ``to_name`` "text")::

    <View><Text name="text" value="$text"/>
      <Choices name="label" toName="text"><Choice value="..."/>...</Choices></View>

Argilla: a dataset with a ``text`` field and a ``label`` label question;
``dataset.records.log([rg.Record.from_dict(r) for r in json.load(f)])`` loads the export.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the CLI imports this module at start; records (numpy, pydantic) on use
    from jurystream.stream.records import Feedback

ExportFormat = Literal["jsonl", "csv", "label-studio", "argilla"]
QUESTION = "label"  # Label Studio from_name / Argilla question name
TEXT_FIELD = "text"  # Label Studio to_name / Argilla field name
AGENT = "jurystream"
CSV_COLUMNS = ("id", "text", "label", "confidence", "source", "votes", "model_versions")


def export_rows(
    labels: Iterable[Mapping[str, Any]], texts: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One row per labeled message (its last label wins: a review replaces the jury's guess),
    with the post's text when it is known."""
    latest: dict[str, Mapping[str, Any]] = {}
    for record in labels:
        post_id = record.get("id")
        if isinstance(post_id, str | int) and isinstance(record.get("label"), str):
            latest[str(post_id)] = record
    return [
        {
            "id": post_id,
            "text": texts.get(post_id),
            "label": r["label"],
            "confidence": r.get("confidence"),
            "source": r.get("source"),
            "votes": r.get("votes") or [],
            "model_versions": r.get("model_versions") or {},
        }
        for post_id, r in latest.items()
    ]


def _label_studio_task(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "data": {TEXT_FIELD: row["text"], "post_id": row["id"]},
        "predictions": [
            {
                "model_version": AGENT,
                "score": row["confidence"],
                "result": [
                    {
                        "from_name": QUESTION,
                        "to_name": TEXT_FIELD,
                        "type": "choices",
                        "value": {"choices": [row["label"]]},
                    }
                ],
            }
        ],
        "meta": {"source": row["source"], "votes": row["votes"]},
    }


def _argilla_record(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "fields": {TEXT_FIELD: row["text"]},
        "metadata": {"source": row["source"], "votes": json.dumps(row["votes"])},
        "suggestions": {
            QUESTION: {"value": row["label"], "score": row["confidence"], "agent": AGENT}
        },
        "responses": {},
    }


def write_export(rows: Sequence[Mapping[str, Any]], fmt: ExportFormat) -> tuple[str, int]:
    """The file content and how many rows were left out (review tools need the text)."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), 0
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            values = [r[c] for c in CSV_COLUMNS]
            writer.writerow([json.dumps(v) if isinstance(v, list | dict) else v for v in values])
        return buffer.getvalue(), 0
    usable = [r for r in rows if isinstance(r["text"], str)]
    build = _label_studio_task if fmt == "label-studio" else _argilla_record
    body = json.dumps([build(r) for r in usable], ensure_ascii=False, indent=1) + "\n"
    return body, len(rows) - len(usable)


@dataclass
class Corrections:
    """Feedback records to send, and the entries that could not become one (and why)."""

    records: list[Feedback] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # where, why


def _first_choice(results: Any) -> str | None:
    for result in results if isinstance(results, list) else []:
        choices = (result.get("value") or {}).get("choices") if isinstance(result, dict) else None
        if isinstance(choices, list) and choices and isinstance(choices[0], str):
            return choices[0]
    return None


def _from_label_studio(task: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    data = task.get("data") or {}
    given = task.get("annotations") or []
    annotations = [a for a in given if isinstance(a, dict) and not a.get("was_cancelled")]
    label = _first_choice(annotations[-1].get("result")) if annotations else None
    post_id = data.get("post_id", data.get("id"))
    return (None if post_id is None else str(post_id)), label, data.get(TEXT_FIELD)


def _from_argilla(record: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    responses = (record.get("responses") or {}).get(QUESTION) or []
    values = [r.get("value") for r in responses if isinstance(r, dict)]
    label = values[-1] if values and isinstance(values[-1], str) else None
    post_id = record.get("id")
    text = (record.get("fields") or {}).get(TEXT_FIELD)
    return (None if post_id is None else str(post_id)), label, text


def _from_flat(row: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    post_id = row.get("post_id", row.get("id"))
    label = row.get(QUESTION)
    if isinstance(label, dict):  # Label Studio JSON-MIN keeps choices as {"choices": [...]}
        label = _first_choice([{"value": label}])
    return (None if post_id in (None, "") else str(post_id)), label, row.get(TEXT_FIELD)


def _entries(content: str, name: str) -> Iterable[tuple[str, Any]]:
    stripped = content.lstrip()
    if name.lower().endswith(".csv") or not stripped.startswith(("[", "{")):
        reader = csv.DictReader(io.StringIO(content, newline=""))
        for row in reader:
            yield f"line {reader.line_num}", row
        return
    if stripped.startswith("["):
        try:
            items = json.loads(content)
        except json.JSONDecodeError as exc:
            yield "file", f"not JSON: {exc}"
            return
        for i, item in enumerate(items):
            yield f"item {i}", item
        return
    for number, line in enumerate(content.splitlines(), start=1):
        if line.strip():
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"line {number}", f"not JSON: {exc}"


def read_corrections(content: str, name: str = "") -> Corrections:
    """Feedback records from a Label Studio / Argilla export or a CSV/JSONL of id and label.

    An entry nobody labeled (a skipped task, a record without responses) is left out and
    listed: only people's answers are gold.
    """
    from jurystream.stream.records import Feedback

    out = Corrections()
    for where, entry in _entries(content, name):
        if isinstance(entry, str):
            out.refused.append((where, entry))
            continue
        if not isinstance(entry, dict):
            out.refused.append((where, "not an object"))
            continue
        if "annotations" in entry or isinstance(entry.get("data"), dict):  # Label Studio
            post_id, label, text = _from_label_studio(entry)
        elif "responses" in entry or "fields" in entry:
            post_id, label, text = _from_argilla(entry)
        else:
            post_id, label, text = _from_flat(entry)
        if not post_id:
            out.refused.append((where, "no id (id or post_id)"))
            continue
        if not isinstance(label, str) or not label.strip():
            out.refused.append((where, f"{post_id}: no label given by a person"))
            continue
        given = text if isinstance(text, str) and text.strip() else None
        out.records.append(Feedback.of(post_id, label.strip(), source="human", text=given))
    return out
