"""The reviewer role: review → reviewer chain → labels + hard-samples.

A plain aiokafka consumer with manual commits, not a faust agent: the one guarantee that matters
here is "no offset is committed before its label is written", and with ``getmany`` + an explicit
``commit`` after the broker acknowledged every output, that is visible in ten lines. (The worker
gets the same at-least-once behaviour from faust's acks; the reviewer needs no faust feature.)

Parked cases (the chain failed: endpoint down, rate limited past the retries, off-label answers)
are retried *in place* with capped exponential backoff. That blocks the batch, and so the
partitions in it, until the reviewer answers: an outage delays labels, it never drops them, and
since nothing is committed meanwhile a crash replays the batch. Labels are keyed by message id,
so a replay after a crash overwrites downstream. Cases that can never be answered (malformed
records, an oracle case without gold) go to dead-letters with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError

from jurystream.config import Settings
from jurystream.exporters.metrics import Metrics
from jurystream.models.reviewer.base import Case, CaseError, Failure, Verdict
from jurystream.models.reviewer.chain import Chain, build_chain
from jurystream.stream import records
from jurystream.stream.broker import ensure_topics
from jurystream.stream.client import group_consumer
from jurystream.stream.lifecycle import run_until_signalled

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0  # on SIGTERM, let the batch in hand finish this long before replaying it
PARK_BACKOFF_BASE_S = 0.5


def hard_sample(case: Case, verdict: Verdict) -> dict[str, Any]:
    """The training record: the reviewer's label, who gave it, the jury's votes and a weight.

    The weight is the reviewer's confidence: the trainer can down-weight uncertain labels, as
    LLMaAA does with its learned per-example weights.
    """
    return {
        "id": case.id,
        "text": case.text,
        "label": verdict.label,
        "label_source": verdict.source,
        "votes": case.votes_dicts(),
        "weight": round(verdict.confidence, 4),
    }


class ReviewerRole:
    def __init__(self, settings: Settings, bootstrap: str, chain: Chain, metrics: Metrics) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.chain = chain
        self.metrics = metrics
        topics = settings.topics
        self.review_topic = topics.name("review")
        self.labels_topic = topics.name("labels")
        self.hard_topic = topics.name("hard_samples")
        self.dead_topic = topics.name("dead_letters")
        self.group_id = f"{settings.app_id}-reviewer"
        self._producer: AIOKafkaProducer | None = None
        self._lags: dict[tuple[str, int], int] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; commits only batches whose outputs are acknowledged."""
        consumer = group_consumer(
            self.settings,
            self.bootstrap,
            self.group_id,
            self.review_topic,
            # A parked batch blocks by design; an outage must not make us leave the group.
            max_poll_interval_ms=24 * 3600 * 1000,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=2, enable_idempotence=False
        )
        await producer.start()
        self._producer = producer
        await consumer.start()
        stop_waiter = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                batches = await consumer.getmany(
                    timeout_ms=300, max_records=max(1, 2 * self.settings.reviewer.concurrency)
                )
                if not batches:
                    continue
                work = asyncio.create_task(self._process(batches))
                done, _ = await asyncio.wait({work, stop_waiter}, return_when="FIRST_COMPLETED")
                if work not in done:
                    done, _ = await asyncio.wait({work}, timeout=SHUTDOWN_GRACE_S)
                    if work not in done:
                        work.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await work
                        log.warning("stopping with a batch in hand; it will be replayed")
                        break
                work.result()
                offsets = {tp: msgs[-1].offset + 1 for tp, msgs in batches.items()}
                try:
                    await consumer.commit(offsets)
                except CommitFailedError as exc:
                    # Partitions moved in a rebalance; their new owner replays the batch.
                    log.warning("commit failed after a rebalance (%s); batch will be replayed", exc)
                self._report_lag(consumer, offsets)
        finally:
            stop_waiter.cancel()
            await consumer.stop()
            await producer.stop()
            self._producer = None

    def _report_lag(self, consumer: AIOKafkaConsumer, committed: dict[TopicPartition, int]) -> None:
        """Messages behind the high watermark per partition this process owns."""
        for tp, next_offset in committed.items():
            high = consumer.highwater(tp)
            if high is not None:
                self._lags[(tp.topic, tp.partition)] = max(0, high - next_offset)
        owned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        self._lags = {k: v for k, v in self._lags.items() if k in owned}
        self.metrics.set_consumer_lags(self.group_id, self._lags)

    async def _process(self, batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> None:
        handled = [self._handle(msg) for msgs in batches.values() for msg in msgs]
        sends = await asyncio.gather(*handled)
        # Every label, hard sample and dead letter acknowledged before the caller commits.
        await asyncio.gather(*[f for fs in sends for f in fs])

    async def _handle(self, msg: ConsumerRecord[Any, Any]) -> list[Awaitable[Any]]:
        try:
            case = Case.from_record(json.loads(msg.value or b""))
        except (CaseError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError too
            return [await self._dead_letter(msg, f"not a review case: {exc}", None)]
        attempt = 0
        while True:
            started = time.perf_counter()
            outcome = await self.chain.review(case)
            if isinstance(outcome, Verdict):
                self.metrics.stage_latency.labels("review").observe(time.perf_counter() - started)
                return await self._write(case, outcome)
            assert isinstance(outcome, Failure)
            if outcome.permanent:
                return [await self._dead_letter(msg, outcome.reason, case.id)]
            self.metrics.messages.labels("reviewer", "parked").inc()
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
            await asyncio.sleep(delay)

    async def _write(self, case: Case, verdict: Verdict) -> list[Awaitable[Any]]:
        now_ms = time.time() * 1000
        latency_ms = max(0.0, now_ms - case.received_ms) if case.received_ms else 0.0
        label = records.label_record(
            case.id,
            verdict.label,
            verdict.confidence,
            verdict.source,
            case.votes_dicts(),
            case.model_versions,
            latency_ms,
            jury_label=case.jury_label,
            cost_usd=round(verdict.cost_usd, 8),
        )
        key = case.id.encode("utf-8")
        assert self._producer is not None
        sent = [
            await self._producer.send(self.labels_topic, records.dumps(label), key=key),
            await self._producer.send(
                self.hard_topic, records.dumps(hard_sample(case, verdict)), key=key
            ),
        ]
        self.metrics.messages.labels("reviewer", "reviewed").inc()
        self.metrics.labels_out.labels(verdict.source, verdict.label).inc()
        self.metrics.hard_samples.labels(verdict.source).inc()
        return sent

    async def _dead_letter(
        self, msg: ConsumerRecord[Any, Any], error: str, case_id: str | None
    ) -> Awaitable[Any]:
        key, value = records.dead_letter_message(msg, error, "review", case_id)
        self.metrics.messages.labels("reviewer", "dead_lettered").inc()
        assert self._producer is not None
        log.warning("dead letter %s: %s", key.decode(), error)
        return await self._producer.send(self.dead_topic, value, key=key)


async def serve(settings: Settings, bootstrap: str, stop: asyncio.Event) -> None:
    """Create the topics, build the chain and run the role until ``stop`` is set."""
    await ensure_topics(
        bootstrap,
        settings.topics.all_names(),
        settings.topics.partitions,
        settings.topics.replication_factor,
    )
    metrics = Metrics("reviewer")
    metrics.serve(settings.metrics.port, settings.metrics.host)
    chain = build_chain(settings.reviewer, metrics)
    log.warning("reviewer: chain %s", [tier.name for tier in chain.tiers])
    try:
        await ReviewerRole(settings, bootstrap, chain, metrics).run(stop)
    finally:
        await chain.close()


def run_reviewer(settings: Settings) -> int:
    """The ``reviewer`` command: run until SIGTERM/SIGINT."""
    bootstrap = settings.broker.bootstrap
    if not bootstrap:
        raise ValueError("no broker bootstrap address configured")
    return run_until_signalled(lambda stop: serve(settings, bootstrap, stop))
