"""The worker's decision for a batch, as data: which record goes to which topic, and why.

The worker role (``worker.py``) is a shell around this module: it fetches a batch, has the jury
score the posts (in threads, off the event loop), and hands the decisions here; what comes back
is every output of the batch — labels, review cases, audits, dead letters with their reason —
which the shell produces, acknowledges and counts. Pure: no I/O, no faust, no Prometheus, so
every routing rule is tested in-process (tests/test_labeling.py).

Every message read ends in exactly one *fate*: a label (``labeled``, or ``unreviewed`` when the
review budget did not cover its escalation), a review case (``escalated``), or a dead letter
(``dead_lettered``: malformed, inference failed, quarantined). An ``audited`` case is a second
output beside a label, a measurement of it, not another fate.

With several tasks (``label_tasks_batch``) the fates are the same, per post: one label record
holding every task's result, or one review case asking for the tasks the jury left unsettled
and carrying the settled ones, which the reviewer completes into the post's label record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from jurystream.config import Topic
from jurystream.models.rules.selection import ReviewAllowance
from jurystream.models.rules.voting import Decision
from jurystream.stream.records import (
    Consumed,
    DeadLetter,
    Invalid,
    LabelRecord,
    Post,
    Record,
    ReviewCase,
    TaskResult,
)
from jurystream.stream.routing import Route, route, route_tasks

Outcome = Literal["labeled", "unreviewed", "escalated", "audited", "dead_lettered"]


class Message(Consumed, Protocol):
    """A consumed posts message as faust's (and aiokafka's) messages carry it."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def timestamp(self) -> float: ...  # seconds since the epoch, when it was produced


M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Output:
    """One record to produce: its topic, key and record, and the outcome the metrics count."""

    topic: Topic
    key: bytes
    record: Record
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class InferenceFailed:
    """The jury could not score this post (the exception a lone retry still raised)."""

    error: str


@dataclass(frozen=True)
class ReadBatch(Generic[M]):
    """A batch split into the posts to score (with their messages) and the malformed ones."""

    posts: list[tuple[Post, M]]
    dead_letters: list[Output]


@dataclass(frozen=True, slots=True)
class Stamp:
    """What each output of a batch is stamped with: the jury that decided it and where."""

    versions: Mapping[str, str]
    threshold: float  # the first task's with several tasks
    worker: str
    thresholds: Mapping[str, float] | None = None  # per task, with several tasks


@dataclass(frozen=True)
class LabeledBatch:
    """Every output of a batch, in the order they are produced, and the decisions routed."""

    outputs: list[Output]
    decisions: list[Decision]  # one per scored post: the votes the metrics count


def dead_letter(message: Message, error: str, stage: str, post_id: str | None) -> Output:
    letter = DeadLetter.of_message(message, error, stage, post_id)
    return Output(Topic.DEAD_LETTERS, letter.key, letter, "dead_lettered")


def read_batch(messages: Sequence[M], max_bytes: int, max_chars: int) -> ReadBatch[M]:
    """Parse each message; one that is not a post becomes a dead letter with the reason."""
    posts: list[tuple[Post, M]] = []
    letters = []
    for message in messages:
        parsed = Post.parse(message.value, message.key, max_bytes=max_bytes, max_chars=max_chars)
        if isinstance(parsed, Invalid):
            letters.append(dead_letter(message, parsed.reason, "validation", parsed.id))
        else:
            posts.append((parsed, message))
    return ReadBatch(posts, letters)


def quarantine_error(attempts: int) -> str:
    return (
        f"quarantined: the worker crashed {attempts} times while processing this message "
        "(see its logs at that time); fix the cause, then replay it from dead-letters"
    )


def quarantined(message: Message, attempts: int, max_bytes: int) -> Output:
    """The dead letter of a message that crashed the worker ``attempts`` times."""
    parsed = Post.parse(message.value, message.key, max_bytes=max_bytes)
    return dead_letter(message, quarantine_error(attempts), "quarantine", parsed.id)


def label_batch(
    read: ReadBatch[M],
    decisions: Sequence[Decision | InferenceFailed],
    stamp: Stamp,
    now: float,
    audit_rate: float,
    allowance: ReviewAllowance | None = None,
) -> LabeledBatch:
    """The outputs of a read batch given one decision (or failure) per post, decided at ``now``
    (seconds): its dead letters first, then per post its review case and its label.

    ``allowance`` (the review budget, if any) is charged for the escalations (``routing``).
    """
    outputs, scored = _split_failed(read, decisions)
    routes = route(
        [post for post, _, _ in scored], [d for _, d, _ in scored], audit_rate, allowance
    )
    for r, (_, _, message) in zip(routes, scored, strict=True):
        key = r.post.id.encode("utf-8")
        if r.review is not None:
            case = ReviewCase.of(
                r.post,
                r.decision,
                stamp.versions,
                now * 1000,
                stamp.worker,
                stamp.threshold,
                kind=r.review,
            )
            outcome: Outcome = "escalated" if r.review == "escalation" else "audited"
            outputs.append(Output(Topic.REVIEW, key, case, outcome))
        if r.label:
            label = LabelRecord.from_jury(
                r.post,
                r.decision,
                stamp.versions,
                max(0.0, (now - message.timestamp) * 1000),
                stamp.worker,
                stamp.threshold,
                audit=r.review == "audit",
                unreviewed=r.unreviewed,
            )
            outcome = "unreviewed" if r.unreviewed else "labeled"
            outputs.append(Output(Topic.LABELS, key, label, outcome))
    return LabeledBatch(outputs, [r.decision for r in routes])


D = TypeVar("D")


def _split_failed(
    read: ReadBatch[M], decisions: Sequence[D | InferenceFailed]
) -> tuple[list[Output], list[tuple[Post, D, M]]]:
    """The batch's dead letters so far (malformed, inference failed) and the scored posts."""
    if len(decisions) != len(read.posts):
        raise ValueError(f"{len(read.posts)} posts but {len(decisions)} decisions")
    outputs = list(read.dead_letters)
    scored: list[tuple[Post, D, M]] = []
    for (post, message), decision in zip(read.posts, decisions, strict=True):
        if isinstance(decision, InferenceFailed):
            error = f"inference failed: {decision.error}"
            outputs.append(dead_letter(message, error, "inference", post.id))
        else:
            scored.append((post, decision, message))
    return outputs, scored


def label_tasks_batch(
    read: ReadBatch[M],
    decisions: Sequence[Mapping[str, Decision] | InferenceFailed],
    stamp: Stamp,
    now: float,
    audit_rate: float,
    allowance: ReviewAllowance | None = None,
) -> LabeledBatch:
    """``label_batch`` for a multi-task deployment: ``decisions`` holds, per post, each task's
    decision (``TaskJuries.decide``), and ``stamp.thresholds`` each task's threshold."""
    thresholds = stamp.thresholds or {}
    outputs, scored = _split_failed(read, decisions)
    routes = route_tasks(
        [post for post, _, _ in scored], [d for _, d, _ in scored], audit_rate, allowance
    )
    flat: list[Decision] = []
    for r, (post, by_task, message) in zip(routes, scored, strict=True):
        flat.extend(by_task.values())
        key = post.id.encode("utf-8")
        results = {
            task: TaskResult.of_jury(
                d, thresholds.get(task, stamp.threshold), unreviewed=r.unreviewed and d.escalated
            )
            for task, d in by_task.items()
        }
        if r.review is not None:
            asked = _asked(r, results, by_task)
            settled = {t: res for t, res in results.items() if t not in asked}
            case = ReviewCase.of_tasks(
                post, asked, settled, stamp.versions, now * 1000, stamp.worker, kind=r.review
            )
            outcome: Outcome = "escalated" if r.review == "escalation" else "audited"
            outputs.append(Output(Topic.REVIEW, key, case, outcome))
        if r.label:
            label = LabelRecord.of_tasks(
                post.id,
                results,
                stamp.versions,
                max(0.0, (now - message.timestamp) * 1000),
                worker=stamp.worker,
                audit=True if r.review == "audit" else None,
                unreviewed=True if r.unreviewed else None,
            )
            outcome = "unreviewed" if r.unreviewed else "labeled"
            outputs.append(Output(Topic.LABELS, key, label, outcome))
    return LabeledBatch(outputs, flat)


def _asked(
    r: Route, results: Mapping[str, TaskResult], by_task: Mapping[str, Decision]
) -> dict[str, TaskResult]:
    """What a review case asks: every task of an audit, the unsettled ones of an escalation."""
    if r.review == "audit":
        return dict(results)
    return {t: res for t, res in results.items() if by_task[t].escalated}
