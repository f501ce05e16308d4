"""The records on every topic: what each producer writes reads back as the same record, and
every malformed message is refused with a reason its producer can act on."""

from __future__ import annotations

import json

import pytest

from jurystream.config import Topic, TopicSettings
from jurystream.models.reviewer.base import Case, Verdict
from jurystream.models.reviewer.spend import WindowReport
from jurystream.models.rules.voting import Decision, Vote
from jurystream.stream.records import (
    DeadLetter,
    Feedback,
    HardSample,
    Invalid,
    LabelRecord,
    ModelUpdate,
    Post,
    ReviewCase,
    SpendReport,
    ThresholdUpdate,
    parse_update,
)

VOTES = (Vote("a", "offensive", 0.612345), Vote("b", "not-offensive", 0.55))
SPLIT = Decision("offensive", 0.612345, VOTES, True, "split vote (offensive=1, not-offensive=1)")
POST = Post.of("p1", "you clown", ts=1700000000.0, meta={"gold": "offensive"})
VERDICT = Verdict("offensive", 0.876543, "reviewer:oracle", 0.000123456789)


def raw(record: object) -> bytes:
    return json.dumps(record).encode()


def case(kind: str = "escalation") -> ReviewCase:
    return ReviewCase.of(POST, SPLIT, {"a": "3", "b": "1"}, 1.7e12, "host:1", 0.7, kind=kind)  # type: ignore[arg-type]


# --- round trips --------------------------------------------------------------------------


def test_every_record_reads_back_as_written() -> None:
    written = [
        (Post.parse, POST),
        (Post.parse, Post.of("p2", "no extras")),
        (ReviewCase.parse, case()),
        (ReviewCase.parse, case("audit")),
        (LabelRecord.parse, LabelRecord.from_jury(POST, SPLIT, {"a": "3"}, 12.3456, "w", 0.7)),
        (
            LabelRecord.parse,
            LabelRecord.from_jury(POST, SPLIT, {"a": "3"}, 1.0, "w", 0.7, unreviewed=True),
        ),
        (LabelRecord.parse, LabelRecord.from_review(case(), VERDICT, 80.0)),
        (HardSample.parse, HardSample.of(case(), VERDICT)),
        (HardSample.parse, HardSample.of(case("audit"), VERDICT)),
        (Feedback.parse, Feedback.of("p1", "offensive", source="human", text="you clown")),
        (DeadLetter.parse, DeadLetter.of(b"\xffnot json", "not JSON", "validation", "t", 2, 9)),
        (parse_update, ThresholdUpdate(policy="p", threshold=0.7, versions={"a": "1"}, seq=2.0)),
        (
            parse_update,
            ModelUpdate(name="a", version="2", registry="/r", sha256="ab", metrics={"f1": 0.5}),
        ),
        (SpendReport.parse, SpendReport.of("r1", [WindowReport(3600.0, 7, 0.125)], 1.23456)),
    ]
    for parse, record in written:
        assert parse(record.to_bytes()) == record, type(record).__name__


def test_records_write_the_wire_format_consumers_read() -> None:
    """Field names, rounding and which optional fields appear are the topics' contract."""
    label = json.loads(LabelRecord.from_jury(POST, SPLIT, {"a": "3"}, 12.3456, "w", 0.7).to_bytes())
    assert label == {
        "id": "p1",
        "label": "offensive",
        "confidence": 0.6123,
        "source": "jury",
        "votes": [
            {"juror": "a", "label": "offensive", "confidence": 0.6123},
            {"juror": "b", "label": "not-offensive", "confidence": 0.55},
        ],
        "model_versions": {"a": "3"},
        "latency_ms": 12.35,
        "worker": "w",
        "threshold": 0.7,
    }
    unreviewed = LabelRecord.from_jury(POST, SPLIT, {}, 1.0, "w", 0.7, unreviewed=True)
    assert json.loads(unreviewed.to_bytes())["reason"] == SPLIT.reason
    reviewed = json.loads(LabelRecord.from_review(case(), VERDICT, 80.0).to_bytes())
    assert (reviewed["source"], reviewed["jury_label"], reviewed["cost_usd"]) == (
        "reviewer:oracle",
        "offensive",
        0.00012346,
    )
    review = json.loads(case("audit").to_bytes())
    assert list(review)[:4] == ["id", "text", "ts", "meta"]  # the post, then the jury's view
    assert (review["kind"], review["reason"]) == ("audit", "audit sample")
    hard = json.loads(HardSample.of(case("audit"), VERDICT).to_bytes())
    assert (hard["kind"], hard["weight"], hard["label_source"]) == (
        "audit",
        0.8765,
        "reviewer:oracle",
    )
    letter = json.loads(DeadLetter.of(b"x", "boom", "review", "t", 0, 3).to_bytes())
    assert letter["id"] is None and letter["source"] == {"topic": "t", "partition": 0, "offset": 3}
    assert json.loads(Post.of("p", "t").to_bytes()) == {"id": "p", "text": "t"}
    threshold = ThresholdUpdate(policy="p", threshold=0.7, versions={"a": "1"}, seq=2.0)
    assert next(iter(json.loads(threshold.to_bytes()))) == "kind"
    assert threshold.key == b"thresholds:p"


def test_keys_are_the_message_id_or_where_the_message_was_read() -> None:
    assert DeadLetter.of(b"", "e", "validation", "t", 1, 5, "p9").key == b"p9"
    assert DeadLetter.of(b"", "e", "validation", "t", 1, 5).key == b"t:1:5"
    assert ModelUpdate(name="a", version="1", registry="r", sha256="s").key == b"a"
    assert SpendReport.of("r1", [], 0.0).key == b"r1"


def test_a_review_case_asks_the_reviewer_about_the_post_and_the_votes() -> None:
    asked = case().case()
    assert asked == Case(
        id="p1",
        text="you clown",
        votes=(Vote("a", "offensive", 0.6123), VOTES[1]),
        meta={"gold": "offensive"},
    )


def test_hard_samples_become_training_examples_and_audits() -> None:
    hard = HardSample.of(case(), VERDICT)
    assert (hard.example.origin, hard.example.confidence, hard.audit) == ("hard", 0.8765, None)
    audit = HardSample.of(case("audit"), VERDICT)
    assert audit.audit == ("p1", "offensive", "offensive", 0.7)


# --- feedback: one parser, the id from the body or the key ---------------------------------


def test_feedback_takes_the_id_from_the_body_then_the_key() -> None:
    assert Feedback.parse(raw({"id": "a", "label": "x"}), b"k") == Feedback(id="a", label="x")
    assert Feedback.parse(raw({"label": "x"}), b"k") == Feedback(id="k", label="x")
    assert Feedback.parse(raw({"id": "", "label": "x"}), b"k") == Feedback(id="k", label="x")
    with_text = Feedback.parse(raw({"id": "a", "label": "x", "text": "t"}))
    assert isinstance(with_text, Feedback) and with_text.text == "t"
    blank_text = Feedback.parse(raw({"id": "a", "label": "x", "text": "  "}))
    assert isinstance(blank_text, Feedback) and blank_text.text is None


def test_labels_take_the_id_from_the_key_when_the_body_has_none() -> None:
    record = LabelRecord.parse(raw({"label": "a", "source": "jury"}), b"k")
    assert isinstance(record, LabelRecord) and record.id == "k" and record.votes == ()


# --- every refusal says why ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "value", "key", "reason"),
    [
        (Feedback.parse, b"nope", None, "not JSON"),
        (Feedback.parse, raw({"label": "x"}), None, "non-empty string 'id' (or a message key)"),
        (Feedback.parse, raw({"id": "a"}), None, "non-empty string 'label' (the gold label)"),
        (Feedback.parse, raw({"id": "a", "label": ""}), None, "non-empty string 'label'"),
        (LabelRecord.parse, raw({"label": "a", "source": "j"}), None, "no message id in key"),
        (LabelRecord.parse, raw({"id": "a", "label": "a"}), None, "string 'label' and 'source'"),
        (
            LabelRecord.parse,
            raw({"id": "a", "label": "a", "source": "j", "votes": [{}]}),
            None,
            "label record has a malformed vote",
        ),
        (ReviewCase.parse, b"[1]", None, "JSON list where an object was expected"),
        (ReviewCase.parse, raw({"text": "t"}), None, "review record has no string 'id'"),
        (ReviewCase.parse, raw({"id": "1", "text": " "}), None, "no non-empty string 'text'"),
        (ReviewCase.parse, raw({"id": "1", "text": "t", "meta": 1}), None, "'meta' must be an"),
        (ReviewCase.parse, raw({"id": "1", "text": "t", "votes": 1}), None, "'votes' must be a"),
        (
            ReviewCase.parse,
            raw({"id": "1", "text": "t", "votes": [{"juror": "a"}]}),
            None,
            "review record has a malformed vote",
        ),
        (
            ReviewCase.parse,
            raw({"id": "1", "text": "t", "model_versions": [1]}),
            None,
            "'model_versions' must be an object",
        ),
        (ReviewCase.parse, raw({"id": "1", "text": "t", "kind": "x"}), None, "is not 'escalation'"),
        (ReviewCase.parse, raw({"id": "1", "text": "t", "kind": "audit"}), None, "'jury_label'"),
        (HardSample.parse, raw({"id": "1", "text": "t"}), None, "non-empty string 'label'"),
        (
            HardSample.parse,
            raw({"id": "1", "text": "t", "label": "x", "weight": "1"}),
            None,
            "'weight' must be a number",
        ),
        (
            HardSample.parse,
            raw({"id": "1", "text": "t", "label": "x", "threshold": 10**400}),
            None,
            "'threshold' is out of range",
        ),
        (
            HardSample.parse,
            raw({"id": "1", "text": "t", "label": "x", "kind": "other"}),
            None,
            "must be 'hard' or 'audit'",
        ),
        (parse_update, raw({"name": "a", "version": "1", "registry": "r"}), None, "'sha256'"),
        (
            parse_update,
            raw({"kind": "thresholds", "policy": "p", "threshold": 1.5, "versions": {"a": "1"}}),
            None,
            "outside [0, 1]",
        ),
        (
            parse_update,
            raw({"kind": "thresholds", "policy": "p", "threshold": 0.5, "versions": {}}),
            None,
            "'versions' it was calibrated on",
        ),
        (
            parse_update,
            raw({"kind": "thresholds", "threshold": 0.5, "versions": {"a": "1"}}),
            None,
            "string 'policy'",
        ),
        (
            parse_update,
            raw({"kind": "thresholds", "policy": "p", "threshold": "x", "versions": {"a": "1"}}),
            None,
            "number 'threshold'",
        ),
        (
            parse_update,
            raw(
                {
                    "kind": "thresholds",
                    "policy": "p",
                    "threshold": 0.5,
                    "versions": {"a": "1"},
                    "seq": 10**400,
                }
            ),
            None,
            "'seq' is out of range",
        ),
        (DeadLetter.parse, raw({"id": 1}), None, "'id' must be a string or null"),
        (DeadLetter.parse, raw({"id": None, "error": "e"}), None, "needs a string 'stage'"),
        (SpendReport.parse, raw({"replica": 1, "windows": []}), None, "bad replica or amount"),
        (SpendReport.parse, raw({"replica": "r"}), None, "not a spend report"),
        (Post.parse, raw({"text": "hi"}), None, "field 'id'"),
        (Post.parse, b"", b"k", "empty message"),
    ],
)
def test_refusals_say_why(parse, value: bytes, key: bytes | None, reason: str) -> None:  # type: ignore[no-untyped-def]
    result = parse(value, key)
    assert isinstance(result, Invalid)
    assert reason in result.reason


def test_refusals_keep_the_message_id_when_it_was_readable() -> None:
    refused = HardSample.parse(raw({"id": "h1", "text": "t", "label": "x", "kind": "x"}))
    assert isinstance(refused, Invalid) and refused.id == "h1"
    assert Post.parse(b"", b"k7") == Invalid("empty message (no value bytes)", "k7")


# --- topics ----------------------------------------------------------------------------------


def test_one_spelling_per_topic_and_configured_names() -> None:
    topics = TopicSettings(prefix="x.", dead_letters="dlq")
    assert topics.name(Topic.DEAD_LETTERS) == "x.dlq"
    assert topics.name(Topic.HARD_SAMPLES) == "x.hard-samples"
    assert Topic.SPEND.value not in {n.removeprefix("x.") for n in topics.all_names()}
    assert all(t.value in TopicSettings.model_fields for t in Topic)  # configurable, each one
    with pytest.raises(ValueError):
        topics.name("dead-letters")  # type: ignore[arg-type]  # the old second spelling
