"""The shared reviewer budget's pure parts: the ledger of replica reports and the windows."""

from __future__ import annotations

import pytest

from jurystream.models.reviewer.budget import Budget
from jurystream.models.reviewer.spend import SpendLedger, WindowReport
from jurystream.stream.records import Invalid, SpendReport


def shared(me: str, ledger_limit: float = 1.0) -> tuple[Budget, SpendLedger]:
    ledger = SpendLedger(me)
    budget = Budget.from_limits(per_hour_usd=ledger_limit, per_day_usd=None, hour_s=10.0)
    budget.others = ledger.others
    return budget, ledger


def test_replicas_share_one_limit() -> None:
    a, ledger_a = shared("a")
    b, ledger_b = shared("b")
    for _ in range(3):
        assert a.try_reserve(0.25, now=100.0) == 0.0
        a.settle(0.25, 0.25, now=100.0)
    ledger_b.apply("a", a.reports(100.0))  # b reads a's report from the topic
    assert b.try_reserve(0.25, now=101.0) == 0.0
    ledger_a.apply("b", b.reports(101.0))  # b's reservation, in flight, counts for a too
    wait = a.try_reserve(0.25, now=101.0)
    assert wait == pytest.approx(9.0)  # the next window starts at 110
    assert b.remaining(101.0) == [pytest.approx(0.0)]


def test_reports_of_an_earlier_window_count_for_nothing() -> None:
    budget, ledger = shared("b")
    ledger.apply("a", [WindowReport(10.0, 10, 1.0)])  # window [100, 110)
    assert budget.try_reserve(0.5, now=105.0) > 0
    assert budget.try_reserve(0.5, now=111.0) == 0.0
    ledger.apply("a", [WindowReport(3600.0, 0, 1.0)])  # another window length: not ours
    assert ledger.others(10.0, 11) == 0.0


def test_a_restart_does_not_reset_the_window() -> None:
    before, _ = shared("pod-1")
    assert before.try_reserve(0.5, now=100.0) == 0.0
    before.settle(0.5, 0.4, now=100.0)
    assert before.try_reserve(0.5, now=101.0) == 0.0  # in flight when the pod dies
    last = before.reports(101.0)
    # A new pod (new replica id): the dead one's report counts as another replica's.
    after, ledger = shared("pod-2")
    ledger.apply("pod-1", last)
    assert after.try_reserve(0.2, now=102.0) > 0
    # The same container restarted (same id): it resumes its own spending, reserved as spent.
    again, ledger = shared("pod-1")
    ledger.apply("pod-1", last)
    again.resume(ledger.mine(), now=102.0)
    assert again.windows[0].spent_usd == pytest.approx(0.9)
    assert again.try_reserve(0.2, now=102.0) > 0
    assert again.try_reserve(0.1, now=102.0) == 0.0


def test_records_round_trip_and_garbage_is_refused() -> None:
    reports = [WindowReport(3600.0, 7, 0.125), WindowReport(86400.0, 0, 2.5)]
    report = SpendReport.of("r1", reports, at=1.0)
    assert SpendReport.parse(report.to_bytes()) == report
    assert report.windows == tuple(reports)
    for bad in (b"{}", b"not json", b'{"replica": 1, "windows": []}', b"[1]"):
        assert isinstance(SpendReport.parse(bad), Invalid)
    nan = b'{"replica": "r", "windows": [{"length_s": 1, "index": 0, "used_usd": NaN}]}'
    assert isinstance(SpendReport.parse(nan), Invalid)
