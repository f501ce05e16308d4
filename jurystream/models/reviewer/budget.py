"""Spending windows (pure): per-hour and per-day budgets in USD.

Windows are fixed and aligned to the epoch (an hour window resets on the hour, a day window at
00:00 UTC); their lengths are settings, so tests and simulations can use seconds. A call first
*reserves* a conservative estimate of its cost and then *settles* with the real cost from the
response's usage, so concurrent calls cannot together run past the limit. When a reservation
does not fit, the caller waits for the next window: cases wait, they are never dropped.

With ``peers`` (``spend.py``), the limit holds for all reviewer replicas together: what the
other replicas have used in the same window counts against it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from jurystream.models.reviewer.spend import WindowReport

# USD the other replicas have used in a window: (window length, window index) -> USD.
Others = Callable[[float, int], float]


@dataclass(slots=True)
class Window:
    length_s: float
    limit_usd: float
    index: int = -1
    spent_usd: float = 0.0
    reserved_usd: float = 0.0

    def roll(self, now: float) -> None:
        index = math.floor(now / self.length_s)
        if index != self.index:
            self.index = index
            self.spent_usd = 0.0
            # Reservations of calls in flight carry over: their cost lands in the new window.

    def ends_at(self) -> float:
        return (self.index + 1) * self.length_s

    def fits(self, amount: float, others: float = 0.0) -> bool:
        used = self.spent_usd + self.reserved_usd + others
        # A call bigger than the whole budget still runs alone in a fresh window; otherwise its
        # case would wait forever.
        return used + amount <= self.limit_usd or used == 0.0

    def remaining(self, others: float = 0.0) -> float:
        return self.limit_usd - self.spent_usd - self.reserved_usd - others

    def report(self) -> WindowReport:
        return WindowReport(self.length_s, self.index, self.spent_usd + self.reserved_usd)


@dataclass(slots=True)
class Budget:
    windows: list[Window] = field(default_factory=list)
    others: Others | None = None  # the other replicas' use; None: this process alone

    @classmethod
    def from_limits(
        cls,
        per_hour_usd: float | None,
        per_day_usd: float | None,
        hour_s: float = 3600.0,
        day_s: float = 86400.0,
    ) -> Budget:
        windows = [
            Window(length, limit)
            for length, limit in ((hour_s, per_hour_usd), (day_s, per_day_usd))
            if limit is not None
        ]
        return cls(windows)

    def used_by_others(self, window: Window) -> float:
        return self.others(window.length_s, window.index) if self.others is not None else 0.0

    def resume(self, reports: Sequence[WindowReport], now: float) -> None:
        """Take over this replica's own last reports (after a restart): what it had reserved
        when it stopped counts as spent, since those calls may have been paid."""
        for window in self.windows:
            window.roll(now)
            for r in reports:
                if r.length_s == window.length_s and r.index == window.index:
                    window.spent_usd = max(window.spent_usd, r.used_usd)

    def reports(self, now: float) -> list[WindowReport]:
        for window in self.windows:
            window.roll(now)
        return [w.report() for w in self.windows]

    def remaining(self, now: float) -> list[float]:
        for window in self.windows:
            window.roll(now)
        return [w.remaining(self.used_by_others(w)) for w in self.windows]

    def try_reserve(self, amount: float, now: float) -> float:
        """Reserve ``amount`` and return 0, or reserve nothing and return seconds to wait."""
        for window in self.windows:
            window.roll(now)
        blocked = [w for w in self.windows if not w.fits(amount, self.used_by_others(w))]
        if blocked:
            return max(w.ends_at() for w in blocked) - now
        for window in self.windows:
            window.reserved_usd += amount
        return 0.0

    def settle(self, reserved: float, actual: float, now: float) -> None:
        """Replace a reservation by the call's real cost (0 for a call that failed unpaid)."""
        for window in self.windows:
            window.roll(now)
            window.reserved_usd = max(0.0, window.reserved_usd - reserved)
            window.spent_usd += actual

    def spent(self, now: float) -> list[float]:
        for window in self.windows:
            window.roll(now)
        return [w.spent_usd for w in self.windows]
