"""Commit positions when messages finish out of order.

The reviewer answers cases concurrently, and a case may wait minutes (an outage, a budget) while
later ones are answered. Kafka commits one position per partition, so the position may only pass
a message once every message before it is done: per partition, the offset after the longest
finished prefix. Pure bookkeeping, no I/O, so it is tested without a broker.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)  # a partition (aiokafka's TopicPartition in the reviewer)


class OffsetTracker(Generic[P]):
    def __init__(self) -> None:
        self._pending: dict[P, set[int]] = {}  # read, not finished yet
        self._done: dict[P, set[int]] = {}  # finished, behind an unfinished one
        self._next: dict[P, int] = {}  # committable position per partition
        self._committed: dict[P, int] = {}

    def __len__(self) -> int:
        """Messages read and not finished."""
        return sum(len(offsets) for offsets in self._pending.values())

    def read(self, partition: P, offset: int) -> None:
        self._pending.setdefault(partition, set()).add(offset)
        self._done.setdefault(partition, set())
        if partition not in self._next:  # where the consumer started: already committed
            self._next[partition] = self._committed[partition] = offset

    def finish(self, partition: P, offset: int) -> None:
        self._pending[partition].discard(offset)
        self._done[partition].add(offset)
        pending = self._pending[partition]
        done = self._done[partition]
        position = self._next[partition]
        # Offsets may have gaps (compaction, transaction markers): pass every finished offset
        # below the first unfinished one.
        first_pending = min(pending) if pending else None
        for finished in sorted(done):
            if first_pending is not None and finished > first_pending:
                break
            position = max(position, finished + 1)
            done.discard(finished)
        self._next[partition] = position

    def committable(self) -> dict[P, int]:
        """Positions that moved since the last ``committed`` call."""
        return {p: n for p, n in self._next.items() if self._committed.get(p) != n}

    def committed(self, positions: dict[P, int]) -> None:
        self._committed.update(positions)

    def forget(self, partitions: Iterable[P]) -> None:
        """Drop partitions this process no longer owns (after a rebalance)."""
        for partition in partitions:
            for table in (self._pending, self._done, self._next, self._committed):
                table.pop(partition, None)
