"""Plain aiokafka producers and readers for feeding topics and reading results.

Used by the CLI (`jurystream produce`), the demo and the tests: they talk to the broker the way
any user's service would, outside faust.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from jurystream.config import Settings
from jurystream.stream.security import Kafka, client_kwargs
from jurystream.stream.transport import FETCH_MAX_WAIT_MS


async def produce(
    kafka: Kafka,
    topic: str,
    items: Iterable[tuple[bytes | None, bytes | None]],
    on_sent: Callable[[int], None] | None = None,
    rate: float | None = None,
) -> int:
    """Send (key, value) pairs and wait until the broker has acknowledged every one.

    ``on_sent(n)`` reports acknowledged messages as they come; ``rate`` (messages per second)
    paces the sending, e.g. to replay a file at the speed it would arrive in production.
    """
    producer = AIOKafkaProducer(**client_kwargs(kafka), linger_ms=5, acks="all")
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        pending: list[Any] = []
        for key, value in items:
            delay = started + sent / rate - time.monotonic() if rate else 0.0
            if delay > 0:
                await asyncio.gather(*pending)  # acknowledged while we wait anyway
                if on_sent and pending:
                    on_sent(len(pending))
                pending.clear()
                await asyncio.sleep(delay)
            pending.append(await producer.send(topic, value=value, key=key))
            sent += 1
            if len(pending) >= 500:
                await asyncio.gather(*pending)
                if on_sent:
                    on_sent(len(pending))
                pending.clear()
        await asyncio.gather(*pending)
        if on_sent and pending:
            on_sent(len(pending))
    finally:
        await producer.stop()
    return sent


@dataclass(frozen=True)
class Record:
    topic: str
    key: str | None
    value: dict[str, Any]
    partition: int
    offset: int


async def read_records(
    kafka: Kafka,
    topics: list[str],
    *,
    until: Callable[[list[Record]], bool],
    timeout_s: float = 60.0,
    on_record: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Read the topics from the beginning (no consumer group) until ``until(records)`` holds.

    Returns what was read when the timeout passes, so callers can report what is missing.
    """
    consumer = AIOKafkaConsumer(
        *topics,
        **client_kwargs(kafka),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(out):
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, messages in batches.items():
                for m in messages:
                    key = m.key.decode("utf-8", "replace") if m.key is not None else None
                    rec = Record(
                        tp.topic, key, json.loads(m.value or b"null"), tp.partition, m.offset
                    )
                    out.append(rec)
                    if on_record:
                        on_record(rec)
    finally:
        await consumer.stop()
    return out


def group_consumer(
    settings: Settings, kafka: Kafka, group_id: str, *topics: str, **options: Any
) -> AIOKafkaConsumer:
    """A consumer-group member with manual commits and the broker timeouts from settings.

    Session and rebalance timeouts matter on Tansu (group joins take about half the session
    timeout), so every role's group consumer takes them from one place. ``options`` add to or
    override the defaults (e.g. ``max_poll_interval_ms`` for a role that may block).
    """
    broker = settings.broker
    defaults: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": int(broker.session_timeout_s * 1000),
        "heartbeat_interval_ms": int(broker.heartbeat_interval_s * 1000),
        "rebalance_timeout_ms": int(max(broker.session_timeout_s, 10.0) * 1000),
        "request_timeout_ms": int(broker.request_timeout_s * 1000),
        "fetch_max_wait_ms": broker.fetch_max_wait_ms,  # Tansu holds fetches: see transport
    }
    return AIOKafkaConsumer(
        *topics, **client_kwargs(kafka), group_id=group_id, **{**defaults, **options}
    )


def _json_value(raw: bytes | None) -> dict[str, Any] | None:
    """A record's value as a JSON object, or None (tools that read topics skip the rest)."""
    try:
        value = json.loads(raw or b"null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _json_records(batches: Mapping[TopicPartition, list[Any]]) -> list[Record]:
    """A fetch's records whose values are JSON objects (posts may hold malformed input)."""
    out = []
    for tp, messages in batches.items():
        for m in messages:
            value = _json_value(m.value)
            if value is not None:
                key = m.key.decode("utf-8", "replace") if m.key is not None else None
                out.append(Record(tp.topic, key, value, tp.partition, m.offset))
    return out


async def read_to_end(kafka: Kafka, topics: list[str], timeout_s: float = 60.0) -> list[Record]:
    """Every record now in ``topics`` (no consumer group). Values that are not JSON objects
    are skipped (posts may hold malformed input).

    The end is where fetches come back empty and every partition's position has reached the
    high watermark its last fetch reported: Tansu's ListOffsets answers 1 for any non-empty
    partition, so the end offsets cannot be asked for up front.
    """
    consumer = AIOKafkaConsumer(
        **client_kwargs(kafka),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    out: list[Record] = []
    try:
        await consumer.topics()  # loads the metadata partitions_for_topic reads
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return out
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        empty = 0
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300, max_records=5000)
            out += _json_records(batches)
            empty = 0 if batches else empty + 1
            if empty >= 2 and await _caught_up(consumer, partitions):
                break
    finally:
        await consumer.stop()
    return out


async def _caught_up(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> bool:
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is not None and await consumer.position(tp) < highwater:
            return False
    return True


async def follow(
    kafka: Kafka,
    topics: list[str],
    on_record: Callable[[Record], None],
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    idle_s: float | None = None,
) -> int:
    """Call ``on_record`` for each record of ``topics`` as it arrives (no consumer group);
    stops after ``limit`` records or ``idle_s`` seconds without one. Returns how many came."""
    consumer = AIOKafkaConsumer(
        *topics,
        **client_kwargs(kafka),
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    seen = 0
    last = time.monotonic()
    try:
        while limit is None or seen < limit:
            if idle_s is not None and time.monotonic() - last > idle_s:
                break
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            for record in _json_records(batches):
                on_record(record)
                seen += 1
                last = time.monotonic()
                if limit is not None and seen >= limit:
                    return seen
    finally:
        await consumer.stop()
    return seen
