"""What the reviewer tiers report as they work, without knowing who listens.

The tiers (local, openai, oracle, simulated) belong to the model layer and also run where no
metrics are served: benches, tests, a notebook. So they report through this small protocol
instead of Prometheus objects; the reviewer role hands them its metrics (``ReviewerMetrics``
implements it) and everyone else gets ``NO_HOOKS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol, get_args

CallOutcome = Literal["ok", "retry", "invalid", "error"]
CALL_OUTCOMES: tuple[CallOutcome, ...] = get_args(CallOutcome)


class ReviewHooks(Protocol):
    def called(self, backend: str, outcome: CallOutcome) -> None:
        """One attempt at ``backend`` ended with ``outcome`` (a retried attempt counts too)."""

    def billed(self, backend: str, input_tokens: int, output_tokens: int, usd: float) -> None:
        """The tokens one attempt measured and what they cost (a failed attempt may bill)."""

    def budget(self, remaining_usd: Mapping[str, float], exhausted: bool) -> None:
        """USD left per budget window (hour, day) and whether cases wait for the next one."""


class NoHooks:
    """Reports nowhere: the tiers' default outside the reviewer role."""

    def called(self, backend: str, outcome: CallOutcome) -> None:
        pass

    def billed(self, backend: str, input_tokens: int, output_tokens: int, usd: float) -> None:
        pass

    def budget(self, remaining_usd: Mapping[str, float], exhausted: bool) -> None:
        pass


NO_HOOKS: ReviewHooks = NoHooks()
