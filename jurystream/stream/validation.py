"""Input validation: raw bytes from the posts topic to a Post, or the reason they are not one.

Pure: no I/O. Every rejection reason is meant to be read by the person who produced the message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from jurystream.stream.strict_json import StrictJSONError, loads


@dataclass(frozen=True, slots=True)
class Post:
    id: str
    text: str
    ts: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "text": self.text}
        if self.ts is not None:
            out["ts"] = self.ts
        if self.meta:
            out["meta"] = self.meta
        return out


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: str
    id: str | None = None


def _key_id(key: bytes | None) -> str | None:
    if not key:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_post(
    value: bytes | None,
    key: bytes | None = None,
    *,
    max_bytes: int = 64_000,
    max_chars: int = 4000,
) -> Post | Invalid:
    """Parse one posts-topic message. The id comes from the JSON ``id`` or else the message key."""
    key_id = _key_id(key)
    if value is None or len(value) == 0:
        return Invalid("empty message (no value bytes)", key_id)
    if len(value) > max_bytes:
        return Invalid(f"message is {len(value)} bytes, over the {max_bytes}-byte limit", key_id)
    try:
        data = loads(value)
    except StrictJSONError as exc:
        return Invalid(str(exc), key_id)
    if not isinstance(data, dict):
        return Invalid(f"JSON {type(data).__name__} where an object was expected", key_id)

    raw_id = data.get("id", key_id)
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        reason = "field 'id' must be a non-empty string or integer (or give a message key)"
        return Invalid(reason, key_id)
    post_id = str(raw_id)

    if "text" not in data:
        return Invalid("field 'text' is missing", post_id)
    text = data["text"]
    if not isinstance(text, str):
        return Invalid(f"field 'text' must be a string, got {type(text).__name__}", post_id)
    if not text.strip():
        return Invalid("field 'text' is empty", post_id)
    if len(text) > max_chars:
        return Invalid(f"text is {len(text)} characters, over the {max_chars} limit", post_id)

    ts = data.get("ts")
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float)):
        return Invalid(f"field 'ts' must be a number, got {type(ts).__name__}", post_id)
    if ts is not None and not (-_MAX_TS < ts < _MAX_TS):
        return Invalid("field 'ts' is out of range (seconds since the epoch expected)", post_id)
    meta = data.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        return Invalid(f"field 'meta' must be an object, got {type(meta).__name__}", post_id)
    return Post(post_id, text, None if ts is None else float(ts), meta)


# Any float is accepted as a timestamp, but an integer beyond a float's range cannot become one.
_MAX_TS = math.ldexp(1.0, 1000)
