"""README's quickstart, command by command, on real CSV files and the embedded broker.

The same commands in the same order as the README; the only changes are what makes it run in
seconds: a tiny transformer base (``--base``) instead of MiniLM, one transformer juror.
"""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
from pathlib import Path

from jurystream.config import Topic
from jurystream.stream.client import read_records
from jurystream.stream.feed import LABELS, generate_posts, labeled_examples
from tests.fixtures.processes import Roles


def jurystream(roles: Roles, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "jurystream.cli", *args],
        capture_output=True,
        text=True,
        env=roles.env,
        timeout=300,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_readme_quickstart_from_a_csv_to_labels_in_label_studio_and_back(
    roles: Roles, tiny_base: Path, tmp_path: Path
) -> None:
    texts, labels = labeled_examples(300, seed=80)
    labeled = write_csv(
        tmp_path / "labeled.csv",
        ["text", "label"],
        [[t, LABELS[y]] for t, y in zip(texts, labels, strict=True)],
    )
    feed = list(generate_posts(60, seed=81, id_prefix="q"))
    posts = write_csv(
        tmp_path / "posts.csv",
        ["id", "text"],
        [[i.key.decode(), json.loads(i.value)["text"]] for i in feed],
    )

    boot = jurystream(
        roles, "models", "bootstrap", "--data", str(labeled), "--jurors", "1",
        "--base", str(tiny_base), "--prefix", "tiny", "--learning-rate", "2e-3",
    )  # fmt: skip
    assert boot.stdout.split() == ["tiny-0", "1", "tfidf", "1"]
    assert "held out 60 rows" in boot.stderr  # metrics are not measured on training rows

    # The log level a deployment gets by default (the fixture's roles log at INFO).
    worker = roles.start(
        "worker", "--juror", "tiny-0", "--juror", "tfidf", env={"JURYSTREAM_LOG_LEVEL": "WARNING"}
    )
    sent = jurystream(roles, "produce", "--file", str(posts), "--id-field", "id")
    assert "sent 60 messages" in sent.stderr

    ids = {i.key.decode() for i in feed}
    records = asyncio.run(
        read_records(
            roles.bootstrap,
            [roles.topic(Topic.LABELS), roles.topic(Topic.REVIEW)],
            until=lambda rs: ids <= {r.key for r in rs},
            timeout_s=120,
        )
    )
    assert ids <= {r.key for r in records}, roles.logs()
    labeled_ids = {r.key for r in records if r.topic == roles.topic(Topic.LABELS)}
    assert len(labeled_ids) > 30, roles.logs()
    # No terminal spinner in a role's log: it set the root logger to DEBUG, so every debug
    # line of aiokafka and faust was built (and dropped) on the worker's hot path.
    assert "\x1b[" not in worker.log_path.read_text(errors="replace")

    followed = jurystream(roles, "labels", "follow", "--from-beginning", "--idle", "3")
    assert len(followed.stdout.splitlines()) >= len(ids)

    tasks_file = tmp_path / "tasks.json"
    jurystream(roles, "labels", "export", "--out", str(tasks_file), "--format", "label-studio")
    tasks = json.loads(tasks_file.read_text())
    assert {t["data"]["post_id"] for t in tasks} == labeled_ids
    gold = {i.key.decode(): i.gold for i in feed}
    assert all(t["data"]["text"] for t in tasks)

    # A person corrects one task in Label Studio and exports; the correction goes to feedback.
    task = tasks[0]
    post_id = task["data"]["post_id"]
    task["annotations"] = [{"result": [{"value": {"choices": [gold[post_id]]}}]}]
    export = tmp_path / "label-studio-export.json"
    export.write_text(json.dumps([task]))
    jurystream(roles, "feedback", "--file", str(export))
    (record,) = asyncio.run(
        read_records(roles.bootstrap, [roles.topic(Topic.FEEDBACK)], until=lambda rs: len(rs) >= 1)
    )
    assert record.value["id"] == post_id and record.value["label"] == gold[post_id]
