"""The reviewer role: review → reviewer chain → labels + hard-samples.

A plain aiokafka consumer with manual commits, not a faust agent: the one guarantee that matters
here is "no offset is committed before its label is written", and that is explicit below.

Cases are answered concurrently and finish out of order: a case the chain cannot answer yet
(endpoint down, rate limited past the retries, budget spent, off-label answers) is *parked* —
retried in place with capped exponential backoff — while the cases behind it keep flowing.
Per partition, the committed position only passes a case once it and every case before it
have their outputs acknowledged (``offsets.OffsetTracker``), so an outage delays labels and
never drops them, and a crash replays whatever was not committed; labels are keyed by message
id, so a replay overwrites downstream. Cases that can never be answered (malformed records, an
oracle case without gold, a case that keeps failing while others are answered) go to
dead-letters with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError

from jurystream.config import Settings, Topic
from jurystream.exporters.metrics import ReviewerMetrics
from jurystream.models.reviewer.base import Failure, Verdict
from jurystream.models.reviewer.chain import Chain, build_chain
from jurystream.stream.broker import ensure_topics
from jurystream.stream.client import group_consumer
from jurystream.stream.lifecycle import run_until_signalled
from jurystream.stream.offsets import OffsetTracker
from jurystream.stream.quarantine import AttemptLedger
from jurystream.stream.records import DeadLetter, HardSample, Invalid, LabelRecord, ReviewCase
from jurystream.stream.security import Kafka, client_kwargs, kafka_connection
from jurystream.stream.spend import SharedSpend

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0  # on SIGTERM, let the cases in hand finish this long before replaying
PARK_BACKOFF_BASE_S = 0.5
POLL_MS = 200


class ReviewerRole:
    def __init__(
        self, settings: Settings, kafka: Kafka, chain: Chain, metrics: ReviewerMetrics
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.chain = chain
        self.metrics = metrics
        topics = settings.topics
        self.review_topic = topics.name(Topic.REVIEW)
        self.labels_topic = topics.name(Topic.LABELS)
        self.hard_topic = topics.name(Topic.HARD_SAMPLES)
        self.dead_topic = topics.name(Topic.DEAD_LETTERS)
        self.group_id = f"{settings.app_id}-reviewer"
        self._producer: AIOKafkaProducer | None = None
        self._lags: dict[tuple[str, int], int] = {}
        self._offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._cases: dict[asyncio.Task[None], tuple[TopicPartition, int]] = {}
        self._answered = 0  # verdicts so far: tells a case nobody can answer from an outage
        self.ledger = AttemptLedger(settings.data_dir / "attempts" / self.group_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; commits only positions whose outputs are acknowledged."""
        consumer = group_consumer(
            self.settings,
            self.kafka,
            self.group_id,
            # A parked case may wait for hours; that must not make us leave the group.
            max_poll_interval_ms=24 * 3600 * 1000,
        )
        consumer.subscribe([self.review_topic], listener=_ReleaseOnRevoke(self, consumer))
        producer = AIOKafkaProducer(
            **client_kwargs(self.kafka), acks="all", linger_ms=2, enable_idempotence=False
        )
        await producer.start()
        self._producer = producer
        await consumer.start()
        limit = self.settings.reviewer.in_flight_limit
        try:
            while not stop.is_set():
                room = limit - len(self._cases)
                if room > 0:
                    batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=room)
                    for tp, messages in batches.items():
                        for msg in messages:
                            self._offsets.read(tp, msg.offset)
                            self._cases[asyncio.create_task(self._review(msg))] = (tp, msg.offset)
                else:  # full: wait for a case to finish rather than fetch more
                    await asyncio.wait(
                        list(self._cases), timeout=POLL_MS / 1000, return_when="FIRST_COMPLETED"
                    )
                await self._settle(consumer)
                self.metrics.cases_in_flight(len(self._cases))
                self.metrics.health.consuming(len(consumer.assignment()))
            if self._cases:
                await asyncio.wait(list(self._cases), timeout=SHUTDOWN_GRACE_S)
                await self._settle(consumer)
                if self._cases:
                    left = len(self._cases)
                    log.warning("stopping with %d cases in hand; they will be replayed", left)
        finally:
            await self._drop(list(self._cases))
            self.metrics.cases_in_flight(0)
            await consumer.stop()
            await producer.stop()
            self._producer = None

    async def _review(self, msg: ConsumerRecord[Any, Any]) -> None:
        """Answer one case; returns once every output of it is acknowledged by the broker."""
        await asyncio.gather(*await self._handle(msg))

    async def _settle(self, consumer: AIOKafkaConsumer) -> None:
        """Mark finished cases done and commit the positions that moved."""
        for task in [t for t in self._cases if t.done()]:
            tp, offset = self._cases.pop(task)
            task.result()  # a bug in the role, not a case's fault: crash, replay on restart
            self._offsets.finish(tp, offset)
        owned = consumer.assignment()
        positions = {tp: n for tp, n in self._offsets.committable().items() if tp in owned}
        if not positions:
            return
        try:
            await consumer.commit(positions)
        except CommitFailedError as exc:
            # Partitions moved in a rebalance; their new owner replays what was not committed.
            log.warning("commit failed after a rebalance (%s); cases will be replayed", exc)
            return
        self._offsets.committed(positions)
        self._report_lag(consumer, positions)

    async def release(self, consumer: AIOKafkaConsumer, revoked: set[TopicPartition]) -> None:
        """Before partitions move: commit what is done, drop the rest (the new owner replays)."""
        await self._settle(consumer)
        await self._drop([t for t, (tp, _) in self._cases.items() if tp in revoked])
        self._offsets.forget(revoked)

    async def _drop(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            self._cases.pop(task, None)
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _report_lag(self, consumer: AIOKafkaConsumer, committed: dict[TopicPartition, int]) -> None:
        """Messages behind the high watermark per partition this process owns."""
        for tp, next_offset in committed.items():
            high = consumer.highwater(tp)
            if high is not None:
                self._lags[(tp.topic, tp.partition)] = max(0, high - next_offset)
        owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        self._lags = {k: v for k, v in self._lags.items() if k in owned}
        self.metrics.report_lag(self.group_id, self._lags)

    async def _handle(self, msg: ConsumerRecord[Any, Any]) -> list[Awaitable[Any]]:
        case = ReviewCase.parse(msg.value, msg.key)
        if isinstance(case, Invalid):
            return [await self._dead_letter(msg, f"not a review case: {case.reason}", None)]
        attempt = contested = 0
        answered_before = self._answered
        while True:
            started = time.perf_counter()
            outcome = await self._ask(msg, case)
            if isinstance(outcome, Verdict):
                self._answered += 1
                self.metrics.case_answered(time.perf_counter() - started)
                return await self._write(case, outcome)
            assert isinstance(outcome, Failure)
            if outcome.permanent:
                return [await self._dead_letter(msg, outcome.reason, case.id)]
            # Failed again while other cases were answered: the endpoint works, this case does not.
            contested += self._answered > answered_before
            answered_before = self._answered
            if contested >= self.settings.reviewer.max_case_failures:
                reason = (
                    f"{outcome.source}: {outcome.reason}; failed {contested} times while other "
                    "cases were answered (fix the cause, then replay it from dead-letters)"
                )
                return [await self._dead_letter(msg, reason, case.id)]
            self.metrics.case_parked()
            delay = min(self.settings.reviewer.park_backoff_max_s, PARK_BACKOFF_BASE_S * 2**attempt)
            attempt += 1
            log.warning(
                "case %s parked (%s: %s); retry %d in %.1fs",
                case.id,
                outcome.source,
                outcome.reason,
                attempt,
                delay,
            )
            try:
                await asyncio.sleep(delay)
            finally:  # also when the case is dropped in a rebalance or at shutdown
                self.metrics.park_ended()

    async def _ask(self, msg: ConsumerRecord[Any, Any], case: ReviewCase) -> Verdict | Failure:
        """The chain's outcome. An exception (a bug this case triggers) still crashes the role,
        but is counted on disk first: after ``max_attempts`` the case is quarantined instead of
        crashing the role on every replay."""
        try:
            return await self.chain.review(case.case())
        except Exception as exc:
            ref = (msg.topic, msg.partition, msg.offset)
            self.ledger.begin([ref])
            (attempts,) = self.ledger.attempts([ref])
            if attempts < self.settings.max_attempts:
                raise
            self.ledger.forget([ref])
            reason = (
                f"quarantined: reviewing it raised {type(exc).__name__}: {exc} ({attempts} "
                "times); fix the cause, then replay it from dead-letters"
            )
            log.error("case %s %s", case.id, reason, exc_info=True)
            return Failure("reviewer", reason, permanent=True)

    async def _write(self, case: ReviewCase, verdict: Verdict) -> list[Awaitable[Any]]:
        """The hard sample, and for an escalation the label (an audit's label stands)."""
        key = case.id.encode("utf-8")
        assert self._producer is not None
        sample = HardSample.of(case, verdict)
        sent = [await self._producer.send(self.hard_topic, sample.to_bytes(), key=key)]
        self.metrics.hard_sample_written(verdict.source)
        if case.kind == "audit":
            agreed = verdict.label == case.jury_label
            self.metrics.audit_reviewed(agreed)
            return sent
        now_ms = time.time() * 1000
        latency_ms = max(0.0, now_ms - case.received_ms) if case.received_ms else 0.0
        label = LabelRecord.from_review(case, verdict, latency_ms)
        sent.append(await self._producer.send(self.labels_topic, label.to_bytes(), key=key))
        self.metrics.reviewed(verdict.source, verdict.label)
        return sent

    async def _dead_letter(
        self, msg: ConsumerRecord[Any, Any], error: str, case_id: str | None
    ) -> Awaitable[Any]:
        letter = DeadLetter.of_message(msg, error, "review", case_id)
        self.metrics.dead_lettered()
        assert self._producer is not None
        log.warning("dead letter %s: %s", letter.key.decode(), error)
        return await self._producer.send(self.dead_topic, letter.to_bytes(), key=letter.key)


class _ReleaseOnRevoke(ConsumerRebalanceListener):
    def __init__(self, role: ReviewerRole, consumer: AIOKafkaConsumer) -> None:
        self.role = role
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.role.release(self.consumer, set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass


async def serve(settings: Settings, kafka: Kafka, stop: asyncio.Event) -> None:
    """Create the topics, build the chain and run the role until ``stop`` is set."""
    await ensure_topics(
        kafka,
        settings.topics.all_names(),
        settings.topics.partitions,
        settings.topics.replication_factor,
    )
    metrics = ReviewerMetrics()
    metrics.serve(settings.metrics.port, settings.metrics.host)
    review = settings.reviewer
    spend: SharedSpend | None = None
    if "openai" in review.chain and (
        review.budget_per_hour_usd is not None or review.budget_per_day_usd is not None
    ):
        spend = SharedSpend(settings, kafka)  # the budget holds for all replicas together
    try:
        if spend is not None:
            await spend.start()
        chain = build_chain(review, metrics, spend)
        log.warning("reviewer: chain %s", [tier.name for tier in chain.tiers])
        try:
            async with metrics.health.heartbeat():
                await ReviewerRole(settings, kafka, chain, metrics).run(stop)
        finally:
            await chain.close()
    finally:
        if spend is not None:
            await spend.close()


def run_reviewer(settings: Settings) -> int:
    """The ``reviewer`` command: run until SIGTERM/SIGINT."""
    kafka = kafka_connection(settings)
    return run_until_signalled(lambda stop: serve(settings, kafka, stop))
