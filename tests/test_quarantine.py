"""A message that keeps crashing the worker is quarantined; its partition keeps labeling."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from jurystream.stream.client import Record, produce, read_records
from jurystream.stream.quarantine import AttemptLedger
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
        "JURYSTREAM_JURY__MAX_ATTEMPTS": "2",
        "JURYSTREAM_TOPICS__PARTITIONS": "1",
    }
    args = ("worker", "--batch-size", "4", *juror_args(sklearn_jurors))
    workers = [roles.start(*args, env=env)]
    posts = [(f"p{i}", f"post number {i} about the weather") for i in range(12)]
    posts.insert(5, ("poison", "POISON-PILL in a post"))
    asyncio.run(
        produce(
            roles.bootstrap,
            roles.topic("posts"),
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
    assert letter.topic == roles.topic("dead-letters")
    assert letter.value["stage"] == "quarantine"
    assert "crashed 2 times" in letter.value["error"]
    assert all(not by_key[k].topic.endswith("dead-letters") for k in expected - {"poison"})
    assert len(workers) == 3, "two crashes, then the quarantine"
    assert workers[-1].alive
