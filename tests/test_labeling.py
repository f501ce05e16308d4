"""The worker's decision for a batch, in-process: what goes where, without a broker."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from jurystream.config import Topic
from jurystream.models.rules.selection import ReviewAllowance
from jurystream.models.rules.voting import Decision, Vote
from jurystream.stream.labeling import (
    InferenceFailed,
    Output,
    Stamp,
    label_batch,
    quarantined,
    read_batch,
)
from jurystream.stream.records import DeadLetter, LabelRecord, ReviewCase

STAMP = Stamp({"j0": "1", "j1": "2"}, 0.7, "host:1")
NOW = 1_000.0


@dataclass(frozen=True)
class Msg:
    """A consumed message as the worker sees it."""

    key: bytes | None
    value: bytes | None
    offset: int = 0
    topic: str = "posts"
    partition: int = 0
    timestamp: float = NOW - 0.25


def post(post_id: str, text: str = "some text", offset: int = 0) -> Msg:
    value = json.dumps({"id": post_id, "text": text}).encode()
    return Msg(post_id.encode(), value, offset)


def decision(escalated: bool, label: str = "offensive", confidence: float = 0.9) -> Decision:
    votes = (Vote("j0", label, confidence), Vote("j1", label, confidence))
    return Decision(label, confidence, votes, escalated, "split vote" if escalated else None)


def fates(outputs: list[Output]) -> Counter[str]:
    """Per message id, its outputs other than audits (an audit measures a label)."""
    return Counter(o.key.decode() for o in outputs if o.outcome != "audited")


def test_accepted_posts_become_labels_stamped_with_the_jury() -> None:
    read = read_batch([post("a"), post("b", offset=1)], 64_000, 4000)
    batch = label_batch(read, [decision(False), decision(False)], STAMP, NOW, audit_rate=0.0)
    assert [(o.topic, o.key, o.outcome) for o in batch.outputs] == [
        (Topic.LABELS, b"a", "labeled"),
        (Topic.LABELS, b"b", "labeled"),
    ]
    label = batch.outputs[0].record
    assert isinstance(label, LabelRecord)
    assert (label.label, label.source, label.worker) == ("offensive", "jury", "host:1")
    assert (label.model_versions, label.threshold) == ({"j0": "1", "j1": "2"}, 0.7)
    assert label.latency_ms == 250.0  # produced 0.25 s before it was decided
    assert len(batch.decisions) == 2  # the votes the metrics count


def test_escalations_go_to_review_with_the_jury_guess_and_no_label() -> None:
    read = read_batch([post("a"), post("b", offset=1)], 64_000, 4000)
    batch = label_batch(read, [decision(True), decision(False)], STAMP, NOW, audit_rate=0.0)
    review = [o for o in batch.outputs if o.topic is Topic.REVIEW]
    assert [(o.key, o.outcome) for o in review] == [(b"a", "escalated")]
    case = review[0].record
    assert isinstance(case, ReviewCase)
    assert (case.kind, case.jury_label, case.reason) == ("escalation", "offensive", "split vote")
    assert case.received_ms == NOW * 1000
    assert {o.key for o in batch.outputs if o.topic is Topic.LABELS} == {b"b"}


def test_malformed_input_is_dead_lettered_with_its_reason() -> None:
    bad = [
        Msg(b"k1", b"", 3),
        Msg(b"k2", b"{not json", 4),
        Msg(b"k3", json.dumps({"id": "k3", "text": "  "}).encode(), 5),
    ]
    read = read_batch([*bad, post("ok", offset=6)], 64_000, 4000)
    assert [p.id for p, _ in read.posts] == ["ok"]
    batch = label_batch(read, [decision(False)], STAMP, NOW, audit_rate=0.0)
    letters = [o for o in batch.outputs if o.topic is Topic.DEAD_LETTERS]
    assert all(o.outcome == "dead_lettered" for o in letters)
    reasons = {}
    for o in letters:
        assert isinstance(o.record, DeadLetter)
        reasons[o.key] = (o.record.stage, o.record.error, o.record.source.offset)
    assert reasons[b"k1"] == ("validation", "empty message (no value bytes)", 3)
    assert reasons[b"k2"][2] == 4 and reasons[b"k2"][0] == "validation"
    assert reasons[b"k3"] == ("validation", "field 'text' is empty", 5)


def test_a_post_the_jury_cannot_score_is_dead_lettered_and_the_others_labeled() -> None:
    read = read_batch([post("a"), post("b", offset=1)], 64_000, 4000)
    failed = InferenceFailed("RuntimeError: bad tensor")
    batch = label_batch(read, [failed, decision(False)], STAMP, NOW, audit_rate=0.0)
    letter = batch.outputs[0]
    assert (letter.topic, letter.key) == (Topic.DEAD_LETTERS, b"a")
    assert isinstance(letter.record, DeadLetter)
    assert letter.record.stage == "inference"
    assert letter.record.error == "inference failed: RuntimeError: bad tensor"
    assert [(o.topic, o.key) for o in batch.outputs[1:]] == [(Topic.LABELS, b"b")]


def test_a_quarantined_message_keeps_its_id_and_says_what_to_do() -> None:
    letter = quarantined(post("p", offset=9), 3, 64_000)
    assert (letter.topic, letter.key, letter.outcome) == (
        Topic.DEAD_LETTERS,
        b"p",
        "dead_lettered",
    )
    assert isinstance(letter.record, DeadLetter)
    assert letter.record.stage == "quarantine"
    assert "crashed 3 times" in letter.record.error
    assert "replay it from dead-letters" in letter.record.error


def test_about_the_audit_rate_of_accepted_labels_is_also_sent_to_review() -> None:
    messages = [post(f"p{i}", offset=i) for i in range(2000)]
    read = read_batch(messages, 64_000, 4000)
    batch = label_batch(read, [decision(False)] * 2000, STAMP, NOW, audit_rate=0.1)
    audits = [o for o in batch.outputs if o.outcome == "audited"]
    assert 150 < len(audits) < 250
    labels = {o.key: o.record for o in batch.outputs if o.topic is Topic.LABELS}
    assert len(labels) == 2000
    for audit in audits:
        label = labels[audit.key]
        assert isinstance(audit.record, ReviewCase) and audit.record.kind == "audit"
        assert isinstance(label, LabelRecord) and label.audit is True  # an audited label stands
    again = label_batch(read, [decision(False)] * 2000, STAMP, NOW, audit_rate=0.1)
    assert [o.key for o in again.outputs if o.outcome == "audited"] == [o.key for o in audits]


def test_escalations_beyond_the_review_budget_get_the_jury_guess_flagged_unreviewed() -> None:
    read = read_batch([post(f"p{i}", offset=i) for i in range(5)], 64_000, 4000)
    allowance = ReviewAllowance(rate=0.0, credit=2.0)
    batch = label_batch(read, [decision(True)] * 5, STAMP, NOW, 0.0, allowance)
    outcomes = Counter(o.outcome for o in batch.outputs)
    assert outcomes == {"escalated": 2, "unreviewed": 3}
    unreviewed = [o.record for o in batch.outputs if o.outcome == "unreviewed"]
    assert all(isinstance(r, LabelRecord) and r.unreviewed for r in unreviewed)


def valid_post(text: str) -> bytes:
    """A post whose id is its message key (texts may be blank: those are malformed)."""
    return json.dumps({"text": text}).encode()


def garbage(raw: bytes) -> bytes:
    """Bytes that are never a JSON object (0xff is not UTF-8), so never carry another id."""
    return b"\xff" + raw


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.text(max_size=30).map(valid_post), st.binary(max_size=40).map(garbage)),
            st.sampled_from(["accept", "escalate", "fail"]),
        ),
        max_size=30,
    ),
    st.floats(0.0, 1.0),
    st.none() | st.floats(0.0, 3.0),
)
def test_every_message_ends_in_exactly_one_fate(
    batch_spec: list[tuple[bytes, str]], audit_rate: float, credit: float | None
) -> None:
    """Posts, blank texts and garbage bytes, accepted, escalated or failing in the jury, with
    any audit rate and review budget: each message is labeled, reviewed or dead-lettered,
    exactly once, and only a labeled one is audited."""
    messages = [Msg(f"m{n}".encode(), value, n) for n, (value, _) in enumerate(batch_spec)]
    plan = {f"m{n}": what for n, (_, what) in enumerate(batch_spec)}
    read = read_batch(messages, 64_000, 4000)
    decisions: list[Decision | InferenceFailed] = [
        InferenceFailed("boom") if plan[p.id] == "fail" else decision(plan[p.id] == "escalate")
        for p, _ in read.posts
    ]
    allowance = None if credit is None else ReviewAllowance(rate=0.1, credit=credit)
    batch = label_batch(read, decisions, STAMP, NOW, audit_rate, allowance)
    assert fates(batch.outputs) == Counter(list(plan))  # every id (the message key) exactly once
    labeled = {o.key for o in batch.outputs if o.topic is Topic.LABELS}
    assert all(o.key in labeled for o in batch.outputs if o.outcome == "audited")
    for o in batch.outputs:
        if plan[o.key.decode()] == "fail" and o.topic is not Topic.DEAD_LETTERS:
            raise AssertionError(f"{o.key!r} failed in the jury but went to {o.topic}")
