"""Audit sampling: measuring the jury's accepted labels without waiting for gold feedback.

A small, random share of the posts the jury labels confidently also goes to the reviewer. The
jury's label stands; the reviewer's answer only measures it. Because the sample is random
among accepted labels, the share the reviewer agrees with is an unbiased estimate of the
accuracy of accepted labels (up to the reviewer's own errors, which ``corrected_accuracy``
takes out), and the sampled posts are representative training examples, unlike the hard
cases, which are all near the decision boundary.

Pure functions: the worker samples with ``is_audited``, the monitor and the trainer estimate
with ``estimate``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

Z_95 = 1.959964  # two-sided 95% normal quantile


def is_audited(post_id: str, rate: float) -> bool:
    """Whether a confidently labeled post is sampled for audit.

    Decided by a hash of the id, not a random draw: a replayed post gets the same answer, so a
    worker restart neither audits a post twice nor skips one, and every worker agrees.
    """
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(b"audit:" + post_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def wilson_interval(successes: float, total: float, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion: honest at small counts and near 0 or 1, where
    the normal approximation gives intervals outside [0, 1] or of zero width."""
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # min/max with p: at p = 0 or 1 rounding would otherwise leave p a hair outside its bounds
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def corrected_accuracy(agreement: float, reviewer_accuracy: float, n_labels: int) -> float:
    """The jury's accuracy from its agreement with an imperfect reviewer.

    If the reviewer is right with probability r and spreads its errors evenly over the other
    K−1 labels, then agreement a = p·r + (1−p)·(1−r)/(K−1) for jury accuracy p; solved for p
    and clipped to [0, 1]. With r = 1 this is the agreement itself.
    """
    if n_labels < 2:
        raise ValueError("a label set has at least two labels")
    chance = (1.0 - reviewer_accuracy) / (n_labels - 1)
    if reviewer_accuracy <= chance:
        return agreement  # a reviewer no better than chance says nothing; report raw agreement
    return min(1.0, max(0.0, (agreement - chance) / (reviewer_accuracy - chance)))


@dataclass(frozen=True)
class AuditEstimate:
    """Accuracy of accepted labels as the audit measures it, with a 95% interval."""

    agreed: int
    total: int
    accuracy: float
    low: float
    high: float

    def covers(self, value: float) -> bool:
        return self.low <= value <= self.high


def estimate(
    agreed: int, total: int, reviewer_accuracy: float = 1.0, n_labels: int = 2
) -> AuditEstimate:
    """The audit's estimate; with an imperfect reviewer, point and bounds are corrected."""
    if not 0 <= agreed <= total:
        raise ValueError(f"agreed={agreed} must be within 0..total={total}")
    if total == 0:
        return AuditEstimate(0, 0, math.nan, 0.0, 1.0)
    low, high = wilson_interval(agreed, total)

    def fix(a: float) -> float:
        return corrected_accuracy(a, reviewer_accuracy, n_labels)

    return AuditEstimate(agreed, total, fix(agreed / total), fix(low), fix(high))


def estimates_by_label(
    outcomes: Iterable[tuple[str, str]], reviewer_accuracy: float = 1.0, n_labels: int = 2
) -> dict[str, AuditEstimate]:
    """Per jury label and ``"all"``: how often the reviewer agreed with the jury's label.

    ``outcomes`` are (jury label, reviewer label) pairs; per label this is the precision of
    the jury's accepted labels of that class.
    """
    counts: dict[str, list[int]] = {}
    for jury_label, reviewer_label in outcomes:
        for key in ("all", jury_label):
            agreed_total = counts.setdefault(key, [0, 0])
            agreed_total[0] += jury_label == reviewer_label
            agreed_total[1] += 1
    return {
        key: estimate(a, t, reviewer_accuracy, n_labels)
        for key, (a, t) in sorted(counts.items(), key=lambda kv: (kv[0] != "all", kv[0]))
    }
