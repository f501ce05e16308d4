"""The worker's metrics: messages routed, stage latencies, votes, served versions and swaps.

Messages and latencies are counted per post; what the jury decides (votes, labels, escalations,
thresholds) per task, with ``task=DEFAULT_TASK`` in a single-task deployment.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from prometheus_client import CollectorRegistry

from jurystream.exporters.metrics import families as f
from jurystream.exporters.metrics.base import RoleMetrics
from jurystream.exporters.metrics.families import DEFAULT_TASK

SWAP_OUTCOMES = ("swapped", "refused")
TASK_OUTCOMES = ("accepted", "escalated", "unreviewed")


class WorkerMetrics(RoleMetrics):
    role = "worker"
    outcomes = ("labeled", "escalated", "audited", "unreviewed", "dead_lettered")

    def __init__(
        self, registry: CollectorRegistry | None = None, tasks: Iterable[str] = (DEFAULT_TASK,)
    ) -> None:
        super().__init__(registry, tasks)
        r = self.registry
        self._latency = f.STAGE_LATENCY.create(r)
        self._batch_size = f.BATCH_SIZE.create(r)
        self._votes = f.JUROR_VOTES.create(r)
        self._agreement = f.JUROR_AGREEMENT.create(r)
        self._version = f.MODEL_VERSION.create(r)
        self._swaps = f.MODEL_SWAPS.create(r)
        self._threshold = f.JURY_THRESHOLD.create(r)
        self._labels = f.LABELS_OUT.create(r)
        self._decisions = f.TASK_DECISIONS.create(r)
        for task in self.tasks:  # per-task escalation shares read 0, not "no data"
            for outcome in TASK_OUTCOMES:
                self._decisions.labels(task, outcome)

    # --- a batch, in the order it happens ---

    def batch_received(self, size: int) -> None:
        """A micro-batch of ``size`` messages (valid or not) reached the worker."""
        self._batch_size.observe(size)

    def waited_for_batch(self, seconds: float) -> None:
        """One post's wait from its timestamp until its batch started (fetch + batching)."""
        self._latency.labels("batch_wait").observe(seconds)

    def scored(self, seconds: float) -> None:
        """The jury scored a batch in ``seconds``."""
        self._latency.labels("inference").observe(seconds)

    def voted(self, juror: str, label: str, agreed: bool, task: str = DEFAULT_TASK) -> None:
        """``juror`` voted ``label`` on ``task``; ``agreed``: the task's final label is the
        same."""
        self._votes.labels(task, juror, label).inc()
        if agreed:
            self._agreement.labels(task, juror).inc()

    def sent_to_review(
        self, kind: str, asked: Iterable[str] = (DEFAULT_TASK,), settled: Iterable[str] = ()
    ) -> None:
        """A post went to the review topic as an ``escalation`` or an ``audit``. An
        escalation asks the reviewer for its ``asked`` tasks (escalated) and carries the
        ``settled`` ones (accepted); an audit's tasks are counted with its label."""
        self._count({"escalation": "escalated", "audit": "audited"}[kind])
        if kind == "escalation":
            for task in asked:
                self._decisions.labels(task, "escalated").inc()
            for task in settled:
                self._decisions.labels(task, "accepted").inc()

    def labeled(
        self, label: str, seconds: float, unreviewed: bool = False, task: str = DEFAULT_TASK
    ) -> None:
        """The jury's ``label`` was written, ``seconds`` after the post's timestamp;
        ``unreviewed``: an escalation the review allowance could not take."""
        self.labeled_tasks({task: label}, seconds, {task} if unreviewed else ())

    def labeled_tasks(
        self, labels: Mapping[str, str], seconds: float, unreviewed: Collection[str] = ()
    ) -> None:
        """A post's label record was written with the jury's label per task (``{task:
        label}``); the tasks in ``unreviewed`` were escalations the review allowance could not
        take (and make the post ``unreviewed``)."""
        self._count("unreviewed" if unreviewed else "labeled")
        self._latency.labels("end_to_end").observe(seconds)
        for task, label in labels.items():
            self._labels.labels(task, "jury", label).inc()
            outcome = "unreviewed" if task in unreviewed else "accepted"
            self._decisions.labels(task, outcome).inc()

    def produced(self, seconds: float) -> None:
        """The broker acknowledged a batch's outputs ``seconds`` after they were sent."""
        self._latency.labels("produce").observe(seconds)

    def dead_lettered(self) -> None:
        """A message went to dead-letters (invalid, or the jury failed on it)."""
        self._count("dead_lettered")

    # --- what the jury serves ---

    def threshold_served(self, threshold: float, task: str = DEFAULT_TASK) -> None:
        self._threshold.labels(task).set(threshold)

    def versions_served(self, versions: Mapping[str, str]) -> None:
        """The jury now serves ``{juror: version}``; every juror's swap series exist at 0
        before its first swap."""
        self._version.clear()
        for juror, version in versions.items():
            self._version.labels(juror=juror, version=version).set(1)
            for outcome in SWAP_OUTCOMES:
                self._swaps.labels(juror, outcome)

    def swapped(self, juror: str) -> None:
        """An announced version of ``juror`` was loaded and serves from the next batch."""
        self._swaps.labels(juror, "swapped").inc()

    def swap_refused(self, juror: str) -> None:
        """An announced version of ``juror`` could not be loaded; the old one keeps serving."""
        self._swaps.labels(juror, "refused").inc()
