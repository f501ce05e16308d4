"""The monitor role: labels ⋈ feedback → online accuracy, macro-F1 and drift, plus stream counts.

It reads four topics with one plain aiokafka consumer (no faust Tables: the broker notes in
DESIGN.md rule out changelog-backed state) and keeps a bounded in-memory join window:

- ``labels`` and ``feedback`` are joined by message id and task. A multi-task label record
  (``Settings.tasks``) joins per task: its result for task t meets the feedback whose ``task``
  is t; a single-task label and feedback without a task meet as ``DEFAULT_TASK``. Quality,
  audits and drift are kept and published per task. Both topics are keyed by message id and
  have the same partition count, and the consumer uses the range assignor, so several monitor
  processes each get the *same* partition numbers of both topics and each join stays local.
  A record whose partner does not arrive before ``join_capacity`` newer (id, task) entries is
  dropped and counted (``jurystream_feedback_unmatched_total``); a restart loses the pending
  window, which only costs a few unjudged samples.
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
from jurystream.exporters.metrics import DEFAULT_TASK, MonitorMetrics
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


# What the join matches on: a message id and a task.
JoinKey = tuple[str, str]


def label_facts(record: LabelRecord) -> dict[str, LabelFact]:
    """What the join keeps of a label record, per task (the rest is not needed to judge it):
    each result of a multi-task record, or the record itself as ``DEFAULT_TASK``."""
    jurors = tuple(record.model_versions)
    if not record.tasks:
        votes = tuple((v.juror, v.label) for v in record.votes)
        return {DEFAULT_TASK: LabelFact(record.label, record.source, votes, jurors)}
    return {
        task: LabelFact(r.label, r.source, tuple((v.juror, v.label) for v in r.votes), jurors)
        for task, r in record.tasks.items()
    }


def feedback_task(record: Feedback | HardSample) -> str:
    """The task a gold label (or a reviewed sample) is for: a single-task one's is the default."""
    return record.task or DEFAULT_TASK


def drift_references(settings: Settings) -> dict[str, dict[str, float]]:
    """Each task's training label distribution: ``tasks.<name>.drift_reference`` with several
    tasks (each has its own label set), ``metrics.drift_reference`` with one."""
    if settings.tasks:
        return {name: dict(spec.drift_reference) for name, spec in settings.tasks.items()}
    return {DEFAULT_TASK: dict(settings.metrics.drift_reference)}


class QualityMonitor:
    """The join and the rolling windows; Kafka-free so it is tested directly."""

    def __init__(
        self,
        metrics: MonitorMetrics,
        quality_window: int,
        drift_window: int,
        drift_references: Mapping[str, Mapping[str, float]],
        join_capacity: int,
    ) -> None:
        self.metrics = metrics
        self.quality_window = quality_window
        self.drift_size = drift_window
        self.capacity = join_capacity
        self._labels: OrderedDict[JoinKey, LabelFact] = OrderedDict()
        self._gold: OrderedDict[JoinKey, str] = OrderedDict()
        # Pairs already judged, so an at-least-once replay of either side is not counted twice.
        self._joined: OrderedDict[JoinKey, None] = OrderedDict()
        self.by_source: dict[tuple[str, str], RollingQuality] = {}  # (task, source)
        self.by_juror: dict[tuple[str, str], RollingQuality] = {}  # (task, juror)
        self.drift: dict[str, LabelWindow] = {}  # per task
        # Per task, the label distribution its jurors were trained on (``drift_references``,
        # see ``drift_references``); a task without one is measured against its first full
        # window.
        self.reference: dict[str, dict[str, float]] = {
            task: dict(reference) for task, reference in drift_references.items() if reference
        }
        self.reference_kind = {task: "training" for task in self.reference}
        self.audits: dict[str, deque[tuple[str, str]]] = {}  # per task

    # --- inputs ---

    def on_label(self, key: bytes | None, value: bytes | None) -> None:
        record = LabelRecord.parse(value, key)
        if isinstance(record, Invalid):
            self.metrics.record_invalid("labels")
            return
        for juror in record.model_versions:  # a juror with no update yet reads 0, not no data
            self.metrics.juror_seen(juror)
        for task, fact in label_facts(record).items():
            pair = (record.id, task)
            if pair in self._joined or pair in self._labels:
                continue  # an at-least-once replay
            self._drift(task, fact.label)
            gold = self._gold.pop(pair, None)
            if gold is None:
                self._remember(self._labels, pair, fact, "labels")
            else:
                self._judge(pair, fact, gold)

    def on_feedback(self, key: bytes | None, value: bytes | None) -> None:
        record = Feedback.parse(value, key)
        if isinstance(record, Invalid):
            self.metrics.record_invalid("feedback")
            return
        pair, gold = (record.id, feedback_task(record)), record.label
        if pair in self._joined:
            return
        fact = self._labels.pop(pair, None)
        if fact is None:
            self._remember(self._gold, pair, gold, "feedback")
        else:
            self._judge(pair, fact, gold)

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
                task = feedback_task(sample)
                audits = self.audits.setdefault(task, deque(maxlen=self.quality_window))
                audits.append((sample.jury_label, sample.label))

    # --- join ---

    def _drift(self, task: str, label: str) -> None:
        """Add a label to ``task``'s drift window; without a configured reference, the first
        full window becomes the reference."""
        window = self.drift.get(task)
        if window is None:
            window = self.drift[task] = LabelWindow(self.drift_size)
        window.add(label)
        if task not in self.reference and window.full:
            self.reference[task] = {k: float(v) for k, v in window.counts().items()}
            self.reference_kind[task] = "first_window"

    def _remember(
        self, pending: OrderedDict[JoinKey, Any], pair: JoinKey, item: Any, topic: str
    ) -> None:
        pending[pair] = item
        pending.move_to_end(pair)
        while len(pending) > self.capacity:
            pending.popitem(last=False)
            self.metrics.join_expired(topic)

    def _judge(self, pair: JoinKey, fact: LabelFact, gold: str) -> None:
        self._joined[pair] = None
        while len(self._joined) > self.capacity:
            self._joined.popitem(last=False)
        task = pair[1]
        self.metrics.judged(fact.source, fact.label == gold, task)
        self._window(self.by_source, (task, fact.source)).add(gold, fact.label)
        for juror, vote in fact.votes:
            self.metrics.juror_judged(juror, vote == gold, task)
            self._window(self.by_juror, (task, juror)).add(gold, vote)

    def _window(
        self, windows: dict[tuple[str, str], RollingQuality], key: tuple[str, str]
    ) -> RollingQuality:
        window = windows.get(key)
        if window is None:
            window = windows[key] = RollingQuality(self.quality_window)
        return window

    # --- output ---

    def publish(self) -> None:
        """Refresh the rolling gauges (O(window) each, so called on a timer, not per record)."""
        for (task, source), window in self.by_source.items():
            accuracy, f1 = window.accuracy(), window.macro_f1()
            self.metrics.source_quality(source, accuracy, f1, len(window), task)
        for (task, juror), window in self.by_juror.items():
            accuracy, f1 = window.accuracy(), window.macro_f1()
            self.metrics.juror_quality(juror, accuracy, f1, len(window), task)
        for task, audits in self.audits.items():
            self.metrics.audit_estimates(estimates_by_label(audits), task)
        for task, drift in self.drift.items():
            self.metrics.drift_window(len(drift), task)
            if task in self.reference and drift.full:
                value = psi(self.reference[task], drift.counts())
                self.metrics.label_drift(self.reference_kind[task], value, task)


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
            metrics,
            cfg.quality_window,
            cfg.drift_window,
            drift_references(settings),
            cfg.join_capacity,
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
