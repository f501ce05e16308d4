"""The records on jurystream's topics: one typed model per topic, built, written and read here.

Every producer writes a record with ``to_bytes()`` and every consumer reads one with
``parse(value, key)``, which returns the record or an ``Invalid`` whose reason is meant for the
person who produced the message (it goes to dead-letters or a log). Messages are keyed by the
message id (``key``), so a replay after a crash overwrites rather than duplicates downstream.

==================  ===========================  ==========================================
topic               record                       written by → read by
==================  ===========================  ==========================================
``posts``           ``Post``                     producers → worker
``labels``          ``LabelRecord``              worker, reviewer → monitor, ``labels`` CLI
``review``          ``ReviewCase``               worker → reviewer
``hard_samples``    ``HardSample``               reviewer → trainer, monitor
``feedback``        ``Feedback``                 ``feedback`` CLI, people → trainer, monitor
``dead_letters``    ``DeadLetter``               every role → people (replay by hand)
``model_updates``   ``ModelUpdate``,             trainer, ``models`` CLI → workers, monitor
                    ``ThresholdUpdate``
``spend``           ``SpendReport``              reviewers → reviewers
==================  ===========================  ==========================================

A record writes the fields it was given (``exclude_unset``): an optional field a producer
leaves out is absent from the JSON, as consumers of older records expect, and one it gives as
``None`` is written as ``null``. Parsing is by hand, not by pydantic's validators, so that each
refusal keeps the reason a producer can act on. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from jurystream.models.reviewer.base import Case, TaskQuestion, Verdict
from jurystream.models.reviewer.spend import WindowReport
from jurystream.models.rules.continual import Example
from jurystream.models.rules.voting import Decision, Vote
from jurystream.stream.strict_json import StrictJSONError, loads, loads_object


def dumps(record: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as every record is written."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a message is not a record; ``id`` is the message id when it could be read."""

    reason: str
    id: str | None = None


class Record(BaseModel):
    """A topic's record: immutable, written with ``to_bytes``."""

    model_config = ConfigDict(frozen=True)

    def to_bytes(self) -> bytes:
        return dumps(self.model_dump(exclude_unset=True))


# --- reading helpers ----------------------------------------------------------------------

# Any float is accepted as a number, but an integer beyond a float's range cannot become one.
_MAX_FLOAT_INT = math.ldexp(1.0, 1000)


def _key_id(key: bytes | None) -> str | None:
    if not key:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _object(value: bytes | None) -> dict[str, Any] | Invalid:
    try:
        return loads_object(value)
    except StrictJSONError as exc:
        return Invalid(str(exc))


def _body_or_key_id(data: Mapping[str, Any], key: bytes | None) -> str | None:
    post_id = data.get("id")
    if isinstance(post_id, str) and post_id:
        return post_id
    return _key_id(key)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _float_or_none(value: Any) -> float | None:
    """A number as a float; anything else (or an integer beyond a float's range) as None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _given(**fields: Any) -> dict[str, Any]:
    """The optional fields a message carried: a parsed record writes back what it read."""
    return {name: value for name, value in fields.items() if value is not None}


def _votes(raw: Any, what: str) -> tuple[Vote, ...] | Invalid:
    if not raw:
        return ()
    if not isinstance(raw, list):
        return Invalid(f"{what} field 'votes' must be a list")
    votes = []
    for vote in raw:
        try:
            votes.append(Vote(str(vote["juror"]), str(vote["label"]), float(vote["confidence"])))
        except (KeyError, TypeError, ValueError, OverflowError):
            return Invalid(f"{what} has a malformed vote {vote!r}")
    return tuple(votes)


def _rounded(votes: Sequence[Vote]) -> tuple[Vote, ...]:
    return tuple(Vote(v.juror, v.label, round(v.confidence, 4)) for v in votes)


# --- per-task results ----------------------------------------------------------------------


class TaskResult(BaseModel):
    """One task's label on a post in a multi-task deployment (``Settings.tasks``): who decided
    it (``source``: ``jury`` or a reviewer tier), with what confidence and votes. An escalated
    task also says why (``reason``), a reviewer's result the ``jury_label`` it replaces, a
    budget-capped escalation ``unreviewed``."""

    model_config = ConfigDict(frozen=True)

    label: str
    source: str
    confidence: float | None = None
    votes: tuple[Vote, ...] = ()
    threshold: float | None = None
    reason: str | None = None
    jury_label: str | None = None
    unreviewed: bool | None = None

    @classmethod
    def of_jury(
        cls, decision: Decision, threshold: float, *, unreviewed: bool = False
    ) -> TaskResult:
        flags: dict[str, Any] = {"reason": decision.reason} if decision.escalated else {}
        if unreviewed:
            flags["unreviewed"] = True
        return cls(
            label=decision.label,
            source="jury",
            confidence=round(float(decision.confidence), 4),
            votes=_rounded(decision.votes),
            threshold=threshold,
            **flags,
        )

    @classmethod
    def of_review(cls, asked: TaskResult, label: str, confidence: float, source: str) -> TaskResult:
        """A reviewer's result for a task the jury escalated (``asked``: the jury's guess)."""
        return cls(
            label=label,
            source=source,
            confidence=round(float(confidence), 4),
            votes=asked.votes,
            threshold=asked.threshold,
            jury_label=asked.label,
        )


def _task_results(raw: Any, what: str) -> dict[str, TaskResult] | Invalid:
    """``{task: result}`` as a record's JSON carries it (absent: none)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        return Invalid(f"{what} must be an object of task → result")
    out: dict[str, TaskResult] = {}
    for task, result in raw.items():
        if not isinstance(result, dict):
            return Invalid(f"{what}: task {task!r} must be an object")
        label, source = result.get("label"), result.get("source")
        if not isinstance(label, str) or not label or not isinstance(source, str):
            return Invalid(f"{what}: task {task!r} needs string 'label' and 'source'")
        votes = _votes(result.get("votes"), f"{what}: task {task!r}")
        if isinstance(votes, Invalid):
            return votes
        out[task] = TaskResult(
            label=label,
            source=source,
            votes=votes,
            **_given(
                confidence=_float_or_none(result.get("confidence")),
                threshold=_float_or_none(result.get("threshold")),
                reason=_str_or_none(result.get("reason")),
                jury_label=_str_or_none(result.get("jury_label")),
                unreviewed=True if result.get("unreviewed") is True else None,
            ),
        )
    return out


# --- posts ---------------------------------------------------------------------------------


class Post(Record):
    """A post to label. ``ts`` (seconds since the epoch) and ``meta`` are optional and kept."""

    id: str
    text: str
    ts: float | None = None
    meta: dict[str, Any] = {}

    @classmethod
    def of(cls, post_id: str, text: str, **optional: Any) -> Post:
        """A post to send; ``optional`` (``ts``, ``meta``) is written only when not None."""
        return cls(id=post_id, text=text, **_given(**optional))

    @classmethod
    def parse(
        cls,
        value: bytes | None,
        key: bytes | None = None,
        *,
        max_bytes: int = 64_000,
        max_chars: int = 4000,
    ) -> Post | Invalid:
        """A posts message. The id comes from the JSON ``id`` or else the message key."""
        key_id = _key_id(key)
        if value is None or len(value) == 0:
            return Invalid("empty message (no value bytes)", key_id)
        if len(value) > max_bytes:
            return Invalid(
                f"message is {len(value)} bytes, over the {max_bytes}-byte limit", key_id
            )
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
        if ts is not None and not (-_MAX_FLOAT_INT < ts < _MAX_FLOAT_INT):
            return Invalid("field 'ts' is out of range (seconds since the epoch expected)", post_id)
        meta = data.get("meta", {})
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            return Invalid(f"field 'meta' must be an object, got {type(meta).__name__}", post_id)
        return cls.of(post_id, text, ts=None if ts is None else float(ts), meta=meta or None)


# --- review --------------------------------------------------------------------------------

CaseKind = Literal["escalation", "audit"]


class ReviewCase(Record):
    """What the reviewer needs: the post, the jury's votes and guess, and why it is reviewed
    (``kind``: an ``escalation`` the reviewer decides, or an ``audit`` it only measures; an
    audit's label stands and no label is written for it)."""

    id: str
    text: str
    ts: float | None = None
    meta: dict[str, Any] = {}
    kind: CaseKind = "escalation"
    jury_label: str | None = None
    jury_confidence: float | None = None
    votes: tuple[Vote, ...] = ()
    reason: str | None = None
    threshold: float | None = None
    model_versions: dict[str, str] = {}
    received_ms: float | None = None
    worker: str | None = None
    # Multi-task: the tasks the reviewer decides (an escalation's unsettled ones, every task of
    # an audit), each with the jury's guess, and the ones the jury settled, kept as they are.
    asked: dict[str, TaskResult] = {}
    settled: dict[str, TaskResult] = {}

    @classmethod
    def of(
        cls,
        post: Post,
        decision: Decision,
        versions: Mapping[str, str],
        received_ms: float,
        worker: str,
        threshold: float,
        kind: CaseKind = "escalation",
    ) -> ReviewCase:
        return cls(
            **post.model_dump(exclude_unset=True),
            kind=kind,
            jury_label=decision.label,
            jury_confidence=round(decision.confidence, 4),
            votes=_rounded(decision.votes),
            reason=decision.reason if kind == "escalation" else "audit sample",
            threshold=threshold,
            model_versions=dict(versions),
            received_ms=received_ms,
            worker=worker,
        )

    @classmethod
    def of_tasks(
        cls,
        post: Post,
        asked: Mapping[str, TaskResult],
        settled: Mapping[str, TaskResult],
        versions: Mapping[str, str],
        received_ms: float,
        worker: str,
        kind: CaseKind = "escalation",
    ) -> ReviewCase:
        """A multi-task case; its top-level jury fields are those of the first asked task."""
        first = next(iter(asked.values()))
        reasons = "; ".join(f"{t}: {r.reason}" for t, r in asked.items() if r.reason)
        return cls(
            **post.model_dump(exclude_unset=True),
            kind=kind,
            jury_label=first.label,
            jury_confidence=first.confidence,
            votes=first.votes,
            reason=reasons if kind == "escalation" else "audit sample",
            threshold=first.threshold,
            model_versions=dict(versions),
            received_ms=received_ms,
            worker=worker,
            asked=dict(asked),
            settled=dict(settled),
        )

    @classmethod
    def parse(cls, value: bytes | None, key: bytes | None = None) -> ReviewCase | Invalid:
        """A review message; the reasons name what the worker should have written."""
        data = _object(value)
        if isinstance(data, Invalid):
            return data
        post_id, text = data.get("id"), data.get("text")
        if not isinstance(post_id, str) or not post_id:
            return Invalid("review record has no string 'id'", _key_id(key))
        if not isinstance(text, str) or not text.strip():
            return Invalid("review record has no non-empty string 'text'", post_id)
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            return Invalid("review record field 'meta' must be an object", post_id)
        votes = _votes(data.get("votes"), "review record")
        if isinstance(votes, Invalid):
            return Invalid(votes.reason, post_id)
        versions = data.get("model_versions") or {}
        if not isinstance(versions, dict):
            return Invalid("review record field 'model_versions' must be an object", post_id)
        kind = data.get("kind", "escalation")
        if kind not in ("escalation", "audit"):
            return Invalid(f"review record kind {kind!r} is not 'escalation' or 'audit'", post_id)
        jury_label = _str_or_none(data.get("jury_label"))
        if kind == "audit" and jury_label is None:
            reason = "an audit case needs the jury's label it measures ('jury_label')"
            return Invalid(reason, post_id)
        asked = _task_results(data.get("asked"), "review record field 'asked'")
        settled = _task_results(data.get("settled"), "review record field 'settled'")
        for tasks in (asked, settled):
            if isinstance(tasks, Invalid):
                return Invalid(tasks.reason, post_id)
        assert not isinstance(asked, Invalid) and not isinstance(settled, Invalid)
        if settled and not asked:
            return Invalid("review record has 'settled' tasks but none 'asked'", post_id)
        return cls(
            id=post_id,
            text=text,
            kind=kind,
            votes=votes,
            model_versions={str(k): str(v) for k, v in versions.items()},
            **_given(
                ts=_float_or_none(data.get("ts")),
                meta=meta or None,
                jury_label=jury_label,
                jury_confidence=_float_or_none(data.get("jury_confidence")),
                reason=_str_or_none(data.get("reason")),
                threshold=_float_or_none(data.get("threshold")),
                received_ms=_float_or_none(data.get("received_ms")),
                worker=_str_or_none(data.get("worker")),
                asked=asked or None,
                settled=settled or None,
            ),
        )

    def case(self) -> Case:
        """The question a reviewer tier answers (every asked task at once, with several)."""
        tasks = tuple(TaskQuestion(task, result.votes) for task, result in self.asked.items())
        return Case(id=self.id, text=self.text, votes=self.votes, meta=self.meta, tasks=tasks)


# --- labels --------------------------------------------------------------------------------


class LabelRecord(Record):
    """A decided label. ``source`` is ``jury`` or the reviewer tier that decided.

    The jury's labels also carry the ``worker``, the ``threshold`` they were decided at, and
    ``audit`` (also sent to review to measure it; the label stands) or ``unreviewed`` (escalated,
    but the review budget did not cover it: the jury's best guess, with the escalation's
    ``reason``). A reviewer's labels carry the ``jury_label`` they replace and their ``cost_usd``.
    """

    id: str
    label: str
    confidence: float | None = None
    source: str
    votes: tuple[Vote, ...] = ()
    model_versions: dict[str, str] = {}
    latency_ms: float | None = None
    worker: str | None = None
    jury_label: str | None = None
    cost_usd: float | None = None
    threshold: float | None = None
    audit: bool | None = None
    unreviewed: bool | None = None
    reason: str | None = None
    # Multi-task: one result per task, in the order of the settings; the top-level label,
    # confidence, source and votes are the first task's, for readers of single-task records.
    tasks: dict[str, TaskResult] = {}

    @classmethod
    def of_tasks(
        cls,
        post_id: str,
        tasks: Mapping[str, TaskResult],
        versions: Mapping[str, str],
        latency_ms: float,
        **optional: Any,
    ) -> LabelRecord:
        """A multi-task label; ``optional`` (``worker``, ``audit``, ``cost_usd``) when given."""
        first = next(iter(tasks.values()))
        return cls(
            id=post_id,
            label=first.label,
            confidence=first.confidence,
            source=first.source,
            votes=first.votes,
            model_versions=dict(versions),
            latency_ms=round(float(latency_ms), 2),
            threshold=first.threshold,
            tasks=dict(tasks),
            **_given(**optional),
        )

    @classmethod
    def from_jury(
        cls,
        post: Post,
        decision: Decision,
        versions: Mapping[str, str],
        latency_ms: float,
        worker: str,
        threshold: float,
        *,
        audit: bool = False,
        unreviewed: bool = False,
    ) -> LabelRecord:
        flags: dict[str, Any] = {"audit": True} if audit else {}
        if unreviewed:
            flags.update(unreviewed=True, reason=decision.reason)
        return cls(
            id=post.id,
            label=decision.label,
            confidence=round(float(decision.confidence), 4),
            source="jury",
            votes=_rounded(decision.votes),
            model_versions=dict(versions),
            latency_ms=round(float(latency_ms), 2),
            worker=worker,
            threshold=threshold,
            **flags,
        )

    @classmethod
    def from_review(cls, case: ReviewCase, verdict: Verdict, latency_ms: float) -> LabelRecord:
        return cls(
            id=case.id,
            label=verdict.label,
            confidence=round(float(verdict.confidence), 4),
            source=verdict.source,
            votes=_rounded(case.votes),
            model_versions=dict(case.model_versions),
            latency_ms=round(float(latency_ms), 2),
            jury_label=case.jury_label,
            cost_usd=round(verdict.cost_usd, 8),
            threshold=case.threshold,
        )

    @classmethod
    def parse(cls, value: bytes | None, key: bytes | None = None) -> LabelRecord | Invalid:
        """A labels message; the id comes from the JSON ``id`` or else the message key."""
        data = _object(value)
        if isinstance(data, Invalid):
            return data
        post_id = _body_or_key_id(data, key)
        if post_id is None:
            return Invalid("no message id in key or value")
        label, source = data.get("label"), data.get("source")
        if not isinstance(label, str) or not isinstance(source, str):
            return Invalid("label record needs string 'label' and 'source'", post_id)
        votes = _votes(data.get("votes"), "label record")
        if isinstance(votes, Invalid):
            return Invalid(votes.reason, post_id)
        tasks = _task_results(data.get("tasks"), "label record field 'tasks'")
        if isinstance(tasks, Invalid):
            return Invalid(tasks.reason, post_id)
        versions = data.get("model_versions")
        return cls(
            id=post_id,
            label=label,
            source=source,
            votes=votes,
            **_given(
                model_versions=(
                    {str(k): str(v) for k, v in versions.items()}
                    if isinstance(versions, dict)
                    else None
                ),
                confidence=_float_or_none(data.get("confidence")),
                latency_ms=_float_or_none(data.get("latency_ms")),
                worker=_str_or_none(data.get("worker")),
                jury_label=_str_or_none(data.get("jury_label")),
                cost_usd=_float_or_none(data.get("cost_usd")),
                threshold=_float_or_none(data.get("threshold")),
                audit=data.get("audit") if isinstance(data.get("audit"), bool) else None,
                unreviewed=(
                    data.get("unreviewed") if isinstance(data.get("unreviewed"), bool) else None
                ),
                reason=_str_or_none(data.get("reason")),
                tasks=tasks or None,
            ),
        )


# --- hard samples --------------------------------------------------------------------------


class HardSample(Record):
    """The training record: the reviewer's label, who gave it, the jury's votes and a weight.

    The weight is the reviewer's confidence: the trainer can down-weight uncertain labels, as
    LLMaAA does with its learned per-example weights. ``kind`` tells a hard case (escalated)
    from an audit (a random accepted label): the trainer learns from both, and the monitor
    estimates the jury's accuracy from the audits (``label`` against ``jury_label``).
    """

    id: str
    text: str
    label: str
    label_source: str = "reviewer"
    votes: tuple[Vote, ...] = ()
    weight: float = 1.0
    kind: Literal["hard", "audit"] = "hard"
    jury_label: str | None = None
    jury_confidence: float | None = None
    threshold: float | None = None
    task: str | None = None  # multi-task: the task the label is for

    @classmethod
    def of_task(cls, case: ReviewCase, task: str, result: TaskResult) -> HardSample:
        """The sample of one reviewed task of a multi-task case (``result``: the reviewer's)."""
        asked = case.asked[task]
        return cls(
            id=case.id,
            text=case.text,
            label=result.label,
            label_source=result.source,
            votes=asked.votes,
            weight=result.confidence if result.confidence is not None else 1.0,
            kind="audit" if case.kind == "audit" else "hard",
            jury_label=asked.label,
            jury_confidence=asked.confidence,
            threshold=asked.threshold,
            task=task,
        )

    @property
    def key(self) -> bytes:
        """Message key: the post id, and its task in a multi-task deployment (one sample per
        reviewed task; a replay overwrites each)."""
        return (self.id if self.task is None else f"{self.id}#{self.task}").encode("utf-8")

    @classmethod
    def of(cls, case: ReviewCase, verdict: Verdict) -> HardSample:
        return cls(
            id=case.id,
            text=case.text,
            label=verdict.label,
            label_source=verdict.source,
            votes=_rounded(case.votes),
            weight=round(verdict.confidence, 4),
            kind="audit" if case.kind == "audit" else "hard",
            jury_label=case.jury_label,
            jury_confidence=case.jury_confidence,
            threshold=case.threshold,
        )

    @classmethod
    def parse(cls, value: bytes | None, key: bytes | None = None) -> HardSample | Invalid:
        """A hard-samples message, checked as strictly as the trainer needs."""
        data = _object(value)
        if isinstance(data, Invalid):
            return data
        for name in ("id", "text", "label"):
            if not isinstance(data.get(name), str) or not data[name].strip():
                return Invalid(f"hard sample needs a non-empty string {name!r}", _key_id(key))
        post_id = data["id"]
        weight = data.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            return Invalid("hard sample 'weight' must be a number", post_id)
        for name in ("weight", "threshold"):
            number = data.get(name)
            if isinstance(number, int) and not -_MAX_FLOAT_INT < number < _MAX_FLOAT_INT:
                return Invalid(f"hard sample {name!r} is out of range", post_id)
        kind = data.get("kind", "hard")
        if kind not in ("hard", "audit"):
            return Invalid(f"hard sample 'kind' must be 'hard' or 'audit', not {kind!r}", post_id)
        votes = _votes(data.get("votes"), "hard sample")
        if isinstance(votes, Invalid):
            return Invalid(votes.reason, post_id)
        source, jury_label = data.get("label_source"), data.get("jury_label")
        return cls(
            id=post_id,
            text=data["text"],
            label=data["label"],
            label_source=source if isinstance(source, str) and source else "reviewer",
            votes=votes,
            weight=float(weight),
            kind=kind,
            **_given(
                jury_label=jury_label if isinstance(jury_label, str) and jury_label else None,
                jury_confidence=_float_or_none(data.get("jury_confidence")),
                threshold=_float_or_none(data.get("threshold")),
                task=_str_or_none(data.get("task")) or None,
            ),
        )

    @property
    def example(self) -> Example:
        """The training example: the reviewer's label, weighted by its confidence."""
        return Example(self.id, self.text, self.label, self.kind, self.label_source, self.weight)

    @property
    def audit(self) -> tuple[str, str, str, float | None] | None:
        """(id, jury label, reviewer label, threshold) of an audit; None for a hard case."""
        if self.kind != "audit" or self.jury_label is None:
            return None
        return (self.id, self.jury_label, self.label, self.threshold)


# --- feedback ------------------------------------------------------------------------------


class Feedback(Record):
    """A person's gold label for a message, with its text when the sender has it (the trainer
    then also learns from it). ``source`` says who sent it (``human`` from the CLI)."""

    id: str
    label: str
    source: str | None = None
    text: str | None = None
    task: str | None = None  # multi-task: the task the gold label is for

    @classmethod
    def of(cls, post_id: str, label: str, **optional: Any) -> Feedback:
        """Feedback to send; ``optional`` (``source``, ``text``) is written when not None."""
        return cls(id=post_id, label=label, **_given(**optional))

    @classmethod
    def parse(cls, value: bytes | None, key: bytes | None = None) -> Feedback | Invalid:
        """A feedback message; the id comes from the JSON ``id`` or else the message key."""
        data = _object(value)
        if isinstance(data, Invalid):
            return data
        post_id = _body_or_key_id(data, key)
        if post_id is None:
            return Invalid("feedback needs a non-empty string 'id' (or a message key)")
        label = data.get("label")
        if not isinstance(label, str) or not label:
            return Invalid("feedback needs a non-empty string 'label' (the gold label)", post_id)
        text = data.get("text")
        return cls.of(
            post_id,
            label,
            source=_str_or_none(data.get("source")),
            text=text if isinstance(text, str) and text.strip() else None,
            task=_str_or_none(data.get("task")) or None,
        )


# --- dead letters --------------------------------------------------------------------------

# Dead letters must fit in one Kafka message (1 MB by default) after base64: keep at most this
# much of the original; its size, checksum and source offset find the rest.
MAX_DEAD_LETTER_BYTES = 256 * 1024


class Consumed(Protocol):
    """What faust's and aiokafka's consumed messages both carry."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


class SourceRef(BaseModel):
    """Where a dead letter was read: enough to find the original again."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class DeadLetter(Record):
    """The original bytes (base64, at most ``MAX_DEAD_LETTER_BYTES``), the error and where it
    failed: enough to replay by hand. ``stage`` names the step that refused it."""

    id: str | None
    error: str
    stage: str
    source: SourceRef
    original_b64: str
    original_size: int
    original_sha256: str
    truncated: bool

    @classmethod
    def of(
        cls,
        original: bytes | None,
        error: str,
        stage: str,
        topic: str,
        partition: int,
        offset: int,
        post_id: str | None = None,
    ) -> DeadLetter:
        raw = original or b""
        kept = raw[:MAX_DEAD_LETTER_BYTES]
        return cls(
            id=post_id,
            error=error,
            stage=stage,
            source=SourceRef(topic=topic, partition=partition, offset=offset),
            original_b64=base64.b64encode(kept).decode("ascii"),
            original_size=len(raw),
            original_sha256=hashlib.sha256(raw).hexdigest(),
            truncated=len(kept) < len(raw),
        )

    @classmethod
    def of_message(
        cls, msg: Consumed, error: str, stage: str, post_id: str | None = None
    ) -> DeadLetter:
        return cls.of(msg.value, error, stage, msg.topic, msg.partition, msg.offset, post_id)

    @property
    def key(self) -> bytes:
        """The message id, or where the original was read when it has none."""
        src = self.source
        return (self.id or f"{src.topic}:{src.partition}:{src.offset}").encode("utf-8")

    @classmethod
    def parse(cls, value: bytes | None, key: bytes | None = None) -> DeadLetter | Invalid:
        data = _object(value)
        if isinstance(data, Invalid):
            return data
        post_id = data.get("id")
        if post_id is not None and not isinstance(post_id, str):
            return Invalid("dead letter 'id' must be a string or null", _key_id(key))
        for name in ("error", "stage", "original_b64", "original_sha256"):
            if not isinstance(data.get(name), str):
                return Invalid(f"dead letter needs a string {name!r}", post_id)
        src = data.get("source")
        if not (
            isinstance(src, dict)
            and isinstance(src.get("topic"), str)
            and all(_is_int(src.get(n)) for n in ("partition", "offset"))
        ):
            return Invalid("dead letter needs 'source' with topic, partition and offset", post_id)
        if not _is_int(data.get("original_size")) or not isinstance(data.get("truncated"), bool):
            return Invalid("dead letter needs an integer 'original_size' and 'truncated'", post_id)
        return cls(
            id=post_id,
            error=data["error"],
            stage=data["stage"],
            source=SourceRef(topic=src["topic"], partition=src["partition"], offset=src["offset"]),
            original_b64=data["original_b64"],
            original_size=data["original_size"],
            original_sha256=data["original_sha256"],
            truncated=data["truncated"],
        )

    def original(self) -> bytes:
        """The kept bytes of the original message (all of it unless ``truncated``)."""
        return base64.b64decode(self.original_b64)


# --- model updates -------------------------------------------------------------------------


class ModelUpdate(Record):
    """ "Serve this version of this juror now", keyed by the juror's name.

    The manifest lists the sha256 of every file of the version, so ``sha256`` (of the manifest)
    pins the whole version: a worker that fetched something else refuses it.
    """

    name: str
    version: str
    parent: str | None = None
    kind: str | None = None
    registry: str
    location: str | None = None
    sha256: str
    metrics: dict[str, Any] = {}
    announced_at: str | None = None

    @property
    def key(self) -> bytes:
        return self.name.encode("utf-8")

    @classmethod
    def parse(cls, value: bytes | None, key: bytes | None = None) -> ModelUpdate | Invalid:
        data = _object(value)
        return data if isinstance(data, Invalid) else cls._from(data)

    @classmethod
    def _from(cls, data: Mapping[str, Any]) -> ModelUpdate | Invalid:
        for name in ("name", "version", "registry", "sha256"):
            if not isinstance(data.get(name), str) or not data[name]:
                return Invalid(f"model update needs a non-empty string {name!r}")
        metrics = data.get("metrics")
        return cls(
            name=data["name"],
            version=data["version"],
            registry=data["registry"],
            sha256=data["sha256"],
            metrics=metrics if isinstance(metrics, dict) else {},
            **_given(
                parent=_str_or_none(data.get("parent")),
                kind=_str_or_none(data.get("kind")),
                location=_str_or_none(data.get("location")),
                announced_at=_str_or_none(data.get("announced_at")),
            ),
        )


class ThresholdUpdate(Record):
    """The controller's threshold for one policy and the juror versions it was calibrated on.

    Sent on ``model_updates`` keyed ``thresholds:<policy>`` right after the versions it goes
    with, so thresholds travel with the jurors: a worker applies it once it serves exactly
    ``versions`` (``matches``), and every label it then writes carries that threshold. The
    decision's figures (``target_accuracy``...) are there for people and dashboards.

    Multi-task (``Settings.tasks``): ``task`` names the task whose jury it is for, and it is
    keyed ``thresholds:<task>:<policy>`` so that each task's latest survives compaction; a
    single-task worker ignores an update with a task, a multi-task one an update without.
    """

    kind: Literal["thresholds"] = "thresholds"
    policy: str
    threshold: float
    versions: dict[str, str]
    seq: float  # announcement time; the latest wins when history is read back
    reason: str = ""
    target_accuracy: float | None = None
    expected_accuracy: float | None = None
    expected_escalation: float | None = None
    reviewer_accuracy: float | None = None
    audit: dict[str, int] | None = None  # the audits it was decided on: agreed, total
    task: str | None = None  # multi-task: the task whose jury it calibrates

    @property
    def key(self) -> bytes:
        if self.task is None:
            return f"{self.kind}:{self.policy}".encode()
        return f"{self.kind}:{self.task}:{self.policy}".encode()

    def to_bytes(self) -> bytes:
        """``kind`` first and always: it tells a threshold from a juror version."""
        return dumps({"kind": self.kind} | self.model_dump(exclude_unset=True))

    def matches(self, serving: Mapping[str, str]) -> bool:
        """Whether a jury serving ``serving`` is the one this threshold was calibrated for."""
        return all(serving.get(name) == version for name, version in self.versions.items())

    @classmethod
    def parse(cls, value: bytes | None, key: bytes | None = None) -> ThresholdUpdate | Invalid:
        data = _object(value)
        return data if isinstance(data, Invalid) else cls._from(data)

    @classmethod
    def _from(cls, data: Mapping[str, Any]) -> ThresholdUpdate | Invalid:
        threshold, versions = data.get("threshold"), data.get("versions")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            return Invalid("thresholds update needs a number 'threshold'")
        if not 0.0 <= threshold <= 1.0:
            return Invalid(f"threshold {threshold} is outside [0, 1]")
        if not isinstance(versions, dict) or not versions:
            return Invalid("thresholds update needs the juror 'versions' it was calibrated on")
        if not isinstance(data.get("policy"), str):
            return Invalid("thresholds update needs a string 'policy'")
        seq = data.get("seq")
        if isinstance(seq, int) and not -_MAX_FLOAT_INT < seq < _MAX_FLOAT_INT:
            return Invalid("thresholds update 'seq' is out of range (a timestamp expected)")
        return cls(
            policy=data["policy"],
            threshold=float(threshold),
            versions={str(k): str(v) for k, v in versions.items()},
            seq=float(seq) if isinstance(seq, int | float) else 0.0,
            reason=str(data.get("reason") or ""),
            **_given(
                target_accuracy=_float_or_none(data.get("target_accuracy")),
                expected_accuracy=_float_or_none(data.get("expected_accuracy")),
                expected_escalation=_float_or_none(data.get("expected_escalation")),
                reviewer_accuracy=_float_or_none(data.get("reviewer_accuracy")),
                audit=_audit_counts(data.get("audit")),
                task=_str_or_none(data.get("task")) or None,
            ),
        )


def _audit_counts(value: Any) -> dict[str, int] | None:
    if not isinstance(value, dict) or not all(_is_int(value.get(n)) for n in ("agreed", "total")):
        return None
    return {"agreed": value["agreed"], "total": value["total"]}


Update = ModelUpdate | ThresholdUpdate


def parse_update(value: bytes | None, key: bytes | None = None) -> Update | Invalid:
    """A model-updates message: a juror version or a controller threshold."""
    data = _object(value)
    if isinstance(data, Invalid):
        return data
    if data.get("kind") == "thresholds":
        return ThresholdUpdate._from(data)
    return ModelUpdate._from(data)


# --- spend ---------------------------------------------------------------------------------


class SpendReport(Record):
    """One reviewer replica's spend per budget window, keyed by the replica (a compacted
    topic: the latest report of each replica is what counts)."""

    replica: str
    at: float
    windows: tuple[WindowReport, ...]

    @classmethod
    def of(cls, replica: str, reports: Sequence[WindowReport], at: float) -> SpendReport:
        return cls(replica=replica, at=round(at, 3), windows=tuple(reports))

    @property
    def key(self) -> bytes:
        return self.replica.encode("utf-8")

    @classmethod
    def parse(cls, value: bytes | None, key: bytes | None = None) -> SpendReport | Invalid:
        data = _object(value)
        if isinstance(data, Invalid):
            return Invalid(f"not a spend report: {data.reason}")
        try:
            replica = data["replica"]
            reports = tuple(
                WindowReport(float(w["length_s"]), int(w["index"]), float(w["used_usd"]))
                for w in data["windows"]
            )
        except (TypeError, KeyError, ValueError, OverflowError) as exc:
            return Invalid(f"not a spend report: {type(exc).__name__}: {exc}")
        if not isinstance(replica, str) or any(
            not math.isfinite(r.used_usd) or r.used_usd < 0 for r in reports
        ):
            return Invalid("not a spend report: bad replica or amount")
        at = _float_or_none(data.get("at"))
        return cls(replica=replica, at=0.0 if at is None else at, windows=reports)


__all__ = [
    "MAX_DEAD_LETTER_BYTES",
    "Consumed",
    "DeadLetter",
    "Feedback",
    "HardSample",
    "Invalid",
    "LabelRecord",
    "ModelUpdate",
    "Post",
    "ReviewCase",
    "SourceRef",
    "SpendReport",
    "ThresholdUpdate",
    "Update",
    "dumps",
    "parse_update",
]
