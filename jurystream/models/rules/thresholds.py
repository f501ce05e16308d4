"""The threshold controller: hold a target accuracy of accepted labels, not a fixed threshold.

A fixed threshold is wrong twice over in a learning loop. Refined jurors are less
over-confident, so the same threshold escalates *more* as they improve (measured: 22% → 26%
after two rounds); and a jury that gets worse on a drifting stream keeps accepting at the old
threshold. The controller instead picks, after every accepted round, the lowest threshold whose
accepted labels still reach the target accuracy on held-out gold, so escalation falls exactly
as fast as the jurors earn it; the live audit raises the target when the stream is harder
than the gold set (``audit_gap``). A review budget caps escalation when the target would need
more reviews than the budget pays for.

Pure functions over an operating curve (threshold → escalation, accuracy of accepted labels),
which ``jurystream.models.training.evaluation.operating_curve`` measures for any voting policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jurystream.models.rules.audit import AuditEstimate

# Thresholds the controller considers: every policy's confidence lives in [0, 1]; a 0.01 grid
# is finer than what a few hundred gold labels can tell apart.
GRID = tuple(round(0.30 + 0.01 * i, 2) for i in range(70))  # 0.30 … 0.99
MIN_ACCEPTED = 30  # an accuracy measured on fewer accepted labels is noise


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    escalation: float  # share of posts escalated
    accepted: int  # posts accepted (labels the jury gives)
    accuracy: float  # accuracy of the accepted labels (NaN when none accepted)


@dataclass(frozen=True)
class ThresholdDecision:
    """The threshold to serve, what it is expected to give, and why it was chosen."""

    threshold: float
    target_accuracy: float
    expected_accuracy: float
    expected_escalation: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "target_accuracy": round(self.target_accuracy, 4),
            "expected_accuracy": round(self.expected_accuracy, 4),
            "expected_escalation": round(self.expected_escalation, 4),
            "reason": self.reason,
        }


def target_accuracy(explicit: float | None, reviewer_accuracy: float, margin: float) -> float:
    """The configured target, else the reviewer's measured accuracy minus a margin.

    Accepting a jury label is only worth it if it is about as likely right as the review it
    saves; the margin is the accuracy one is willing to trade for not paying that review.
    """
    if explicit is not None:
        return explicit
    return max(0.0, min(1.0, reviewer_accuracy - margin))


def audit_gap(
    curve: Sequence[OperatingPoint], current: float, audit: AuditEstimate | None, shrink: int = 50
) -> float:
    """How much worse the live stream's accepted labels are than the gold set predicts.

    The audit measures accuracy at the serving threshold on live posts; the curve predicts it
    from held-out gold. A positive gap (the stream is harder) raises the target by that much.
    Shrunk towards 0 by ``n / (n + shrink)`` so a handful of audits cannot swing the threshold.

    One-sided: audits that look *better* than the gold set never lower the target. They measure
    only the posts accepted at the serving threshold, and a lower threshold accepts exactly the
    less certain posts they never saw. Measured: letting them lower it, 30 audits at 100 %
    (corrected for a reviewer assumed 90 % right) took an oracle loop's target from 0.85 to
    0.79, its threshold to the 0.30 floor and escalation to 0 %, while the jury's accepted
    labels were 80 % right against gold (`bench loop`, BENCHMARKS.md).
    """
    if audit is None or audit.total == 0 or math.isnan(audit.accuracy):
        return 0.0
    point = nearest(curve, current)
    if point is None or math.isnan(point.accuracy):
        return 0.0
    return max(0.0, point.accuracy - audit.accuracy) * audit.total / (audit.total + shrink)


def nearest(curve: Sequence[OperatingPoint], threshold: float) -> OperatingPoint | None:
    return min(curve, key=lambda p: abs(p.threshold - threshold)) if curve else None


def choose_threshold(
    curve: Sequence[OperatingPoint],
    target: float,
    max_escalation: float | None = None,
    min_accepted: int = MIN_ACCEPTED,
) -> ThresholdDecision:
    """The least-escalating threshold that meets ``target``, within the review budget.

    - meets the target and the budget: the lowest-escalation such point;
    - the target needs more reviews than ``max_escalation``: the most accurate point inside the
      budget (the budget is a hard cap: reviews cost money);
    - nothing meets the target: the point with the highest accepted accuracy (inside the
      budget), so the jury accepts only what it is best at.
    """
    if not curve:
        raise ValueError("an empty operating curve: nothing was measured")
    measured = [p for p in curve if p.accepted >= min_accepted and not math.isnan(p.accuracy)]
    if not measured:
        # Too few labels to measure anything: escalate as much as allowed.
        within = [p for p in curve if max_escalation is None or p.escalation <= max_escalation]
        point = max(within or curve, key=lambda p: p.threshold)
        return _decision(point, target, "too few held-out labels to measure; most cautious")
    affordable = [p for p in measured if max_escalation is None or p.escalation <= max_escalation]
    meeting = [p for p in measured if p.accuracy >= target]
    if meeting:
        best = min(meeting, key=lambda p: (p.escalation, p.threshold))
        if max_escalation is None or best.escalation <= max_escalation:
            return _decision(best, target, f"meets target {target:.3f} at least escalation")
    if not affordable:
        point = min(measured, key=lambda p: p.escalation)
        return _decision(point, target, f"no threshold keeps escalation ≤ {max_escalation:.3f}")
    point = max(affordable, key=lambda p: (p.accuracy, -p.escalation))
    if meeting:
        reason = f"review budget caps escalation at {max_escalation:.3f}; target not reachable"
    else:
        reason = f"no threshold reaches target {target:.3f}; most accurate accepted labels"
    return _decision(point, target, reason)


def _decision(point: OperatingPoint, target: float, reason: str) -> ThresholdDecision:
    return ThresholdDecision(point.threshold, target, point.accuracy, point.escalation, reason)
