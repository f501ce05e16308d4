"""Micro-batches that never wait for a quiet stream.

faust's ``take_events(n, within)`` hands over a batch when it holds ``n`` events or when its
``within`` timer fires, so on a quiet stream every post waits for the timer: with 50 ms, a post
at 25 % load waited 25 ms on average and up to 50 ms before scoring even began. Here a batch is
whatever is already fetched when the worker is free: one post on a quiet stream, up to
``max_size`` under load, when posts pile up while the previous batch is scored (the batch size
follows the load by itself). ``max_wait_s`` only cuts a batch whose queue keeps refilling.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")


async def ready_batches(
    events: AsyncIterable[T],
    more_ready: Callable[[], bool],
    max_size: int,
    max_wait_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[list[T]]:
    """Batches of ``events``: each ends when ``more_ready()`` says nothing else is fetched, when
    it holds ``max_size`` events, or ``max_wait_s`` after its first event."""
    batch: list[T] = []
    started = 0.0
    async for event in events:
        if not batch:
            started = clock()
        batch.append(event)
        if len(batch) >= max_size or not more_ready() or clock() - started >= max_wait_s:
            yield batch
            batch = []
