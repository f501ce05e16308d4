"""OffsetTracker: the committed position never passes a case whose outputs are not written."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jurystream.stream.offsets import OffsetTracker


@given(st.data(), st.lists(st.integers(1, 3), min_size=1, max_size=40))
def test_position_is_the_end_of_the_finished_prefix_whatever_the_order(
    data: st.DataObject, gaps: list[int]
) -> None:
    offsets = [100 + sum(gaps[: i + 1]) for i in range(len(gaps))]  # increasing, with gaps
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in offsets:
        tracker.read("p", offset)
    order = data.draw(st.permutations(offsets))
    finished: set[int] = set()
    for offset in order:
        tracker.finish("p", offset)
        finished.add(offset)
        moved = tracker.committable()
        if moved:
            tracker.committed(moved)
            position = moved["p"]
            # Everything below the position is finished; the first unfinished one is not passed.
            assert all(o in finished for o in offsets if o < position)
            unfinished = [o for o in offsets if o not in finished]
            assert not unfinished or position <= min(unfinished)
        assert len(tracker) == len(offsets) - len(finished)
    assert tracker.committable() == {} and len(tracker) == 0
    assert position == offsets[-1] + 1


def test_a_parked_case_holds_its_partition_only() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in (0, 1, 2):
        tracker.read("a", offset)
    tracker.read("b", 7)
    assert tracker.committable() == {}  # the starting positions count as committed
    tracker.finish("a", 1)
    tracker.finish("a", 2)
    tracker.finish("b", 7)
    assert tracker.committable() == {"b": 8}  # "a" waits for offset 0
    tracker.committed({"b": 8})
    tracker.finish("a", 0)
    assert tracker.committable() == {"a": 3}
    tracker.forget(["a"])
    tracker.read("a", 3)  # owned again after a rebalance: starts where the consumer resumes
    assert tracker.committable() == {} and len(tracker) == 1


def test_a_batch_finishing_after_its_partition_was_revoked_commits_nothing_there() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.read("a", 4)
    tracker.read("b", 9)
    tracker.forget(["a"])  # revoked while the batch was in hand
    tracker.finish("a", 4)
    tracker.finish("b", 9)
    assert tracker.committable() == {"b": 10}
