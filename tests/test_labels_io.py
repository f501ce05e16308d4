"""`jurystream labels follow|export` and `jurystream feedback --file`, pure parts and on Kafka."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from jurystream.config import Topic
from jurystream.stream.client import produce, read_records
from jurystream.stream.label_io import export_rows, read_corrections, write_export
from tests.fixtures.processes import Roles

VOTES = [{"juror": "a", "label": "offensive", "confidence": 0.9}]
LABELS = [
    {"id": "p1", "label": "offensive", "confidence": 0.91, "source": "jury", "votes": VOTES},
    {"id": "p2", "label": "not-offensive", "confidence": 0.55, "source": "jury", "votes": []},
    {"id": "p2", "label": "offensive", "confidence": 0.8, "source": "reviewer", "votes": []},
    {"id": "p3", "label": "offensive", "confidence": 0.7, "source": "jury", "votes": []},
]
TEXTS = {"p1": "you idiot", "p2": "hmm, sure", "p3": None}


def rows() -> list[dict]:
    return export_rows(LABELS, {k: v for k, v in TEXTS.items() if v})


def test_export_keeps_the_last_label_and_writes_every_format() -> None:
    assert [(r["id"], r["label"], r["source"]) for r in rows()] == [
        ("p1", "offensive", "jury"),
        ("p2", "offensive", "reviewer"),
        ("p3", "offensive", "jury"),
    ]
    body, left_out = write_export(rows(), "csv")
    table = list(csv.DictReader(io.StringIO(body)))
    assert left_out == 0 and table[0]["text"] == "you idiot"
    assert json.loads(table[0]["votes"]) == VOTES
    tasks, left_out = json.loads(write_export(rows(), "label-studio")[0]), 1
    assert left_out == 1 and len(tasks) == 2  # p3 has no text: a review tool needs one
    prediction = tasks[0]["predictions"][0]
    assert tasks[0]["data"] == {"text": "you idiot", "post_id": "p1"}
    assert prediction["score"] == 0.91
    assert prediction["result"][0]["value"] == {"choices": ["offensive"]}
    records, left_out = write_export(rows(), "argilla")
    record = json.loads(records)[1]
    assert left_out == 1 and record["id"] == "p2" and record["fields"] == {"text": "hmm, sure"}
    assert record["suggestions"]["label"] == {
        "value": "offensive",
        "score": 0.8,
        "agent": "jurystream",
    }


def test_corrections_come_back_from_label_studio_argilla_and_plain_files() -> None:
    tasks = json.loads(write_export(rows(), "label-studio")[0])
    tasks[0]["annotations"] = [
        {"result": [{"from_name": "label", "value": {"choices": ["not-offensive"]}}]}
    ]
    tasks[1]["annotations"] = [{"was_cancelled": True, "result": []}]
    ls = read_corrections(json.dumps(tasks), "export.json")
    assert [json.loads(r.to_bytes()) for r in ls.records] == [
        {"id": "p1", "label": "not-offensive", "source": "human", "text": "you idiot"}
    ]
    assert ls.refused == [("item 1", "p2: no label given by a person")]

    records = json.loads(write_export(rows(), "argilla")[0])
    records[1]["responses"] = {"label": [{"value": "not-offensive", "user_id": "u1"}]}
    argilla = read_corrections(json.dumps(records))
    assert [(r.id, r.label) for r in argilla.records] == [("p2", "not-offensive")]

    plain = read_corrections("id,label\np1,offensive\n,offensive\np3,\n", "fixes.csv")
    assert [json.loads(r.to_bytes()) for r in plain.records] == [
        {"id": "p1", "label": "offensive", "source": "human"}
    ]
    assert [w for w, _ in plain.refused] == ["line 3", "line 4"]
    jsonl = read_corrections('{"post_id": "p9", "label": "x"}\nnope\n')
    assert jsonl.records[0].id == "p9" and jsonl.refused[0][0] == "line 2"


def cli(roles: Roles, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jurystream.cli", *args],
        capture_output=True,
        text=True,
        env=roles.env,
        timeout=120,
    )


def test_labels_export_follow_and_feedback_on_the_broker(roles: Roles, tmp_path: Path) -> None:
    posts = [(i.encode(), json.dumps({"id": i, "text": t}).encode()) for i, t in TEXTS.items() if t]
    posts.append((b"bad", b"not json"))  # a malformed post does not stop the export
    labels = [(r["id"].encode(), json.dumps(r).encode()) for r in LABELS]
    review = {"id": "p4", "text": "is this ok?", "jury_label": "offensive", "reason": "split"}
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.POSTS), posts))
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.LABELS), labels))
    asyncio.run(
        produce(roles.bootstrap, roles.topic(Topic.REVIEW), [(b"p4", json.dumps(review).encode())])
    )

    target = tmp_path / "tasks.json"
    done = cli(roles, "labels", "export", "--out", str(target), "--format", "label-studio")
    assert done.returncode == 0, done.stderr
    assert "exported 2 labels" in done.stderr and "1 labels left out" in done.stderr
    tasks = json.loads(target.read_text())
    assert {t["data"]["post_id"] for t in tasks} == {"p1", "p2"}

    followed = cli(roles, "labels", "follow", "--from-beginning", "--limit", "5", "--idle", "20")
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    assert len(lines) == 5
    assert any(line.startswith("review  p4  jury says offensive") for line in lines)
    assert any(line.startswith("label   p1  offensive  0.91  jury  a=offensive") for line in lines)

    tasks[0]["annotations"] = [{"result": [{"value": {"choices": ["not-offensive"]}}]}]
    corrected = tmp_path / "corrected.json"
    corrected.write_text(json.dumps(tasks))
    sent = cli(roles, "feedback", "--file", str(corrected))
    assert sent.returncode == 1  # p2 was not annotated: listed, not sent
    assert "sent 1 corrections" in sent.stderr and "p2: no label given by a person" in sent.stderr
    (record,) = asyncio.run(
        read_records(roles.bootstrap, [roles.topic(Topic.FEEDBACK)], until=lambda rs: len(rs) >= 1)
    )
    assert record.key == "p1"
    assert record.value == {
        "id": "p1",
        "label": "not-offensive",
        "source": "human",
        "text": "you idiot",
    }

    for_task = cli(roles, "feedback", "--file", str(corrected), "--task", "hate")
    assert "sent 1 corrections" in for_task.stderr
    records = asyncio.run(
        read_records(roles.bootstrap, [roles.topic(Topic.FEEDBACK)], until=lambda rs: len(rs) >= 2)
    )
    assert records[-1].value["task"] == "hate"  # gold for one task of a multi-task deployment


def test_follow_shows_every_task_of_a_multi_task_record() -> None:
    from jurystream.cli_labels import _line

    record = {
        "id": "p9",
        "label": "offensive",
        "source": "jury",
        "tasks": {
            "offensive": {"label": "offensive", "source": "jury"},
            "hate": {"label": "not-hate", "source": "reviewer:openai:m"},
        },
    }
    line = _line("labels", record, "labels")
    assert line == "label   p9  offensive=offensive(jury)  hate=not-hate(reviewer:openai:m)"
    case = {"id": "p9", "kind": "audit", "asked": {"hate": {"label": "hate", "source": "jury"}}}
    assert _line("review", case, "labels") == "review  (audit) p9  hate=hate(jury)"
