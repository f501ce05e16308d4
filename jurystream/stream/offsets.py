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
        self._last_read: dict[P, int] = {}  # a partition is read in offset order
        self._next: dict[P, int] = {}  # committable position per partition
        self._committed: dict[P, int] = {}

    def __len__(self) -> int:
        """Messages read and not finished."""
        return sum(len(offsets) for offsets in self._pending.values())

    def read(self, partition: P, offset: int) -> None:
        self._pending.setdefault(partition, set()).add(offset)
        self._last_read[partition] = offset
        if partition not in self._next:  # where the consumer started: already committed
            self._next[partition] = self._committed[partition] = offset

    def finish(self, partition: P, offset: int) -> None:
        """``offset`` is done. A partition forgotten meanwhile (revoked in a rebalance while its
        batch was in hand) stays forgotten: its new owner replays what was not committed."""
        pending = self._pending.get(partition)
        if pending is None:
            return
        pending.discard(offset)
        # Resume at the first unfinished message; offsets may have gaps (compaction,
        # transaction markers), so it is that offset, not the last finished one + 1.
        self._next[partition] = min(pending) if pending else self._last_read[partition] + 1

    def committable(self) -> dict[P, int]:
        """Positions that moved since the last ``committed`` call."""
        return {p: n for p, n in self._next.items() if self._committed.get(p) != n}

    def position(self, partition: P) -> int | None:
        """The committed position of a partition read since it was assigned, else None."""
        return self._committed.get(partition)

    def committed(self, positions: dict[P, int]) -> None:
        self._committed.update(positions)

    def forget(self, partitions: Iterable[P]) -> None:
        """Drop partitions this process no longer owns (after a rebalance)."""
        for partition in partitions:
            for table in (self._pending, self._last_read, self._next, self._committed):
                table.pop(partition, None)
