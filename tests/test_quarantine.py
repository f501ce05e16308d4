"""A message that keeps crashing the worker is quarantined; its partition keeps labeling."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import pytest

from jurystream.config import BrokerSettings, Settings, Topic, TopicSettings
from jurystream.exporters.metrics import ReviewerMetrics
from jurystream.models.reviewer.base import Case, Outcome, Verdict
from jurystream.models.reviewer.chain import Chain
from jurystream.stream.broker import EmbeddedBroker, ensure_topics
from jurystream.stream.client import Record, produce, read_records
from jurystream.stream.quarantine import AttemptLedger
from jurystream.stream.reviewer import ReviewerRole
from tests.fixtures.processes import Roles
from tests.test_worker_stream import OUTPUTS, juror_args

CRASH_SITE = Path(__file__).parent / "fixtures" / "crash_site"


def test_attempts_survive_a_new_ledger_and_finishing_clears_older_offsets(tmp_path: Path) -> None:
    ledger = AttemptLedger(tmp_path)
    ledger.begin([("posts", 0, 5), ("posts", 0, 6), ("posts", 1, 5)])
    ledger.begin([("posts", 0, 6)])
    again = AttemptLedger(tmp_path)  # a restarted process
    assert again.attempts([("posts", 0, 5), ("posts", 0, 6), ("posts", 1, 5), ("posts", 0, 7)]) == [
        1,
        2,
        1,
        0,
    ]
    again.finish([("posts", 0, 6)])
    assert again.attempts([("posts", 0, 5), ("posts", 0, 6), ("posts", 1, 5)]) == [0, 0, 1]
    (tmp_path / "posts" / "1.json").write_text("{torn")
    assert again.attempts([("posts", 1, 5)]) == [0]  # unreadable: start counting again


def test_a_crashing_message_cannot_stop_its_partition(
    roles: Roles, sklearn_jurors: list[Path]
) -> None:
    """The worker aborts (as on a native crash) on one post; a supervisor restarts it, as
    Kubernetes would. After ``max_attempts`` crashes the post is dead-lettered, and the posts
    after it in the same partition are labeled."""
    env = {
        "PYTHONPATH": os.pathsep.join([str(CRASH_SITE), os.environ.get("PYTHONPATH", "")]),
        "CRASH_ON_TEXT": "POISON-PILL",
        "JURYSTREAM_MAX_ATTEMPTS": "2",
        "JURYSTREAM_TOPICS__PARTITIONS": "1",
    }
    args = ("worker", "--batch-size", "4", *juror_args(sklearn_jurors))
    workers = [roles.start(*args, env=env)]
    posts = [(f"p{i}", f"post number {i} about the weather") for i in range(12)]
    posts.insert(5, ("poison", "POISON-PILL in a post"))
    asyncio.run(
        produce(
            roles.bootstrap,
            roles.topic(Topic.POSTS),
            [(k.encode(), json.dumps({"id": k, "text": t}).encode()) for k, t in posts],
        )
    )
    expected = {k for k, _ in posts}

    def supervised_until_done(records: list[Record]) -> bool:
        if not workers[-1].alive and len(workers) < 6:
            workers.append(roles.start(*args, env=env))
        return expected <= {r.key for r in records}

    records = asyncio.run(
        read_records(
            roles.bootstrap,
            [roles.topic(t) for t in OUTPUTS],
            until=supervised_until_done,
            timeout_s=120,
        )
    )
    by_key = {r.key: r for r in records}
    assert expected <= set(by_key), f"missing {expected - set(by_key)}\n{roles.logs()}"
    letter = by_key["poison"]
    assert letter.topic == roles.topic(Topic.DEAD_LETTERS)
    assert letter.value["stage"] == "quarantine"
    assert "crashed 2 times" in letter.value["error"]
    assert all(not by_key[k].topic.endswith("dead-letters") for k in expected - {"poison"})
    assert len(workers) == 3, "two crashes, then the quarantine"
    assert workers[-1].alive


class Exploding:
    """A tier with a bug one case triggers (a post it cannot handle); it labels the rest."""

    name = "reviewer:exploding"

    async def review(self, case: Case) -> Outcome:
        if "POISON-PILL" in case.text:
            raise RuntimeError("tier bug on this post")
        return Verdict("offensive", 0.9, self.name)


async def test_a_case_that_crashes_the_reviewer_is_quarantined(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """The reviewer crashes on the case (as before), counts it on disk, and on the restart
    that reaches max_attempts dead-letters it; the cases beside it are labeled."""
    run = uuid.uuid4().hex[:8]
    settings = Settings(
        app_id=f"jurystream-{run}",
        data_dir=tmp_path,
        max_attempts=2,
        broker=BrokerSettings(bootstrap=broker.bootstrap),
        topics=TopicSettings(prefix=f"t{run}.", partitions=1),
    )
    topics = settings.topics
    await ensure_topics(broker.bootstrap, topics.all_names(), 1)
    texts = [f"case {i}" for i in range(6)]
    texts[2] = "POISON-PILL case"
    cases = [(f"c{i}", json.dumps({"id": f"c{i}", "text": t})) for i, t in enumerate(texts)]
    await produce(
        broker.bootstrap, topics.name(Topic.REVIEW), [(k.encode(), v.encode()) for k, v in cases]
    )

    def role() -> ReviewerRole:
        return ReviewerRole(settings, broker.bootstrap, Chain([Exploding()]), ReviewerMetrics())

    with pytest.raises(RuntimeError, match="tier bug"):  # the first attempt crashes the role
        await role().run(asyncio.Event())
    stop = asyncio.Event()
    task = asyncio.create_task(role().run(stop))
    expected = {f"c{i}" for i in range(6)}
    records = await read_records(
        broker.bootstrap,
        [topics.name(Topic.LABELS), topics.name(Topic.DEAD_LETTERS)],
        until=lambda recs: expected <= {r.key for r in recs} or task.done(),
        timeout_s=60,
    )
    stop.set()
    await asyncio.wait_for(task, 30)  # the restarted role never crashed
    by_key = {r.key: r for r in records}
    assert expected <= set(by_key)
    letter = by_key["c2"]
    assert letter.topic == topics.name(Topic.DEAD_LETTERS)
    assert "quarantined: reviewing it raised RuntimeError" in letter.value["error"]
    assert all(by_key[k].topic == topics.name(Topic.LABELS) for k in expected - {"c2"})
