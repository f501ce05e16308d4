"""The backend interface and the outcomes every reviewer tier returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class CaseError(ValueError):
    """A review-topic record that is not a case (it goes to dead-letters, not to a reviewer)."""


@dataclass(frozen=True, slots=True)
class JuryVote:
    juror: str
    label: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Case:
    """One escalated post as the worker wrote it to the review topic (``records.review_case``)."""

    id: str
    text: str
    votes: tuple[JuryVote, ...] = ()
    jury_label: str | None = None
    jury_confidence: float | None = None
    reason: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    received_ms: float | None = None
    model_versions: Mapping[str, str] = field(default_factory=dict)
    # "escalation": the reviewer decides the label; "audit": the jury's label stands and the
    # review measures it (no label is written).
    kind: str = "escalation"
    threshold: float | None = None

    @classmethod
    def from_record(cls, data: Any) -> Case:
        """Validate a decoded review record; raises CaseError with a reason a person can act on."""
        if not isinstance(data, dict):
            raise CaseError(f"review record is a JSON {type(data).__name__}, not an object")
        post_id, text = data.get("id"), data.get("text")
        if not isinstance(post_id, str) or not post_id:
            raise CaseError("review record has no string 'id'")
        if not isinstance(text, str) or not text.strip():
            raise CaseError("review record has no non-empty string 'text'")
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            raise CaseError("review record field 'meta' must be an object")
        raw_votes = data.get("votes") or []
        if not isinstance(raw_votes, list):
            raise CaseError("review record field 'votes' must be a list")
        votes = []
        for raw in raw_votes:
            try:
                votes.append(
                    JuryVote(str(raw["juror"]), str(raw["label"]), float(raw["confidence"]))
                )
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                raise CaseError(f"review record has a malformed vote {raw!r}") from exc
        versions = data.get("model_versions") or {}
        if not isinstance(versions, dict):
            raise CaseError("review record field 'model_versions' must be an object")
        jury_conf = data.get("jury_confidence")
        received = data.get("received_ms")
        kind = data.get("kind", "escalation")
        if kind not in ("escalation", "audit"):
            raise CaseError(f"review record kind {kind!r} is not 'escalation' or 'audit'")
        if kind == "audit" and not isinstance(data.get("jury_label"), str):
            raise CaseError("an audit case needs the jury's label it measures ('jury_label')")
        threshold = data.get("threshold")
        return cls(
            id=post_id,
            text=text,
            votes=tuple(votes),
            jury_label=data.get("jury_label") if isinstance(data.get("jury_label"), str) else None,
            jury_confidence=_float_or_none(jury_conf),
            reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
            meta=meta,
            received_ms=_float_or_none(received),
            model_versions={str(k): str(v) for k, v in versions.items()},
            kind=kind,
            threshold=float(threshold) if isinstance(threshold, int | float) else None,
        )

    def votes_dicts(self) -> list[dict[str, Any]]:
        return [
            {"juror": v.juror, "label": v.label, "confidence": round(v.confidence, 4)}
            for v in self.votes
        ]


def _float_or_none(value: Any) -> float | None:
    """A number as a float; anything else (or an integer beyond a float's range) as None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decided label. ``source`` names who decided, e.g. ``reviewer:openai:gpt-4o-mini``."""

    label: str
    confidence: float
    source: str
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Forward:
    """A tier that is not sure enough passes the case to the next, more expensive tier."""

    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """Nothing decided. ``permanent`` failures (e.g. the oracle has no gold label for the case)
    can never succeed and are dead-lettered; the others are parked and asked again later."""

    source: str
    reason: str
    permanent: bool = False


Outcome = Verdict | Forward | Failure


@runtime_checkable
class Backend(Protocol):
    """One tier of the chain. ``name`` is what the label's ``source`` reports."""

    name: str

    async def review(self, case: Case) -> Outcome: ...
