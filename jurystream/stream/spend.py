"""The spend ledger on Kafka: one reviewer budget for every replica, across restarts.

Every reviewer reads the whole ``spend`` topic (no consumer group: each needs every record)
into a ``SpendLedger`` and publishes its own windows, keyed by its replica id. The topic is
compacted, so what is kept is each replica's latest report; at start a reviewer reads it to
the end before its first call, so a restart (or a new replica) sees what was already spent in
the window. The pure window arithmetic is in ``models/reviewer/spend.py`` and ``budget.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from jurystream.config import Settings, Topic
from jurystream.models.reviewer.spend import SpendLedger, WindowReport
from jurystream.stream.broker import ensure_topics
from jurystream.stream.records import Invalid, SpendReport
from jurystream.stream.security import Kafka, client_kwargs
from jurystream.stream.transport import FETCH_MAX_WAIT_MS

log = logging.getLogger(__name__)

# Kept past the longest budget window (a day) even for replicas that stopped reporting.
RETENTION_MS = 3 * 86400 * 1000
CATCH_UP_TIMEOUT_S = 60.0


def replica_id() -> str:
    """Host and pid: a container restarted in place (same hostname, pid 1) resumes its own
    record; a new pod gets a new one, and its predecessor's record still counts."""
    return f"{socket.gethostname()}-{os.getpid()}"


class SharedSpend:
    """``Peers`` for the budget, backed by the spend topic."""

    def __init__(self, settings: Settings, kafka: Kafka, replica: str | None = None) -> None:
        self.settings = settings
        self.kafka = kafka
        self.topic = settings.topics.name(Topic.SPEND)
        self.ledger = SpendLedger(replica or replica_id())
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._reader: asyncio.Task[None] | None = None

    def others(self, length_s: float, index: int) -> float:
        return self.ledger.others(length_s, index)

    def mine(self) -> Sequence[WindowReport]:
        return self.ledger.mine()

    async def start(self) -> None:
        """Create the topic if needed and read it to the end: the window as it stands."""
        await ensure_topics(
            self.kafka,
            [self.topic],
            1,
            self.settings.topics.replication_factor,
            {"cleanup.policy": "compact,delete", "retention.ms": str(RETENTION_MS)},
        )
        self._producer = AIOKafkaProducer(**client_kwargs(self.kafka), acks="all", linger_ms=0)
        await self._producer.start()
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        await consumer.start()
        self._consumer = consumer
        partitions = [
            TopicPartition(self.topic, p)
            for p in sorted(await self._producer.partitions_for(self.topic))
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"could not read {self.topic} to its end in {CATCH_UP_TIMEOUT_S:.0f}s: "
                    "check the broker, or that the topic is readable by this user"
                )
            await self._read_once()
        log.info(
            "spend ledger: %d replicas on %s, this one %s",
            len(self.ledger.replicas()),
            self.topic,
            self.ledger.me,
        )
        self._reader = asyncio.create_task(self._follow())

    async def _read_once(self) -> None:
        assert self._consumer is not None
        batches = await self._consumer.getmany(timeout_ms=200)
        for messages in batches.values():
            for msg in messages:
                if msg.value is None:
                    continue
                report = SpendReport.parse(msg.value, msg.key)
                if isinstance(report, Invalid):
                    log.warning("skipping %s@%d: %s", self.topic, msg.offset, report.reason)
                    continue
                self.ledger.apply(report.replica, report.windows)

    async def _follow(self) -> None:
        while True:
            try:
                await self._read_once()
            except KafkaError as exc:  # the consumer reconnects; the budget waits meanwhile
                log.warning("reading %s: %s", self.topic, exc)
                await asyncio.sleep(1.0)

    async def publish(self, reports: Sequence[WindowReport]) -> None:
        """Send this replica's windows and wait for the broker; a failure is logged, not
        raised: the next report carries the whole state again."""
        if self._producer is None:
            return
        self.ledger.apply(self.ledger.me, reports)
        report = SpendReport.of(self.ledger.me, reports, time.time())
        try:
            await self._producer.send_and_wait(self.topic, report.to_bytes(), key=report.key)
        except KafkaError as exc:
            log.warning("could not report spend on %s: %s", self.topic, exc)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
