"""Input validation: every malformed message gets a reason a producer can act on."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jurystream.stream.records import (
    MAX_DEAD_LETTER_BYTES,
    DeadLetter,
    Feedback,
    HardSample,
    Invalid,
    LabelRecord,
    Post,
    ReviewCase,
    dumps,
    parse_update,
)
from jurystream.stream.strict_json import MAX_DEPTH, StrictJSONError, loads_object


def test_valid_post() -> None:
    post = Post.parse(b'{"id": 7, "text": "hi", "ts": 1.5, "meta": {"gold": "a"}}')
    assert post == Post(id="7", text="hi", ts=1.5, meta={"gold": "a"})


def test_id_falls_back_to_the_message_key() -> None:
    assert Post.parse(b'{"text": "hi"}', b"k1") == Post(id="k1", text="hi")


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
        (b'{"id": "a", "text": "x\\ud800y"}', None, "lone UTF-16 surrogate"),
        (b'{"id": "a", "text": "x", "meta": {"k": ["\\udfff"]}}', None, "in meta.k holds"),
        (b'{"id": "a", "text": "x", "meta": {"\\ud800": 1}}', None, "in a key holds"),
        (b'{"id": "a", "text": "x", "ts": NaN}', None, "NaN is not JSON"),
        (b'{"id": "a", "text": "x", "meta": {"v": -Infinity}}', None, "-Infinity is not JSON"),
        (b'{"id": "a", "text": "x", "ts": 1e400}', None, "1e400 is out of range"),
        (b'{"id": "a", "text": "x", "ts": 1' + b"0" * 400 + b"}", None, "'ts' is out of range"),
        (b'{"id": "a", "text": "x", "n": ' + b"9" * 5000 + b"}", None, "as strings"),
        (b'{"id": "a", "text": "x", "meta": ' + b"[" * 20_000, None, "nests deeper than"),
        (b'{"id": "a", "text": "x", "meta": {"m": ' + b"[" * 70 + b"]" * 70 + b"}}", None, "64"),
    ],
)
def test_rejections_say_why(value: bytes | None, key: bytes | None, reason: str) -> None:
    result = Post.parse(value, key)
    assert isinstance(result, Invalid)
    assert reason in result.reason


def test_surrogate_pairs_are_fine() -> None:
    """Escaped pairs are how ensure_ascii producers send emoji: they decode to one character."""
    post = Post.parse(b'{"id": "a", "text": "hi \\ud83d\\ude00"}')
    assert isinstance(post, Post) and post.text == "hi \U0001f600"


def test_nesting_up_to_the_limit_is_kept() -> None:
    nested: object = 1
    for _ in range(MAX_DEPTH - 2):  # the post object and meta are two levels
        nested = [nested]
    value = json.dumps({"id": "a", "text": "x", "meta": {"m": nested}}).encode()
    post = Post.parse(value, max_bytes=10**6)
    assert isinstance(post, Post)
    json.loads(dumps({"case": {"post": json.loads(post.to_bytes())}}))  # re-encodes, wrapped


def test_size_limits() -> None:
    big = json.dumps({"id": "a", "text": "x" * 5000}).encode()
    assert "characters, over the 4000" in Post.parse(big, max_bytes=10**6).reason  # type: ignore[union-attr]
    assert "bytes, over the 100-byte" in Post.parse(big, max_bytes=100).reason  # type: ignore[union-attr]


@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=20)))
def test_never_raises_on_arbitrary_bytes(value: bytes, key: bytes | None) -> None:
    result = Post.parse(value, key)
    assert isinstance(result, Post | Invalid)
    if isinstance(result, Post):
        assert result.text.strip() and result.id


@given(st.binary(max_size=MAX_DEAD_LETTER_BYTES * 2 + 10))
def test_dead_letters_keep_a_bounded_verifiable_prefix(raw: bytes) -> None:
    letter = DeadLetter.of(raw, "boom", "validation", "posts", 0, 1, None)
    kept = base64.b64decode(letter.original_b64)
    assert raw.startswith(kept) and len(kept) <= MAX_DEAD_LETTER_BYTES
    assert letter.truncated == (len(kept) < len(raw))
    assert letter.original_size == len(raw)


# JSON-ish values with everything json.dumps can write and json.loads reads back: lone
# surrogates, NaN and infinities, integers far past a float, deep-ish nesting.
any_text = st.builds(
    lambda head, odd, tail: head + odd + tail,
    st.text(max_size=10),
    st.sampled_from(["", "\ud800", "\udfff", "\U0001f600", " "]),
    st.text(max_size=10),
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
jsonish = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=20,
)
posts = st.fixed_dictionaries(
    {"id": any_text | st.integers(), "text": any_text}, optional={"ts": jsonish, "meta": jsonish}
)
post_like = (
    st.fixed_dictionaries(
        {"id": st.one_of(any_text, st.integers()), "text": any_text | jsonish},
        optional={
            "ts": jsonish,
            "meta": jsonish,
            "votes": jsonish,
            "label": jsonish,
            "kind": st.just("thresholds"),
            "threshold": jsonish,
            "versions": jsonish,
            "seq": jsonish,
            "policy": jsonish,
            "weight": jsonish,
            "jury_label": jsonish,
            "jury_confidence": jsonish,
        },
    )
    | jsonish
)


def encode(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=True, allow_nan=True).encode()


@given(posts | post_like)
def test_never_raises_on_arbitrary_json(data: object) -> None:
    """Whatever parses is safe to re-encode: records.dumps writes strict, valid UTF-8 JSON."""
    result = Post.parse(encode(data), max_bytes=10**7, max_chars=10**6)
    assert isinstance(result, Post | Invalid)
    if isinstance(result, Post):
        out = result.to_bytes()
        assert loads_object(out) == json.loads(out)


@given(posts | post_like)
def test_every_role_parser_refuses_with_its_own_error(data: object) -> None:
    """Records on the review, hard-samples, feedback, labels and model-updates topics are read
    by other roles: malformed ones must be refused with a reason each role dead-letters, and
    whatever parses must re-encode."""
    value = encode(data)
    for parse in (
        ReviewCase.parse,
        HardSample.parse,
        Feedback.parse,
        LabelRecord.parse,
        parse_update,
    ):
        result = parse(value, b"k")
        if isinstance(result, Invalid):
            assert result.reason
        else:
            out = result.to_bytes()
            assert loads_object(out) == json.loads(out)


def test_strict_json_reasons() -> None:
    with pytest.raises(StrictJSONError, match="empty message"):
        loads_object(b"")
    with pytest.raises(StrictJSONError, match="JSON list where an object"):
        loads_object(b"[]")
