"""The records jurystream writes, one builder per output topic (schemas in the README).

Pure: they build the JSON values; the stream modules send them keyed by message id so that a
replay after a crash overwrites rather than duplicates downstream.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

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
    post: Post, decision: Decision, versions: Mapping[str, str], latency_ms: float
) -> dict[str, Any]:
    return label_record(
        post.id,
        decision.label,
        decision.confidence,
        "jury",
        [v.to_dict() for v in decision.votes],
        versions,
        latency_ms,
    )


def review_case(
    post: Post, decision: Decision, versions: Mapping[str, str], received_ms: float
) -> dict[str, Any]:
    """What the reviewer needs: the post, the jury's votes and guess, and why it escalated."""
    return {
        **post.to_dict(),
        "jury_label": decision.label,
        "jury_confidence": round(decision.confidence, 4),
        "votes": [v.to_dict() for v in decision.votes],
        "reason": decision.reason,
        "model_versions": dict(versions),
        "received_ms": received_ms,
    }


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
    return {
        "id": post_id,
        "error": error,
        "stage": stage,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "original_b64": base64.b64encode(original or b"").decode("ascii"),
    }


def dead_letter_key(post_id: str | None, topic: str, partition: int, offset: int) -> str:
    return post_id if post_id is not None else f"{topic}:{partition}:{offset}"
