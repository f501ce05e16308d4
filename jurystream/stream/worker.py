"""The worker role: posts → micro-batches → jury → labels / review / dead-letters.

A shell around the batch decision (``labeling.py``, pure): it fetches a batch, scores it off the
event loop, produces what the decision says, acknowledges, and counts.

At-least-once: faust acks a ``take_events`` batch only after the loop body returns, and the
body returns only after every output of the batch is acknowledged by the broker. A crash before
that replays the batch; outputs are keyed by message id, so the replay overwrites downstream.
The data path is stateless (no faust Tables; see the broker notes in DESIGN.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, cast

import faust
from faust.types import EventT

from jurystream.config import Settings, Topic
from jurystream.exporters.health import HEARTBEAT_S
from jurystream.exporters.metrics import DEFAULT_TASK, WorkerMetrics
from jurystream.models.rules.selection import ReviewAllowance
from jurystream.models.rules.voting import Decision
from jurystream.models.serving.juror import Juror, trim_heap
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.parallel import InferencePool, usable_cores
from jurystream.models.serving.tasks import TaskJuries
from jurystream.stream.batching import ready_batches
from jurystream.stream.labeling import (
    InferenceFailed,
    Output,
    Stamp,
    label_batch,
    label_tasks_batch,
    quarantine_error,
    quarantined,
    read_batch,
)
from jurystream.stream.quarantine import AttemptLedger, MessageRef
from jurystream.stream.records import LabelRecord, ReviewCase
from jurystream.stream.security import Kafka, as_connection
from jurystream.stream.transport import FETCH_MAX_WAIT_MS
from jurystream.stream.updates import ModelUpdateFollower, ThresholdUpdate

log = logging.getLogger(__name__)


class JuryApp(faust.App):
    """A faust app that carries the consumer's fetch wait to the transport (``transport.py``):
    faust has no setting for it."""

    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS


def create_faust_app(settings: Settings, kafka: Kafka, name: str | None = None) -> faust.App:
    """A faust app tuned for at-least-once on any Kafka, Tansu included."""
    connection = as_connection(kafka)
    faust_dir = settings.data_dir / "faust"
    faust_dir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = JuryApp(
        name or settings.app_id,
        broker=f"jurykafka://{connection.bootstrap}",  # aiokafka, short fetch wait: transport.py
        broker_credentials=connection.faust_credentials(),
        processing_guarantee="at_least_once",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        store="memory://",
        # faust creates its data directory even with a memory store; by default in the working
        # directory, which is read-only in the images (restricted pods): under data_dir instead.
        datadir=str(faust_dir / (name or settings.app_id)),
        topic_partitions=settings.topics.partitions,
        topic_allow_declare=False,  # topics are created by ensure_topics with our partition count
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.broker.session_timeout_s,
        broker_heartbeat_interval=settings.broker.heartbeat_interval_s,
        broker_rebalance_timeout=max(settings.broker.session_timeout_s, 10.0),
        broker_request_timeout=settings.broker.request_timeout_s,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        producer_linger_ms=settings.broker.linger_ms,
    )
    app.fetch_max_wait_ms = settings.broker.fetch_max_wait_ms
    return app


Served = Jury | TaskJuries  # one task, or several (``Settings.tasks``)
Decided = Decision | dict[str, Decision]  # a post's decision, or its decision per task


class LabelingWorker:
    """Scores batches with the current jury (or one per task); ``swap`` replaces a juror
    between batches."""

    def __init__(
        self,
        settings: Settings,
        jury: Served,
        metrics: WorkerMetrics,
        outputs: Mapping[Topic, faust.types.TopicT],
    ):
        self.settings = settings
        self.metrics = metrics
        self.outputs = outputs
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"  # provenance on every output
        # A batch is scored off the event loop (heartbeats, fetches and produces go on), on every
        # core: onnxruntime and tokenizers release the GIL (models/serving/parallel.py).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jury")
        self.pool = InferencePool(settings.jury.inference_threads or usable_cores())
        self.jury: Served = _pooled(jury, self.pool)
        self._pending_thresholds: list[ThresholdUpdate] = []
        budget = settings.jury.review_budget
        self._allowance = None if budget is None else ReviewAllowance(budget)
        for task, threshold in _thresholds(self.jury).items():
            metrics.threshold_served(threshold, task)
        self._lags: dict[tuple[str, int], int] = {}
        self.ledger = AttemptLedger(settings.data_dir / "attempts" / f"{settings.app_id}-worker")
        self._publish_versions()

    def swap(self, juror: Juror) -> None:
        """Serve a loaded, verified juror from the next batch on (a batch in flight keeps the
        jury it started with: ``process`` holds its own reference), with a threshold that was
        waiting for it. A juror the jury cannot take (other label names, a multi-head juror
        without a head a task needs) raises, and the jury stays as it was."""
        old = self.jury.versions.get(juror.name)
        self.jury = self.jury.with_juror(juror)
        log.warning("juror %s: version %s → %s", juror.name, old, juror.version)
        self._publish_versions()
        self._apply_thresholds()

    def set_threshold(self, update: ThresholdUpdate) -> None:
        """Serve a controller threshold once the jury serves the versions it was calibrated for
        (a threshold belongs to a set of versions: it waits for a swap still loading).

        Several tasks: an update names its task and goes to that task's jury only, each task
        waiting for its own versions. An update for a task this worker does not serve, for
        another policy, or with a task in a single-task worker (or without one in a multi-task
        worker) is ignored."""
        if isinstance(self.jury, TaskJuries):
            jury = self.jury.juries.get(update.task) if update.task is not None else None
        else:
            jury = self.jury if update.task is None else None
        if jury is None or update.policy != jury.policy:
            return
        # The latest update of a task replaces the one it had waiting.
        waiting = [u for u in self._pending_thresholds if u.task != update.task]
        self._pending_thresholds = [*waiting, update]
        self._apply_thresholds()

    def _apply_thresholds(self) -> None:
        for update in list(self._pending_thresholds):
            jury = self.jury
            if isinstance(jury, TaskJuries):
                assert update.task is not None  # set_threshold queues only its tasks' updates
                if not update.matches(jury.juries[update.task].versions):
                    continue
                old = jury.juries[update.task].threshold
                self.jury = jury.with_threshold(update.task, update.threshold)
            else:
                if not update.matches(jury.versions):
                    continue
                old = jury.threshold
                self.jury = jury.with_threshold(update.threshold)
            self._pending_thresholds.remove(update)
            log.warning(
                "threshold%s %.2f → %.2f (%s)",
                "" if update.task is None else f" of task {update.task}",
                old,
                update.threshold,
                update.reason,
            )
            self.metrics.threshold_served(update.threshold, update.task or DEFAULT_TASK)

    def _publish_versions(self) -> None:
        self.metrics.versions_served(self.jury.versions)

    def report_lag(self, consumer: Any, events: Sequence[EventT]) -> None:
        """Messages behind the high watermark on the partitions this process owns.

        Read from the consumer's own fetch state: on Tansu the admin API's end offsets are
        wrong, and this costs no request.
        """
        for event in events:
            tp = event.message.tp
            high = consumer.highwater(tp)
            if high is not None:
                self._lags[(tp.topic, tp.partition)] = max(0, high - event.message.offset - 1)
        owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        self._lags = {k: v for k, v in self._lags.items() if k in owned}
        self.metrics.report_lag(self.settings.app_id, self._lags)

    async def guarded(self, events: Sequence[EventT]) -> None:
        """``process`` with every attempt counted on disk first, so that a message that keeps
        crashing the worker is quarantined after ``max_attempts`` instead of stopping its
        partition in a crash loop.

        A batch none of whose messages was tried before is processed whole. One that holds a
        message a crash interrupted is processed one message at a time, so only the culprit is
        counted again and the messages beside it are labeled.
        """
        refs: list[MessageRef] = [
            (e.message.topic, e.message.partition, e.message.offset) for e in events
        ]
        tried = self.ledger.attempts(refs)
        if not any(tried):
            self.ledger.begin(refs)
            await self.process(events)
            self.ledger.finish(refs)
            return
        limit = self.settings.max_attempts
        for event, ref, attempts in zip(events, refs, tried, strict=True):
            if attempts >= limit:
                await self._quarantine(event, attempts)
            else:
                self.ledger.begin([ref])
                await self.process([event])
            self.ledger.finish([ref])

    async def _quarantine(self, event: EventT, attempts: int) -> None:
        msg = event.message
        letter = quarantined(msg, attempts, self.settings.jury.max_message_bytes)
        error = quarantine_error(attempts)
        log.error("%s:%d:%d %s", msg.topic, msg.partition, msg.offset, error)
        self._report(letter)
        await self._produce([letter])

    async def process(self, events: Sequence[EventT]) -> None:
        """Label one batch: read → score → decide (``labeling``) → produce → count; returns once
        the broker acknowledged every output."""
        jury = self.jury
        limits = self.settings.jury
        read = read_batch(
            [e.message for e in events], limits.max_message_bytes, limits.max_text_chars
        )
        self.metrics.batch_received(len(events))
        began = time.time()
        for event in events:  # fetch + waiting for a batch, per post
            waited = max(0.0, began - event.message.timestamp)
            self.metrics.waited_for_batch(waited)
        decisions = await self._score(jury, [post.text for post, _ in read.posts])
        if isinstance(jury, TaskJuries):
            stamp = Stamp(
                jury.versions, _primary(jury).threshold, self.worker_id, _thresholds(jury)
            )
            per_task = cast(list[dict[str, Decision] | InferenceFailed], decisions)
            batch = label_tasks_batch(
                read, per_task, stamp, time.time(), limits.audit_rate, self._allowance
            )
            scored = [d for d in per_task if not isinstance(d, InferenceFailed)]
        else:
            stamp = Stamp(jury.versions, jury.threshold, self.worker_id)
            single = cast(list[Decision | InferenceFailed], decisions)
            batch = label_batch(
                read, single, stamp, time.time(), limits.audit_rate, self._allowance
            )
            scored = [{DEFAULT_TASK: d} for d in batch.decisions]
        for by_task in scored:
            for task, decision in by_task.items():
                self._count(decision, task)
        for output in batch.outputs:
            self._report(output)
        started = time.perf_counter()
        await self._produce(batch.outputs)
        self.metrics.produced(time.perf_counter() - started)

    async def _score(self, jury: Served, texts: list[str]) -> list[Decided | InferenceFailed]:
        """Score the batch off the loop; if it fails, score one by one to isolate the culprit."""
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            decisions = await loop.run_in_executor(self._executor, _decide_and_trim, jury, texts)
        except Exception:
            log.exception("batch of %d failed in the jury; retrying one by one", len(texts))
            out: list[Decided | InferenceFailed] = []
            for text in texts:
                try:
                    one = await loop.run_in_executor(self._executor, _decide_and_trim, jury, [text])
                    out.append(one[0])
                except Exception as exc:
                    out.append(InferenceFailed(f"{type(exc).__name__}: {exc}"))
            return out
        self.metrics.scored(time.perf_counter() - started)
        return list(decisions)

    def _count(self, decision: Decision, task: str) -> None:
        """The votes of one task's decision on a post."""
        for vote in decision.votes:
            self.metrics.voted(vote.juror, vote.label, vote.label == decision.label, task)

    def _report(self, output: Output) -> None:
        """Count an output once per post, and what it says about each task: a multi-task
        record counts each task's result; a single-task one counts as ``DEFAULT_TASK``."""
        record = output.record
        if isinstance(record, LabelRecord):
            seconds = (record.latency_ms or 0) / 1000
            if record.tasks:
                labels = {task: result.label for task, result in record.tasks.items()}
                unreviewed = {task for task, result in record.tasks.items() if result.unreviewed}
                self.metrics.labeled_tasks(labels, seconds, unreviewed)
            else:
                unreviewed_post = output.outcome == "unreviewed"
                self.metrics.labeled(record.label, seconds, unreviewed=unreviewed_post)
        elif isinstance(record, ReviewCase):
            asked = list(record.asked) or [DEFAULT_TASK]
            self.metrics.sent_to_review(record.kind, asked, list(record.settled))
        else:
            self.metrics.dead_lettered()

    async def _produce(self, outputs: Sequence[Output]) -> None:
        """Send the outputs and wait for the broker to acknowledge every one (before faust may
        commit the batch)."""
        sent = [
            await self.outputs[o.topic].send(key=o.key, value=o.record.to_bytes()) for o in outputs
        ]
        await asyncio.gather(*sent)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.pool.close()


def _pooled(jury: Served, pool: InferencePool) -> Served:
    """``jury`` scoring on the worker's pool (each task's jury too: a cascade asks its own)."""
    if isinstance(jury, TaskJuries):
        juries = {task: replace(j, pool=pool) for task, j in jury.juries.items()}
        return replace(jury, juries=juries, pool=pool)
    return replace(jury, pool=pool)


def _primary(jury: Served) -> Jury:
    """The jury whose threshold a record's top-level fields carry: the first task's."""
    return next(iter(jury.juries.values())) if isinstance(jury, TaskJuries) else jury


def _thresholds(jury: Served) -> dict[str, float]:
    """The threshold each task's jury serves (``DEFAULT_TASK``'s with one task)."""
    if isinstance(jury, TaskJuries):
        return {task: j.threshold for task, j in jury.juries.items()}
    return {DEFAULT_TASK: jury.threshold}


def _decide_and_trim(jury: Served, texts: list[str]) -> Sequence[Decided]:
    """A batch's decisions, then its freed buffers back to the OS: a worker lives for weeks and
    its resident memory is what a deployment sizes for (``trim_heap``)."""
    try:
        return jury.decide(texts)
    finally:
        trim_heap()


def build_worker_app(
    settings: Settings, kafka: Kafka, jury: Served, metrics: WorkerMetrics
) -> tuple[faust.App, LabelingWorker]:
    """The faust app with the labeling agent wired to ``jury``."""
    app = create_faust_app(settings, kafka)
    topics = settings.topics

    def raw_topic(topic: Topic) -> faust.types.TopicT:
        return app.topic(topics.name(topic), key_serializer="raw", value_serializer="raw")

    outputs = {t: raw_topic(t) for t in (Topic.LABELS, Topic.REVIEW, Topic.DEAD_LETTERS)}
    worker = LabelingWorker(settings, jury, metrics, outputs)

    # Several tasks: each task's jury checks a new juror's labels as it takes it (``swap``).
    labels = None if isinstance(jury, TaskJuries) else jury.labels
    follower = ModelUpdateFollower(
        settings, kafka, jury.versions, labels, worker.swap, metrics, worker.set_threshold
    )

    @app.timer(HEARTBEAT_S)
    async def health() -> None:
        """Runs in faust's event loop: /livez fails when that loop hangs (exporters/health)."""
        metrics.health.beat()
        metrics.health.consuming(len(app.consumer.assignment()))

    @app.task
    async def follow_model_updates() -> None:
        """Hot-swap: announced versions load in the background and take over between batches."""
        await follower.run()

    @app.agent(raw_topic(Topic.POSTS), name="label-posts")
    async def label_posts(stream: faust.StreamT[bytes]) -> None:
        # Acked by hand once a batch's outputs are acknowledged: faust commits only acked
        # offsets, so a crash mid-batch replays it.
        posts = stream.noack()  # type: ignore[attr-defined]
        fetched = posts.channel.queue
        async for events in ready_batches(
            posts.events(),
            lambda: not fetched.empty(),
            settings.jury.batch_size,
            settings.jury.batch_timeout_s,
        ):
            try:
                await worker.guarded(events)
                worker.report_lag(app.consumer, events)
            except Exception:
                # Fail fast without committing: the batch is replayed after a restart (and the
                # message behind it quarantined once it used up its attempts). Staying up
                # with a crashed agent would silently stop labeling.
                log.critical("batch failed; exiting so it is replayed", exc_info=True)
                os._exit(70)
            for event in events:
                await posts.ack(event)

    return app, worker
