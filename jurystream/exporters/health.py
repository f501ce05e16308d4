"""Liveness and readiness that tell the truth about the role's event loop.

/metrics is answered by an HTTP thread, so a role whose event loop hangs (a blocking call, a
deadlock) would still look healthy there. Here the loop itself proves it runs: a heartbeat task
in the role's event loop refreshes ``beat``; /livez fails once no beat came for
``stale_after_s``. /readyz means "partitions assigned and consuming": the consuming loop reports
its assignment on every turn, and readiness fails when it has none or stopped reporting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

HEARTBEAT_S = 1.0


class Health:
    def __init__(self, stale_after_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._beat: float | None = None
        self._consumed: float | None = None
        self._assigned = 0

    def beat(self) -> None:
        self._beat = self._clock()

    def consuming(self, assigned: int) -> None:
        """One turn of the consuming loop, holding ``assigned`` partitions."""
        self._consumed = self._clock()
        self._assigned = assigned

    def live(self) -> tuple[bool, str]:
        if self._beat is None:
            return False, "starting: the event loop has not beaten yet"
        age = self._clock() - self._beat
        if age > self.stale_after_s:
            return False, f"event loop silent for {age:.1f}s (hung?)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        live, why = self.live()
        if not live:
            return False, why
        if self._consumed is None:
            return False, "not consuming yet (joining the consumer group)"
        age = self._clock() - self._consumed
        if age > self.stale_after_s:
            return False, f"consuming loop silent for {age:.1f}s"
        if self._assigned == 0:
            return False, "no partitions assigned (more replicas than partitions, or rebalancing)"
        return True, f"ok: {self._assigned} partitions"

    @contextlib.asynccontextmanager
    async def heartbeat(self) -> AsyncIterator[None]:
        """Beat from the running event loop while the block runs."""

        async def loop() -> None:
            while True:
                self.beat()
                await asyncio.sleep(HEARTBEAT_S)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def beating(health: Health, role: Awaitable[None]) -> None:
    """Run ``role`` with the heartbeat of ``health`` in the same event loop."""
    async with health.heartbeat():
        await role
