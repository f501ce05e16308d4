"""The worker's metrics: messages routed, stage latencies, votes, served versions and swaps."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from jurystream.exporters.metrics import families as f
from jurystream.exporters.metrics.base import RoleMetrics

SWAP_OUTCOMES = ("swapped", "refused")


class WorkerMetrics(RoleMetrics):
    role = "worker"
    outcomes = ("labeled", "escalated", "audited", "unreviewed", "dead_lettered")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self._latency = f.STAGE_LATENCY.create(r)
        self._batch_size = f.BATCH_SIZE.create(r)
        self._votes = f.JUROR_VOTES.create(r)
        self._agreement = f.JUROR_AGREEMENT.create(r)
        self._version = f.MODEL_VERSION.create(r)
        self._swaps = f.MODEL_SWAPS.create(r)
        self._threshold = f.JURY_THRESHOLD.create(r)
        self._labels = f.LABELS_OUT.create(r)

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

    def voted(self, juror: str, label: str, agreed: bool) -> None:
        """``juror`` voted ``label``; ``agreed``: the jury's final label is the same."""
        self._votes.labels(juror, label).inc()
        if agreed:
            self._agreement.labels(juror).inc()

    def sent_to_review(self, kind: str) -> None:
        """A post went to the review topic as an ``escalation`` or an ``audit``."""
        self._count({"escalation": "escalated", "audit": "audited"}[kind])

    def labeled(self, label: str, seconds: float, unreviewed: bool = False) -> None:
        """The jury's ``label`` was written, ``seconds`` after the post's timestamp;
        ``unreviewed``: an escalation the review allowance could not take."""
        self._count("unreviewed" if unreviewed else "labeled")
        self._labels.labels("jury", label).inc()
        self._latency.labels("end_to_end").observe(seconds)

    def produced(self, seconds: float) -> None:
        """The broker acknowledged a batch's outputs ``seconds`` after they were sent."""
        self._latency.labels("produce").observe(seconds)

    def dead_lettered(self) -> None:
        """A message went to dead-letters (invalid, or the jury failed on it)."""
        self._count("dead_lettered")

    # --- what the jury serves ---

    def threshold_served(self, threshold: float) -> None:
        self._threshold.set(threshold)

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
