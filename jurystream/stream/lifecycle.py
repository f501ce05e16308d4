"""Lifecycles: a role in the foreground until the operator (or Kubernetes) stops it, and the
services (broker, proxies, test servers) a ``with`` block starts and stops."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Self


def run_until_signalled(role: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Run ``role(stop)``; SIGTERM/SIGINT set ``stop`` so the role finishes its batch in hand.

    One place for what every plain-aiokafka role (reviewer, monitor, trainer) needs: a clean
    stop lets it commit what it finished instead of replaying it after a kill.
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
                loop.add_signal_handler(sig, stop.set)
        await role(stop)

    asyncio.run(main())
    return 0


class Service(ABC):
    """Something a ``with`` block starts and always stops: ``start()`` on entry, ``stop()`` on
    exit, also when the block raises (a leaked broker or server would outlive its test)."""

    @abstractmethod
    def start(self) -> Any:
        """Start it; a subclass may return what a caller needs (an address, itself)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop it and free what it holds; safe to call twice."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
