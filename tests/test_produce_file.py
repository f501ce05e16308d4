"""`jurystream produce --file`: a user's own JSONL/CSV posts into the stream, bad rows refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from jurystream.config import Topic
from jurystream.stream.client import read_records
from jurystream.stream.posts_file import detect_format, read_posts
from tests.fixtures.processes import Roles


def values(batch) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(v) for _, _, v in batch.messages]


def test_jsonl_rows_become_posts_and_bad_rows_are_refused_with_their_lines() -> None:
    text = "\n".join(
        [
            '{"id": "a", "text": "hello there", "lang": "en"}',
            "",
            '{"id": "b", "text": ""}',
            "not json",
            '["a list"]',
            '{"id": "c", "body": "no text field"}',
            '{"id": "a", "text": "same id again"}',
            '{"id": 7, "text": "fine", "ts": 1.5, "meta": {"gold": "x"}}',
            '{"id": "d", "text": "' + "x" * 50 + '"}',
        ]
    )
    batch = read_posts(text, "jsonl", id_field="id", max_chars=40)
    assert values(batch) == [
        {"id": "a", "text": "hello there", "meta": {"lang": "en"}},
        {"id": 7, "text": "fine", "ts": 1.5, "meta": {"gold": "x"}},
    ]
    assert [key for _, key, _ in batch.messages] == [b"a", b"7"]
    assert [(r.line, r.reason.split(":")[0]) for r in batch.refused] == [
        (3, "field 'text' is empty"),
        (4, "not JSON"),
        (5, "JSON list where an object was expected"),
        (6, "no 'text' field (--text-field)"),
        (7, "id 'a' already on line 1"),
        (9, "text is 50 characters, over the 40 limit"),
    ]


def test_csv_rows_get_generated_ids_and_their_physical_line_numbers() -> None:
    text = 'body,author\n"two\nlines",ann\n,bob\nplain,cy,extra\n\nlast,dee\n'
    batch = read_posts(text, "csv", text_field="body", id_prefix="posts")
    assert values(batch) == [
        {"id": "posts-2", "text": "two\nlines", "meta": {"author": "ann"}},
        {"id": "posts-7", "text": "last", "meta": {"author": "dee"}},  # after a blank line
    ]
    assert [(r.line, r.reason) for r in batch.refused] == [
        (4, "field 'text' is empty"),
        (5, "more cells than the header's 2"),
    ]


def test_format_comes_from_the_name_or_the_content() -> None:
    assert detect_format("posts.JSONL", "") == "jsonl"
    assert detect_format("posts.csv", "{") == "csv"
    assert detect_format("-", '  {"text": "x"}') == "jsonl"
    assert detect_format("-", "text,id\n") == "csv"


def produce_cli(roles: Roles, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jurystream.cli", "produce", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=roles.env,
        timeout=120,
    )


def read_posts_topic(roles: Roles, count: int) -> dict[str, dict]:
    records = asyncio.run(
        read_records(
            roles.bootstrap,
            [roles.topic(Topic.POSTS)],
            until=lambda rs: len(rs) >= count,
            timeout_s=30,
        )
    )
    return {r.key or "": r.value for r in records}


def test_produce_sends_a_csv_at_a_rate_and_lists_the_refused_rows(
    roles: Roles, tmp_path: Path
) -> None:
    rows = ["text,label"] + [f"post number {i},x" for i in range(20)] + [",x", "last one,y"]
    posts = tmp_path / "my posts.csv"
    posts.write_text("\n".join(rows) + "\n")
    started = time.monotonic()
    done = produce_cli(roles, "--file", str(posts), "--rate", "40")
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert "sent 21 messages" in done.stderr
    assert "refused 1 rows" in done.stderr and "line 22: field 'text' is empty" in done.stderr
    assert elapsed > 0.5  # 21 posts at 40/s take half a second at least
    sent = read_posts_topic(roles, 21)
    assert len(sent) == 21
    assert sent["my posts-2"] == {
        "id": "my posts-2",
        "text": "post number 0",
        "meta": {"label": "x"},
    }
    assert sent["my posts-23"]["text"] == "last one"


def test_produce_reads_jsonl_from_stdin_with_an_id_field(roles: Roles) -> None:
    lines = [json.dumps({"post_id": f"p{i}", "text": f"text {i}"}) for i in range(5)]
    done = produce_cli(roles, "--file", "-", "--id-field", "post_id", stdin="\n".join(lines))
    assert done.returncode == 0, done.stderr
    assert "sent 5 messages" in done.stderr and "refused" not in done.stderr
    assert set(read_posts_topic(roles, 5)) == {f"p{i}" for i in range(5)}
    missing = produce_cli(roles, "--file", "nowhere.csv")
    assert missing.returncode == 2 and "cannot read nowhere.csv" in missing.stderr
