"""The records jurystream writes, one builder per output topic (schemas in the README).

Pure: they build the JSON values; the stream modules send them keyed by message id so that a
replay after a crash overwrites rather than duplicates downstream.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

from jurystream.models.voting import Decision
from jurystream.stream.validation import Post


def dumps(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def label_record(
    post_id: str,
    label: str,
    confidence: float,
    source: str,
    votes: list[dict[str, Any]],
    model_versions: Mapping[str, str],
    latency_ms: float,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": post_id,
        "label": label,
        "confidence": round(float(confidence), 4),
        "source": source,
        "votes": votes,
        "model_versions": dict(model_versions),
        "latency_ms": round(float(latency_ms), 2),
        **extra,
    }


def jury_label(
    post: Post,
    decision: Decision,
    versions: Mapping[str, str],
    latency_ms: float,
    worker: str,
    threshold: float,
    *,
    audit: bool = False,
    unreviewed: bool = False,
) -> dict[str, Any]:
    """The jury's label. ``audit``: also sent to review to measure it (the label stands);
    ``unreviewed``: escalated, but the review budget did not cover it (the jury's best guess)."""
    flags: dict[str, Any] = {"audit": True} if audit else {}
    if unreviewed:
        flags.update(unreviewed=True, reason=decision.reason)
    return label_record(
        post.id,
        decision.label,
        decision.confidence,
        "jury",
        [v.to_dict() for v in decision.votes],
        versions,
        latency_ms,
        worker=worker,
        threshold=threshold,
        **flags,
    )


def review_case(
    post: Post,
    decision: Decision,
    versions: Mapping[str, str],
    received_ms: float,
    worker: str,
    threshold: float,
    kind: str = "escalation",
) -> dict[str, Any]:
    """What the reviewer needs: the post, the jury's votes and guess, and why it is reviewed
    (``kind``: an ``escalation`` the reviewer decides, or an ``audit`` it only measures)."""
    return {
        **post.to_dict(),
        "kind": kind,
        "jury_label": decision.label,
        "jury_confidence": round(decision.confidence, 4),
        "votes": [v.to_dict() for v in decision.votes],
        "reason": decision.reason if kind == "escalation" else "audit sample",
        "threshold": threshold,
        "model_versions": dict(versions),
        "received_ms": received_ms,
        "worker": worker,
    }


# Dead letters must fit in one Kafka message (1 MB by default) after base64: keep at most this
# much of the original; its size, checksum and source offset find the rest.
MAX_DEAD_LETTER_BYTES = 256 * 1024


def dead_letter(
    original: bytes | None,
    error: str,
    stage: str,
    topic: str,
    partition: int,
    offset: int,
    post_id: str | None = None,
) -> dict[str, Any]:
    """The original bytes (base64), the error and where it failed: enough to replay by hand."""
    raw = original or b""
    kept = raw[:MAX_DEAD_LETTER_BYTES]
    return {
        "id": post_id,
        "error": error,
        "stage": stage,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "original_b64": base64.b64encode(kept).decode("ascii"),
        "original_size": len(raw),
        "original_sha256": hashlib.sha256(raw).hexdigest(),
        "truncated": len(kept) < len(raw),
    }


def dead_letter_key(post_id: str | None, topic: str, partition: int, offset: int) -> str:
    return post_id if post_id is not None else f"{topic}:{partition}:{offset}"


class Consumed(Protocol):
    """What faust's and aiokafka's consumed messages both carry."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


def dead_letter_message(
    msg: Consumed, error: str, stage: str, post_id: str | None = None
) -> tuple[bytes, bytes]:
    """(key, value) of the dead letter for a consumed message, ready to send."""
    record = dead_letter(msg.value, error, stage, msg.topic, msg.partition, msg.offset, post_id)
    key = dead_letter_key(post_id, msg.topic, msg.partition, msg.offset)
    return key.encode("utf-8"), dumps(record)
