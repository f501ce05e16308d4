"""Micro-batches: one post on a quiet stream, full batches under load, no timer in between."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from jurystream.stream.batching import ready_batches


def _batches(
    ready: list[bool], max_size: int, max_wait_s: float = 1.0, clock: Callable[[], float] = float
) -> list[list[int]]:
    """Batches of posts 0..n-1; ``ready[i]``: more posts were already fetched when i was taken."""
    taken: list[int] = []

    async def posts() -> AsyncIterator[int]:
        for i in range(len(ready)):
            await asyncio.sleep(0)
            taken.append(i)
            yield i

    async def run() -> list[list[int]]:
        more = lambda: ready[taken[-1]]  # noqa: E731
        return [b async for b in ready_batches(posts(), more, max_size, max_wait_s, clock)]

    return asyncio.run(run())


def test_a_quiet_stream_hands_over_every_post_at_once() -> None:
    assert _batches([False] * 4, max_size=32) == [[0], [1], [2], [3]]


def test_posts_that_piled_up_go_in_one_batch_capped_by_size() -> None:
    # 0..6 were fetched together, then a quiet moment, then 7.
    ready = [True] * 6 + [False, False]
    assert _batches(ready, max_size=4) == [[0, 1, 2, 3], [4, 5, 6], [7]]


def test_a_queue_that_keeps_refilling_is_cut_by_time() -> None:
    ticks = iter(range(10_000))
    # Every look at the clock is one tick: a batch's first post reads it twice, the next once.
    batches = _batches([True] * 9, max_size=100, max_wait_s=2.0, clock=lambda: float(next(ticks)))
    assert batches == [[0, 1], [2, 3], [4, 5], [6, 7]]
