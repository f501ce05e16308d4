"""The monitor's metrics: the labels ⋈ feedback join, rolling quality, audits, drift.

Quality, audits and drift are per task (``task=DEFAULT_TASK`` in a single-task deployment);
what the monitor drops and the announced versions are about records and jurors, not tasks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Gauge

from jurystream.exporters.metrics import families as f
from jurystream.exporters.metrics.base import RoleMetrics
from jurystream.exporters.metrics.families import DEFAULT_TASK
from jurystream.models.rules.audit import AuditEstimate

# What the monitor may drop, per input: created at zero so "nothing dropped" reads 0.
DROPS = (
    ("labels", "invalid"),
    ("labels", "expired"),
    ("feedback", "invalid"),
    ("feedback", "expired"),
    ("hard_samples", "invalid"),
)


class MonitorMetrics(RoleMetrics):
    role = "monitor"

    def __init__(
        self, registry: CollectorRegistry | None = None, tasks: Iterable[str] = (DEFAULT_TASK,)
    ) -> None:
        super().__init__(registry, tasks)
        r = self.registry
        self._feedback = f.FEEDBACK.create(r)
        self._juror_feedback = f.JUROR_FEEDBACK.create(r)
        self._unmatched = f.FEEDBACK_UNMATCHED.create(r)
        self._source_gauges = (
            f.ONLINE_ACCURACY.create(r),
            f.ONLINE_MACRO_F1.create(r),
            f.ONLINE_WINDOW.create(r),
        )
        self._juror_gauges = (
            f.JUROR_ACCURACY.create(r),
            f.JUROR_MACRO_F1.create(r),
            f.JUROR_WINDOW.create(r),
        )
        self._audit_accuracy = f.AUDIT_ACCURACY.create(r)
        self._audit_window = f.AUDIT_WINDOW.create(r)
        self._drift = f.LABEL_DRIFT.create(r)
        self._drift_window = f.DRIFT_WINDOW.create(r)
        self._updates = f.MODEL_UPDATES.create(r)
        for topic, reason in DROPS:
            self._unmatched.labels(topic, reason)

    # --- inputs ---

    def record_invalid(self, topic: str) -> None:
        """A record of ``topic`` (labels, feedback, hard_samples) could not be used."""
        self._unmatched.labels(topic, "invalid").inc()

    def join_expired(self, topic: str) -> None:
        """A record of ``topic`` left the join before its partner arrived (capacity)."""
        self._unmatched.labels(topic, "expired").inc()

    def juror_seen(self, juror: str) -> None:
        """A label carries ``juror``'s vote: its update count exists (at 0 until announced)."""
        self._updates.labels(juror)

    def model_announced(self, juror: str) -> None:
        """A new version of ``juror`` was announced on model-updates."""
        self._updates.labels(juror).inc()

    def judged(self, source: str, correct: bool, task: str = DEFAULT_TASK) -> None:
        """A label from ``source`` for ``task`` met its gold label."""
        self._feedback.labels(task, source, "correct" if correct else "wrong").inc()

    def juror_judged(self, juror: str, correct: bool, task: str = DEFAULT_TASK) -> None:
        """``juror``'s vote on ``task`` met its gold label."""
        self._juror_feedback.labels(task, juror, "correct" if correct else "wrong").inc()

    # --- rolling figures, published on a timer ---

    def source_quality(
        self,
        source: str,
        accuracy: float,
        macro_f1: float,
        samples: int,
        task: str = DEFAULT_TASK,
    ) -> None:
        """The rolling window of one label source (jury, reviewer, ...) on ``task``."""
        _publish(self._source_gauges, (task, source), accuracy, macro_f1, samples)

    def juror_quality(
        self,
        juror: str,
        accuracy: float,
        macro_f1: float,
        samples: int,
        task: str = DEFAULT_TASK,
    ) -> None:
        """The rolling window of one juror's votes on ``task``."""
        _publish(self._juror_gauges, (task, juror), accuracy, macro_f1, samples)

    def audit_estimates(
        self, estimates: Mapping[str, AuditEstimate], task: str = DEFAULT_TASK
    ) -> None:
        """The audit's estimates per label of ``task``; a label with no audit yet has no
        accuracy series."""
        for label, est in estimates.items():
            if est.total:
                for bound, value in (
                    ("estimate", est.accuracy),
                    ("low", est.low),
                    ("high", est.high),
                ):
                    self._audit_accuracy.labels(task, label, bound).set(value)
            self._audit_window.labels(task, label).set(est.total)

    def drift_window(self, samples: int, task: str = DEFAULT_TASK) -> None:
        """Labels in ``task``'s drift window now."""
        self._drift_window.labels(task).set(samples)

    def label_drift(self, reference: str, psi: float, task: str = DEFAULT_TASK) -> None:
        """PSI of ``task``'s full drift window against ``reference`` (training, first_window)."""
        self._drift.labels(task, reference).set(psi)


def _publish(
    gauges: tuple[Gauge, Gauge, Gauge],
    key: tuple[str, str],
    accuracy: float,
    macro_f1: float,
    samples: int,
) -> None:
    """Set one window's gauges; an empty window (NaN) stays unpublished rather than reading 0."""
    if math.isnan(accuracy) or math.isnan(macro_f1):
        return
    for gauge, value in zip(gauges, (accuracy, macro_f1, samples), strict=True):
        gauge.labels(*key).set(value)
