"""The trainer's metrics: fine-tuning rounds, the controller's threshold, dead letters."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry

from jurystream.exporters.metrics import families as f
from jurystream.exporters.metrics.base import RoleMetrics
from jurystream.exporters.metrics.families import DEFAULT_TASK

ROUND_OUTCOMES = ("promoted", "rejected", "failed")


class TrainerMetrics(RoleMetrics):
    role = "trainer"
    outcomes = ("dead_lettered",)

    def __init__(
        self, registry: CollectorRegistry | None = None, tasks: Iterable[str] = (DEFAULT_TASK,)
    ) -> None:
        super().__init__(registry, tasks)
        r = self.registry
        self._threshold = f.JURY_THRESHOLD.create(r)
        self._target = f.TARGET_ACCURACY.create(r)
        self._runs = f.TRAINING_RUNS.create(r)
        self._duration = f.TRAINING_DURATION.create(r)

    def declare_jurors(self, jurors: Iterable[str]) -> None:
        """Create the per-juror round series at zero when the trainer starts.

        A trainer that has not finished a round yet then reads "0 rounds" on the dashboard
        instead of "no data", and increase() counts the first round.
        """
        for juror in jurors:
            for outcome in ROUND_OUTCOMES:
                self._runs.labels(juror, outcome)

    def round_finished(self, juror: str, outcome: str, seconds: float) -> None:
        """One fine-tuning round of ``juror``: promoted, rejected (by the gate) or failed."""
        if outcome not in ROUND_OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {ROUND_OUTCOMES}")
        self._runs.labels(juror, outcome).inc()
        self._duration.observe(seconds)

    def threshold_chosen(
        self, threshold: float, target_accuracy: float, task: str = DEFAULT_TASK
    ) -> None:
        """The controller chose ``threshold`` for ``task`` to hold ``target_accuracy`` of
        accepted labels."""
        self._threshold.labels(task).set(threshold)
        self.target_accuracy(target_accuracy, task)

    def target_accuracy(self, target: float, task: str = DEFAULT_TASK) -> None:
        """The accuracy of accepted labels ``task``'s controller holds."""
        self._target.labels(task).set(target)

    def dead_lettered(self) -> None:
        """A record the trainer cannot use went to dead-letters."""
        self._count("dead_lettered")
