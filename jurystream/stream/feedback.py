"""The monitor role: labels ⋈ feedback → online accuracy, macro-F1 and drift, plus stream counts.

It reads four topics with one plain aiokafka consumer (no faust Tables: the broker notes in
DESIGN.md rule out changelog-backed state) and keeps a bounded in-memory join window:

- ``labels`` and ``feedback`` are joined by message id. Both are keyed by message id and have
  the same partition count, and the consumer uses the range assignor, so several monitor
  processes each get the *same* partition numbers of both topics and each join stays local.
  A record whose partner does not arrive before ``join_capacity`` newer ones is dropped and
  counted (``jurystream_feedback_unmatched_total``); a restart loses the pending window, which
  only costs a few unjudged samples.
- every label also feeds a label-distribution window for PSI drift;
- ``model-updates`` are counted, so the dashboard sees new juror versions from the stream
  itself, whichever trainer produced them;
- ``hard-samples`` of kind ``audit`` (a random share of the jury's accepted labels that the
  reviewer also answered) give the accuracy of accepted labels per jury label, with a 95%
  interval, over the last ``quality_window`` audits: an estimate that needs no gold feedback.
  It is the reviewer's agreement with the jury, so it reads a perfect reviewer's accuracy; the
  trainer's threshold controller corrects it for the reviewer's measured accuracy.

What a role produces (labels by label, hard samples) is counted by that role when it sends it,
not here, so nothing is counted twice.

Records are ``stream.records``' (``LabelRecord``, ``Feedback``, ``ModelUpdate``, ``HardSample``);
feedback is keyed by message id, and a record without an ``id`` takes the key's.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from jurystream.config import Settings, Topic
from jurystream.exporters.metrics import MonitorMetrics
from jurystream.models.rules.audit import estimates_by_label
from jurystream.models.rules.quality import LabelWindow, RollingQuality, psi
from jurystream.stream.records import (
    Feedback,
    HardSample,
    Invalid,
    LabelRecord,
    ModelUpdate,
    parse_update,
)
from jurystream.stream.role import Role, RoleSpec, run_role
from jurystream.stream.security import Kafka

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LabelFact:
    """What the join keeps of a label record: the final label, its source and the votes."""

    label: str
    source: str
    votes: tuple[tuple[str, str], ...]  # (juror, label)
    jurors: tuple[str, ...]  # every juror that served the message (model_versions)


def label_fact(record: LabelRecord) -> LabelFact:
    """What the join keeps of a label record (the rest is not needed to judge it)."""
    return LabelFact(
        record.label,
        record.source,
        tuple((v.juror, v.label) for v in record.votes),
        tuple(record.model_versions),
    )


class QualityMonitor:
    """The join and the rolling windows; Kafka-free so it is tested directly."""

    def __init__(
        self,
        metrics: MonitorMetrics,
        quality_window: int,
        drift_window: int,
        drift_reference: Mapping[str, float],
        join_capacity: int,
    ) -> None:
        self.metrics = metrics
        self.quality_window = quality_window
        self.capacity = join_capacity
        self._labels: OrderedDict[str, LabelFact] = OrderedDict()
        self._gold: OrderedDict[str, str] = OrderedDict()
        # Ids already judged, so an at-least-once replay of either side is not counted twice.
        self._joined: OrderedDict[str, None] = OrderedDict()
        self.by_source: dict[str, RollingQuality] = {}
        self.by_juror: dict[str, RollingQuality] = {}
        self.drift = LabelWindow(drift_window)
        self.reference: dict[str, float] = dict(drift_reference)
        self.reference_kind = "training" if self.reference else "first_window"
        self.audits: deque[tuple[str, str]] = deque(maxlen=quality_window)

    # --- inputs ---

    def on_label(self, key: bytes | None, value: bytes | None) -> None:
        record = LabelRecord.parse(value, key)
        if isinstance(record, Invalid):
            self.metrics.record_invalid("labels")
            return
        post_id, fact = record.id, label_fact(record)
        if post_id in self._joined or post_id in self._labels:
            return  # an at-least-once replay
        for juror in fact.jurors:  # a juror with no update yet reads 0 updates, not no data
            self.metrics.juror_seen(juror)
        self.drift.add(fact.label)
        if not self.reference and self.drift.full:
            self.reference = {k: float(v) for k, v in self.drift.counts().items()}
        gold = self._gold.pop(post_id, None)
        if gold is None:
            self._remember(self._labels, post_id, fact, "labels")
        else:
            self._judge(post_id, fact, gold)

    def on_feedback(self, key: bytes | None, value: bytes | None) -> None:
        record = Feedback.parse(value, key)
        if isinstance(record, Invalid):
            self.metrics.record_invalid("feedback")
            return
        post_id, gold = record.id, record.label
        if post_id in self._joined:
            return
        fact = self._labels.pop(post_id, None)
        if fact is None:
            self._remember(self._gold, post_id, gold, "feedback")
        else:
            self._judge(post_id, fact, gold)

    def on_model_update(self, key: bytes | None, value: bytes | None) -> None:
        """Count an announced version; the juror is the value's ``name`` (else the key), and
        an announcement too malformed to name one still counts (as the key's, or ``unknown``):
        it shows that something announces."""
        update = parse_update(value, key)
        if not isinstance(update, ModelUpdate | Invalid):
            return  # a controller threshold, not a juror version
        juror = update.name if isinstance(update, ModelUpdate) else None
        juror = juror or (key or b"").decode(errors="replace")
        self.metrics.model_announced(juror or "unknown")

    def on_hard_sample(self, key: bytes | None, value: bytes | None) -> None:
        """Keep an audit's outcome; hard cases are the trainer's business, not a measurement."""
        sample = HardSample.parse(value, key)
        if isinstance(sample, Invalid):
            self.metrics.record_invalid("hard_samples")
        elif sample.kind == "audit":
            if sample.jury_label is None:  # an audit that does not say what it measured
                self.metrics.record_invalid("hard_samples")
            else:
                self.audits.append((sample.jury_label, sample.label))

    # --- join ---

    def _remember(
        self, pending: OrderedDict[str, Any], post_id: str, item: Any, topic: str
    ) -> None:
        pending[post_id] = item
        pending.move_to_end(post_id)
        while len(pending) > self.capacity:
            pending.popitem(last=False)
            self.metrics.join_expired(topic)

    def _judge(self, post_id: str, fact: LabelFact, gold: str) -> None:
        self._joined[post_id] = None
        while len(self._joined) > self.capacity:
            self._joined.popitem(last=False)
        self.metrics.judged(fact.source, correct=fact.label == gold)
        self._window(self.by_source, fact.source).add(gold, fact.label)
        for juror, vote in fact.votes:
            self.metrics.juror_judged(juror, correct=vote == gold)
            self._window(self.by_juror, juror).add(gold, vote)

    def _window(self, windows: dict[str, RollingQuality], key: str) -> RollingQuality:
        window = windows.get(key)
        if window is None:
            window = windows[key] = RollingQuality(self.quality_window)
        return window

    # --- output ---

    def publish(self) -> None:
        """Refresh the rolling gauges (O(window) each, so called on a timer, not per record)."""
        for source, window in self.by_source.items():
            self.metrics.source_quality(source, window.accuracy(), window.macro_f1(), len(window))
        for juror, window in self.by_juror.items():
            self.metrics.juror_quality(juror, window.accuracy(), window.macro_f1(), len(window))
        self.metrics.drift_window(len(self.drift))
        if self.audits:
            self.metrics.audit_estimates(estimates_by_label(self.audits))
        if self.reference and self.drift.full:
            value = psi(self.reference, self.drift.counts())
            self.metrics.label_drift(self.reference_kind, value)


class MonitorRole(Role):
    """Feeds each polled batch to the ``QualityMonitor``; refreshes the gauges on a timer."""

    metrics: MonitorMetrics

    def __init__(self, settings: Settings, kafka: Kafka, metrics: MonitorMetrics) -> None:
        followed = (Topic.LABELS, Topic.FEEDBACK, Topic.MODEL_UPDATES, Topic.HARD_SAMPLES)
        spec = RoleSpec(
            "monitor",
            followed,
            max_records=5000,
            # The same partition numbers of labels and feedback on one process: see above.
            consumer={"partition_assignment_strategy": (RangePartitionAssignor,)},
        )
        super().__init__(settings, kafka, metrics, spec)
        cfg = settings.metrics
        self.quality = QualityMonitor(
            metrics, cfg.quality_window, cfg.drift_window, cfg.drift_reference, cfg.join_capacity
        )
        handlers = {
            Topic.LABELS: self.quality.on_label,
            Topic.FEEDBACK: self.quality.on_feedback,
            Topic.MODEL_UPDATES: self.quality.on_model_update,
            Topic.HARD_SAMPLES: self.quality.on_hard_sample,
        }
        self._handlers = {settings.topics.name(t): h for t, h in handlers.items()}
        self._next_publish = 0.0

    async def start(self) -> None:
        log.warning("monitor: reading %s as group %s", ", ".join(self._handlers), self.group_id)

    async def handle(self, messages: list[ConsumerRecord[Any, Any]]) -> None:
        for record in messages:
            self._handlers[record.topic](record.key, record.value)

    async def tick(self) -> None:
        if time.monotonic() >= self._next_publish:
            self.quality.publish()
            self._next_publish = time.monotonic() + self.settings.metrics.publish_interval_s


@contextlib.asynccontextmanager
async def monitor(settings: Settings, kafka: Kafka, metrics: MonitorMetrics) -> AsyncIterator[Role]:
    """The monitor as the role template builds it (it opens nothing of its own)."""
    yield MonitorRole(settings, kafka, metrics)


def run_monitor(settings: Settings) -> int:
    """The `jurystream monitor` role: serve /metrics and consume until SIGTERM/SIGINT."""
    return run_role(settings, MonitorMetrics, monitor)
