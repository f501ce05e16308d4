"""The template of the plain-aiokafka roles (reviewer, trainer, monitor): a role is its handler
and its settings.

What every such role needs is here once: create the topics, serve /metrics with a heartbeat,
join its consumer group, poll, commit through ``OffsetTracker`` only positions whose outputs
are acknowledged, report its lag, release partitions cleanly in a rebalance, and stop on
SIGTERM/SIGINT after the messages in hand settle. A role subclasses ``Role`` with a ``RoleSpec``
and writes ``handle``; optional hooks (``start``, ``tick``, ``finish``, ``close``) carry what is
its own (the trainer's rounds, the monitor's gauges).

Two ways to consume, chosen by ``RoleSpec.concurrency``:

- ``None``: a polled batch at a time; ``handle(batch)`` returns once its outputs are
  acknowledged (or its records stored), then the batch's positions are committed (trainer,
  monitor);
- ``N``: up to N messages in flight, each ``handle([message])`` in its own task, finishing out of
  order; a partition's position passes a message only once it and every one before it are done
  (reviewer: a case may wait on an outage while the ones behind it are answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError

from jurystream.config import Settings, Topic
from jurystream.exporters.metrics import RoleMetrics
from jurystream.stream.broker import ensure_topics
from jurystream.stream.client import group_consumer
from jurystream.stream.lifecycle import run_until_signalled
from jurystream.stream.offsets import OffsetTracker
from jurystream.stream.security import Kafka, client_kwargs, kafka_connection

log = logging.getLogger(__name__)

LAG_INTERVAL_S = 1.0

Message: TypeAlias = "ConsumerRecord[Any, Any]"


@dataclass(frozen=True)
class RoleSpec:
    """How a role consumes. ``name`` names its metrics, its consumer group
    (``<app_id>-<name>``) and its logs."""

    name: str
    topics: tuple[Topic, ...]
    poll_ms: int = 200
    max_records: int = 500  # per poll, a batch at a time
    concurrency: int | None = None  # messages in flight, each its own task; None: batches
    grace_s: float = 10.0  # on stop, how long the messages in flight may still finish
    consumer: Mapping[str, Any] = field(default_factory=dict)  # group_consumer options
    producer: Mapping[str, Any] | None = None  # AIOKafkaProducer options; None: produces nothing


class Role(ABC):
    """A consumer-group role: subclass it, pass its ``RoleSpec`` to ``__init__`` and write
    ``handle``; ``run(stop)`` is the template."""

    def __init__(
        self, settings: Settings, kafka: Kafka, metrics: RoleMetrics, spec: RoleSpec
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.metrics = metrics
        self.spec = spec
        self.group_id = f"{settings.app_id}-{spec.name}"
        self._producer: AIOKafkaProducer | None = None
        self._offsets: OffsetTracker[TopicPartition] = OffsetTracker()
        self._tasks: dict[asyncio.Task[None], tuple[TopicPartition, int]] = {}
        self._lag_due = 0.0

    # --- what a role writes ---

    @abstractmethod
    async def handle(self, messages: list[Message]) -> None:
        """Process ``messages``; return once every output of them is acknowledged. An exception
        is a bug in the role, not a message's fault: the role stops and replays on restart."""

    async def start(self) -> None:  # noqa: B027 (an optional hook: empty unless a role needs it)
        """Before the first poll, with the producer started."""

    async def tick(self) -> None:  # noqa: B027 (an optional hook: empty unless a role needs it)
        """After every poll, once finished messages are committed."""

    async def finish(self) -> None:  # noqa: B027 (an optional hook: empty unless a role needs it)
        """On a clean stop, after the messages in hand settled."""

    async def close(self) -> None:  # noqa: B027 (an optional hook: empty unless a role needs it)
        """Always, last, before the consumer and the producer stop."""

    # --- what the template gives it ---

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError(f"{self.spec.name}: no producer (RoleSpec.producer) or not running")
        return self._producer

    @property
    def in_flight(self) -> int:
        """Messages handed to ``handle`` and not finished (concurrent roles)."""
        return len(self._tasks)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; commits only positions whose outputs are acknowledged."""
        spec = self.spec
        topics = [self.settings.topics.name(t) for t in spec.topics]
        consumer = group_consumer(self.settings, self.kafka, self.group_id, **spec.consumer)
        consumer.subscribe(topics, listener=_ReleaseOnRevoke(self, consumer))
        producer = None
        if spec.producer is not None:
            producer = AIOKafkaProducer(**client_kwargs(self.kafka), **spec.producer)
            await producer.start()
            self._producer = producer
        try:
            await consumer.start()
            await self.start()
            while not stop.is_set():
                await self._poll(consumer)
                await self._settle(consumer)
                await self._report_lag(consumer)
                self.metrics.health.consuming(len(consumer.assignment()))
                await self.tick()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=spec.grace_s)
                await self._settle(consumer)
                if self._tasks:
                    log.warning(
                        "%s: stopping with %d messages in hand; they will be replayed",
                        spec.name,
                        len(self._tasks),
                    )
            await self.finish()
        finally:
            await self._drop(list(self._tasks))
            try:
                await self.close()
            finally:
                await consumer.stop()
                if producer is not None:
                    await producer.stop()
                self._producer = None

    async def _poll(self, consumer: AIOKafkaConsumer) -> None:
        spec = self.spec
        room = spec.max_records if spec.concurrency is None else spec.concurrency - self.in_flight
        if room <= 0:  # full: wait for a message to finish rather than fetch more
            await asyncio.wait(
                list(self._tasks), timeout=spec.poll_ms / 1000, return_when="FIRST_COMPLETED"
            )
            return
        batches = await consumer.getmany(timeout_ms=spec.poll_ms, max_records=room)
        read = [(tp, message) for tp, messages in batches.items() for message in messages]
        for tp, message in read:
            self._offsets.read(tp, message.offset)
        if spec.concurrency is not None:
            for tp, message in read:
                self._tasks[asyncio.create_task(self.handle([message]))] = (tp, message.offset)
        elif read:
            await self.handle([message for _, message in read])
            for tp, message in read:
                self._offsets.finish(tp, message.offset)

    async def _settle(self, consumer: AIOKafkaConsumer) -> None:
        """Mark finished messages done and commit the positions that moved."""
        for task in [t for t in self._tasks if t.done()]:
            tp, offset = self._tasks.pop(task)
            task.result()  # a bug in the role, not a message's fault: crash, replay on restart
            self._offsets.finish(tp, offset)
        owned = consumer.assignment()
        positions = {tp: n for tp, n in self._offsets.committable().items() if tp in owned}
        if not positions:
            return
        try:
            await consumer.commit(positions)
        except CommitFailedError as exc:
            # Partitions moved in a rebalance; their new owner replays what was not committed.
            log.warning("%s: commit failed after a rebalance (%s); replayed", self.spec.name, exc)
            return
        self._offsets.committed(positions)
        self._lag_due = 0.0  # report the new positions at once

    async def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Messages behind the high watermark per partition this process owns, from its
        committed position: after each commit, else once a second.

        Read from the consumer's own fetch state: on Tansu the admin API's end offsets are
        wrong, and this costs no request. A partition not fetched yet is left out until it is.
        """
        now = time.monotonic()
        if now < self._lag_due:
            return
        self._lag_due = now + LAG_INTERVAL_S
        lags: dict[tuple[str, int], int] = {}
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            position = self._offsets.position(tp)
            if position is None:  # nothing read since it was assigned: where it fetches from
                with contextlib.suppress(IllegalStateError):  # revoked meanwhile
                    position = await consumer.position(tp)
            if position is not None:
                lags[(tp.topic, tp.partition)] = max(0, high - position)
        self.metrics.report_lag(self.group_id, lags)

    async def _release(self, consumer: AIOKafkaConsumer, revoked: set[TopicPartition]) -> None:
        """Before partitions move: commit what is done, drop the rest (the new owner replays)."""
        await self._settle(consumer)
        await self._drop([t for t, (tp, _) in self._tasks.items() if tp in revoked])
        self._offsets.forget(revoked)

    async def _drop(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            self._tasks.pop(task, None)
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _ReleaseOnRevoke(ConsumerRebalanceListener):
    def __init__(self, role: Role, consumer: AIOKafkaConsumer) -> None:
        self.role = role
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.role._release(self.consumer, set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass


async def create_topics(settings: Settings, kafka: Kafka) -> None:
    """The topics every role may read or write, as configured (existing ones are kept)."""
    topics = settings.topics
    await ensure_topics(kafka, topics.all_names(), topics.partitions, topics.replication_factor)


M = TypeVar("M", bound=RoleMetrics)
# Builds a role around its metrics (the role's own class: ReviewerMetrics for the reviewer…).
Build: TypeAlias = Callable[[Settings, Kafka, M], AbstractAsyncContextManager[Role]]


async def serve(
    settings: Settings, kafka: Kafka, metrics: M, build: Build[M], stop: asyncio.Event
) -> None:
    """Create the topics, serve /metrics, build the role (``build`` also closes what it
    opened) and run it with a heartbeat until ``stop`` is set."""
    await create_topics(settings, kafka)
    metrics.serve(settings.metrics.port, settings.metrics.host)
    async with build(settings, kafka, metrics) as role, metrics.health.heartbeat():
        await role.run(stop)


def run_role(settings: Settings, metrics: type[M], build: Build[M]) -> int:
    """A role command: run the role ``build`` makes until SIGTERM/SIGINT."""
    kafka = kafka_connection(settings)
    return run_until_signalled(
        lambda stop: serve(settings, kafka, metrics(tasks=settings.tasks), build, stop)
    )
