"""Input validation: every malformed message gets a reason a producer can act on."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jurystream.stream.records import MAX_DEAD_LETTER_BYTES, dead_letter
from jurystream.stream.validation import Invalid, Post, parse_post


def test_valid_post() -> None:
    post = parse_post(b'{"id": 7, "text": "hi", "ts": 1.5, "meta": {"gold": "a"}}')
    assert post == Post("7", "hi", 1.5, {"gold": "a"})


def test_id_falls_back_to_the_message_key() -> None:
    assert parse_post(b'{"text": "hi"}', b"k1") == Post("k1", "hi")


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (None, None, "empty message"),
        (b"", b"k", "empty message"),
        (b"nope", b"k", "not JSON"),
        (b"[1, 2]", b"k", "JSON list where an object"),
        (b'"s"', b"k", "JSON str where an object"),
        (b'{"text": "hi"}', None, "field 'id'"),
        (b'{"id": true, "text": "hi"}', None, "field 'id'"),
        (b'{"id": "a"}', None, "'text' is missing"),
        (b'{"id": "a", "text": 3}', None, "must be a string, got int"),
        (b'{"id": "a", "text": "  "}', None, "'text' is empty"),
        (b'{"id": "a", "text": "x", "ts": "now"}', None, "'ts' must be a number"),
        (b'{"id": "a", "text": "x", "meta": []}', None, "'meta' must be an object"),
        (b'{"id": "a", "text": "\xff"}', None, "not valid UTF-8 at byte 21"),
    ],
)
def test_rejections_say_why(value: bytes | None, key: bytes | None, reason: str) -> None:
    result = parse_post(value, key)
    assert isinstance(result, Invalid)
    assert reason in result.reason


def test_size_limits() -> None:
    big = json.dumps({"id": "a", "text": "x" * 5000}).encode()
    assert "characters, over the 4000" in parse_post(big, max_bytes=10**6).reason  # type: ignore[union-attr]
    assert "bytes, over the 100-byte" in parse_post(big, max_bytes=100).reason  # type: ignore[union-attr]


@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=20)))
def test_never_raises_on_arbitrary_bytes(value: bytes, key: bytes | None) -> None:
    result = parse_post(value, key)
    assert isinstance(result, Post | Invalid)
    if isinstance(result, Post):
        assert result.text.strip() and result.id


@given(st.binary(max_size=MAX_DEAD_LETTER_BYTES * 2 + 10))
def test_dead_letters_keep_a_bounded_verifiable_prefix(raw: bytes) -> None:
    letter = dead_letter(raw, "boom", "validation", "posts", 0, 1, None)
    kept = base64.b64decode(letter["original_b64"])
    assert raw.startswith(kept) and len(kept) <= MAX_DEAD_LETTER_BYTES
    assert letter["truncated"] == (len(kept) < len(raw))
    assert letter["original_size"] == len(raw)
