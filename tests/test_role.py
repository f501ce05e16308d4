"""The role template on the embedded broker: a role is its handler; consuming, committing only
what is done, lag, hooks and stopping are the template's."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from jurystream.config import BrokerSettings, Settings, Topic, TopicSettings
from jurystream.exporters.metrics import RoleMetrics
from jurystream.stream.broker import EmbeddedBroker, ensure_topics
from jurystream.stream.client import produce
from jurystream.stream.role import Message, Role, RoleSpec


def _settings(bootstrap: str, partitions: int) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(
        app_id=f"jurystream-{run}",
        broker=BrokerSettings(bootstrap=bootstrap),
        topics=TopicSettings(prefix=f"t{run}.", partitions=partitions),
    )


class RecorderMetrics(RoleMetrics):
    role = "recorder"


class Recorder(Role):
    """Records what it is handed and which hooks ran; ``hold`` ids wait until released."""

    def __init__(
        self, settings: Settings, concurrency: int | None = None, hold: frozenset[str] = frozenset()
    ) -> None:
        spec = RoleSpec("recorder", (Topic.FEEDBACK,), concurrency=concurrency, grace_s=0.2)
        super().__init__(settings, settings.broker.bootstrap or "", RecorderMetrics(), spec)
        self.seen: list[str] = []
        self.batches: list[int] = []
        self.hooks: list[str] = []
        self.hold = hold
        self.unblock = asyncio.Event()

    async def start(self) -> None:
        self.hooks.append("start")

    async def handle(self, messages: list[Message]) -> None:
        self.batches.append(len(messages))
        for message in messages:
            key = message.key.decode()
            if key in self.hold:
                await self.unblock.wait()
            self.seen.append(key)

    async def tick(self) -> None:
        if self.hooks[-1] != "tick":
            self.hooks.append("tick")

    async def finish(self) -> None:
        self.hooks.append("finish")

    async def close(self) -> None:
        self.hooks.append("close")


async def _run_until(role: Role, done: Any, timeout_s: float = 60.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(role.run(stop))
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done() and not task.done() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 30)


async def _feed(settings: Settings, ids: list[str]) -> None:
    bootstrap = settings.broker.bootstrap or ""
    await ensure_topics(bootstrap, settings.topics.all_names(), settings.topics.partitions)
    items = [(i.encode(), b"{}") for i in ids]
    await produce(bootstrap, settings.topics.name(Topic.FEEDBACK), items)


async def test_a_batch_role_gets_every_message_once_and_resumes_after_its_commit(
    broker: EmbeddedBroker,
) -> None:
    settings = _settings(broker.bootstrap, partitions=2)
    first = [f"m{i}" for i in range(20)]
    await _feed(settings, first)
    role = Recorder(settings)
    await _run_until(role, lambda: len(role.seen) >= 20)
    assert sorted(role.seen) == sorted(first)
    assert role.hooks == ["start", "tick", "finish", "close"]
    lag = role.metrics.registry.get_sample_value(
        "jurystream_consumer_lag",
        {"group": role.group_id, "topic": settings.topics.name(Topic.FEEDBACK), "partition": "0"},
    )
    assert lag == 0.0  # committed up to the end

    await _feed(settings, ["m20", "m21"])
    again = Recorder(settings)  # the same group: starts where the first one committed
    await _run_until(again, lambda: len(again.seen) >= 2)
    assert sorted(again.seen) == ["m20", "m21"]


async def test_a_concurrent_role_commits_past_a_message_only_once_it_is_done(
    broker: EmbeddedBroker,
) -> None:
    """m2 never finishes: m3..m5 finish behind it, but the committed position stays at m2, so
    the next process of the group is handed m2 and what followed it again."""
    settings = _settings(broker.bootstrap, partitions=1)
    ids = [f"m{i}" for i in range(6)]
    await _feed(settings, ids)
    role = Recorder(settings, concurrency=4, hold=frozenset({"m2"}))
    await _run_until(role, lambda: len(role.seen) >= 5)
    assert sorted(role.seen) == ["m0", "m1", "m3", "m4", "m5"]
    assert set(role.batches) == {1}  # one message per task
    assert role.in_flight == 0  # m2 was dropped at the stop, after its grace

    again = Recorder(settings, concurrency=4)
    await _run_until(again, lambda: len(again.seen) >= 4)
    assert sorted(again.seen) == ["m2", "m3", "m4", "m5"]


class Crasher(Recorder):
    async def handle(self, messages: list[Message]) -> None:
        raise RuntimeError("a bug in the role")


async def test_a_role_that_raises_stops_without_committing_so_the_batch_replays(
    broker: EmbeddedBroker,
) -> None:
    settings = _settings(broker.bootstrap, partitions=1)
    await _feed(settings, ["m0", "m1"])
    crasher = Crasher(settings)
    with pytest.raises(RuntimeError, match="a bug in the role"):
        await asyncio.wait_for(crasher.run(asyncio.Event()), 60)
    assert crasher.hooks == ["start", "close"]  # closed, not finished
    again = Recorder(settings)
    await _run_until(again, lambda: len(again.seen) >= 2)
    assert sorted(again.seen) == ["m0", "m1"]
