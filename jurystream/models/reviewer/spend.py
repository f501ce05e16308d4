"""Spend shared by reviewer replicas (pure): every replica's latest report, summed per window.

The budget is for the deployment, not the process: with N reviewer replicas (KEDA adds them as
lag grows, which it does exactly when the budget runs out) a per-process budget would allow N
times the limit, and a restarted process would start with a fresh one. So every replica
publishes its own windows (spent plus reserved, per window index) on the ``spend`` topic, keyed
by replica, and reads everyone's. A reservation fits when the sum over all replicas leaves room.

The windows are epoch-aligned (``budget.py``), so every replica agrees on which window a report
belongs to; a report of an earlier window counts for nothing. A replica that died keeps counting
in its window (its last report stays on the topic), so a restart does not reset the window, and
a restarted replica with the same id resumes its own spending from its last report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class WindowReport:
    """What one replica has used in one window: spent plus reserved by calls in flight."""

    length_s: float
    index: int
    used_usd: float


class Peers(Protocol):
    """What a budget needs from the shared ledger: the others' use, and a way to report ours."""

    def others(self, length_s: float, index: int) -> float: ...

    def mine(self) -> Sequence[WindowReport]: ...

    async def publish(self, reports: Sequence[WindowReport]) -> None: ...


class SpendLedger:
    """The latest report of every replica; ``me`` is this process's replica id."""

    def __init__(self, me: str) -> None:
        self.me = me
        self._latest: dict[str, list[WindowReport]] = {}

    def apply(self, replica: str, reports: Sequence[WindowReport]) -> None:
        """A record read from the topic (reports of one replica replace its earlier ones)."""
        self._latest[replica] = list(reports)

    def others(self, length_s: float, index: int) -> float:
        """USD every other replica has used in window ``index`` of windows ``length_s`` long."""
        return sum(
            r.used_usd
            for replica, reports in self._latest.items()
            if replica != self.me
            for r in reports
            if r.length_s == length_s and r.index == index
        )

    def mine(self) -> list[WindowReport]:
        """This replica's last report before a restart (empty for a new replica)."""
        return list(self._latest.get(self.me, ()))

    def replicas(self) -> Mapping[str, list[WindowReport]]:
        return dict(self._latest)
