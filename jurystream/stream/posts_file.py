"""A user's own file of posts (JSONL or CSV) as messages for the posts topic, or why a row is not.

Pure: text in, messages and refusals out. Every row becomes exactly what the worker would
accept, checked by the worker's own validation (``records.Post.parse``), so a row that would only be
dead-lettered later is refused here with its line number, where the person holding the file can
fix it. Without an id column each post gets ``<prefix>-<line>``: deterministic, so sending the
same file again overwrites (messages are keyed by id) rather than labeling everything twice.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from jurystream.stream.strict_json import StrictJSONError, loads

PostsFormat = Literal["jsonl", "csv"]


@dataclass(frozen=True)
class Refused:
    line: int
    reason: str


@dataclass(frozen=True)
class PostsBatch:
    """Messages ready to send, each with the line it came from, and the rows refused."""

    messages: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # line, key, value
    refused: list[Refused] = field(default_factory=list)


def detect_format(name: str, head: str) -> PostsFormat:
    """JSONL or CSV from the file name, or for stdin from the first non-blank character."""
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv")):
        return "csv"
    return "jsonl" if head.lstrip().startswith("{") else "csv"


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = loads(line.encode("utf-8", "surrogatepass"))
        except StrictJSONError as exc:
            yield number, f"not JSON: {exc}"
            continue
        if not isinstance(row, dict):
            yield number, f"JSON {type(row).__name__} where an object was expected"
            continue
        yield number, row


def _csv_rows(text: str, delimiter: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            # The row's first line: where the reader is, less the line breaks inside its cells
            # (blank lines before it are skipped by the reader, so counting rows would drift).
            cells = [v for v in row.values() if isinstance(v, str)]
            number = reader.line_num - sum(v.count("\n") for v in cells)
            if None in row:  # DictReader puts cells beyond the header under the key None
                yield number, f"more cells than the header's {len(reader.fieldnames or [])}"
                continue
            if not any(v.strip() for v in cells):
                continue
            yield number, {k: v for k, v in row.items() if v is not None}
    except csv.Error as exc:
        yield reader.line_num, f"bad CSV: {exc}"


def read_posts(
    text: str,
    fmt: PostsFormat,
    *,
    text_field: str = "text",
    id_field: str | None = None,
    id_prefix: str = "post",
    delimiter: str = ",",
    max_bytes: int = 64_000,
    max_chars: int = 4000,
) -> PostsBatch:
    """Every row of ``text`` as a posts message ``{"id", "text", "ts"?, "meta"?}``, or refused.

    Columns other than the id and text go into ``meta`` (a JSONL row's own ``meta`` object is
    kept as is), so they travel with the post to the labels' consumers.
    """
    from jurystream.stream.records import Invalid, Post  # on use: the CLI imports this at start

    rows = _jsonl_rows(text) if fmt == "jsonl" else _csv_rows(text, delimiter)
    batch = PostsBatch()
    seen: dict[str, int] = {}
    for number, row in rows:
        if isinstance(row, str):
            batch.refused.append(Refused(number, row))
            continue
        if text_field not in row:
            batch.refused.append(Refused(number, f"no {text_field!r} field (--text-field)"))
            continue
        if id_field is not None:
            if id_field not in row:
                batch.refused.append(Refused(number, f"no {id_field!r} field (--id-field)"))
                continue
            post_id = row[id_field]
        else:
            post_id = f"{id_prefix}-{number}"
        post: dict[str, Any] = {"id": post_id, "text": row[text_field]}
        own = ("meta", "ts") if fmt == "jsonl" else ()  # a CSV's cells are strings: all meta
        extra = {k: v for k, v in row.items() if k not in (text_field, id_field, *own)}
        if "ts" in own and "ts" in row:
            post["ts"] = row["ts"]
        meta = row.get("meta") if "meta" in own else None
        if isinstance(meta, dict):
            post["meta"] = {**extra, **meta}
        elif meta is not None:
            post["meta"] = meta  # not an object: validation refuses it with the reason
        elif extra:
            post["meta"] = extra
        value = json.dumps(post, ensure_ascii=False).encode("utf-8", "surrogatepass")
        parsed = Post.parse(value, max_bytes=max_bytes, max_chars=max_chars)
        if isinstance(parsed, Invalid):
            batch.refused.append(Refused(number, parsed.reason))
            continue
        if parsed.id in seen:
            reason = f"id {parsed.id!r} already on line {seen[parsed.id]}"
            batch.refused.append(Refused(number, reason))
            continue
        seen[parsed.id] = number
        batch.messages.append((number, parsed.id.encode("utf-8"), value))
    return batch
