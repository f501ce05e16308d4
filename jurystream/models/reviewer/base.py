"""The backend interface and the outcomes every reviewer tier returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # an annotation only: config imports this package, numpy is not needed
    from jurystream.models.rules.voting import Vote


@dataclass(frozen=True, slots=True)
class Case:
    """What a reviewer tier is asked about: the post and the jury's votes on it. The stream
    builds it from a review record (``stream.records.ReviewCase.case``); ``meta`` may carry
    the gold label the oracle tier answers with."""

    id: str
    text: str
    votes: tuple[Vote, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


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
