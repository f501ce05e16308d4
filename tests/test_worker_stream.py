"""The worker on a real Tansu broker: every message read ends in exactly one place."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter
from pathlib import Path

from jurystream.config import Topic
from jurystream.stream.client import Record, produce, read_records
from jurystream.stream.feed import generate_posts
from tests.fixtures.processes import Roles

OUTPUTS = (Topic.LABELS, Topic.REVIEW, Topic.DEAD_LETTERS)


def feed(roles: Roles, n: int, seed: int = 0, bad_every: int = 0, prefix: str = "post") -> set[str]:
    items = list(generate_posts(n, seed=seed, bad_every=bad_every, id_prefix=prefix))
    asyncio.run(
        produce(roles.bootstrap, roles.topic(Topic.POSTS), [(i.key, i.value) for i in items])
    )
    return {i.key.decode() for i in items}


def outputs(roles: Roles, expected: set[str], timeout_s: float = 90.0) -> list[Record]:
    """Everything written to the output topics, read until every expected id has arrived."""

    def done(records: list[Record]) -> bool:
        return expected <= {r.key for r in records}

    return asyncio.run(
        read_records(
            roles.bootstrap, [roles.topic(t) for t in OUTPUTS], until=done, timeout_s=timeout_s
        )
    )


def juror_args(jurors: list[Path]) -> list[str]:
    return [arg for j in jurors for arg in ("--juror", str(j))]


def test_every_post_ends_in_exactly_one_output(roles: Roles, sklearn_jurors: list[Path]) -> None:
    roles.start("worker", *juror_args(sklearn_jurors))
    ids = feed(roles, 400, bad_every=25)
    everything = outputs(roles, ids)
    # An audit case is a measurement beside the post's label, not a second fate of the post.
    audits = [r for r in everything if r.topic.endswith("review") and r.value["kind"] == "audit"]
    records = [r for r in everything if r not in audits]
    labeled = {r.key for r in records if r.topic.endswith("labels")}
    assert all(r.key in labeled for r in audits), "an audited post keeps the jury's label"
    by_id = Counter(r.key for r in records)
    assert set(by_id) == ids, roles.logs()
    assert all(n == 1 for n in by_id.values()), [k for k, n in by_id.items() if n > 1]
    topics = Counter(r.topic.removeprefix(roles.prefix) for r in records)
    assert topics["dead-letters"] == 16
    assert topics["labels"] > 0 and topics["review"] > 0, topics
    for r in records:
        if r.topic.endswith("labels"):
            assert r.value["source"] == "jury"
            assert r.value["label"] in ("offensive", "not-offensive")
            assert set(r.value["model_versions"]) == {"tfidf0", "tfidf1", "tfidf2"}
            assert len(r.value["votes"]) == 3
        elif r.topic.endswith("review"):
            assert r.value["reason"]
            assert r.value["text"]
            assert len(r.value["votes"]) == 3


BAD_INPUTS: dict[str, bytes] = {
    "not JSON": b"hello there",
    "no text": json.dumps({"id": "x", "body": "hi"}).encode(),
    "empty text": json.dumps({"id": "x", "text": ""}).encode(),
    "blank text": json.dumps({"id": "x", "text": " \n\t "}).encode(),
    "1 MB of text": json.dumps({"id": "x", "text": "a" * 1_000_000}).encode(),
    "text is a number": json.dumps({"id": "x", "text": 12}).encode(),
    "text is null": json.dumps({"id": "x", "text": None}).encode(),
    "text is a list": json.dumps({"id": "x", "text": ["a"]}).encode(),
    "id is a bool": json.dumps({"id": True, "text": "hi"}).encode(),
    "meta not an object": json.dumps({"id": "x", "text": "hi", "meta": 3}).encode(),
    "invalid UTF-8": b'{"id": "x", "text": "\xff\xfe"}',
    "raw binary": bytes(range(256)) * 4,
    "a JSON list": b'["x", "hello"]',
    "a JSON string": b'"hello"',
    "empty value": b"",
    "truncated JSON": b'{"id": "x", "text": "hel',
}


def test_bad_input_is_dead_lettered_with_reason_and_worker_keeps_going(
    roles: Roles, sklearn_jurors: list[Path]
) -> None:
    roles.start("worker", *juror_args(sklearn_jurors))
    # The JSON ids match the keys, so every dead letter is keyed by its message id.
    bad = [
        (f"bad-{i}".encode(), raw.replace(b'"x"', f'"bad-{i}"'.encode()))
        for i, raw in enumerate(BAD_INPUTS.values())
    ]
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.POSTS), bad))
    good = feed(roles, 20, prefix="after-bad")  # the worker must still be labeling
    expected = {k.decode() for k, _ in bad} | good
    records = outputs(roles, expected)
    letters = {r.key: r.value for r in records if r.topic.endswith("dead-letters")}
    assert set(letters) == {k.decode() for k, _ in bad}, roles.logs()
    for (key, raw), kind in zip(bad, BAD_INPUTS, strict=True):
        letter = letters[key.decode()]
        assert letter["error"], kind
        assert letter["stage"] == "validation"
        kept = base64.b64decode(letter["original_b64"])
        assert letter["original_size"] == len(raw), kind
        assert kept == raw[: len(kept)] and (kept == raw or letter["truncated"]), kind
        assert letter["source"]["topic"] == roles.topic(Topic.POSTS)
    assert "over the" in letters["bad-4"]["error"]
    assert letters["bad-4"]["truncated"] is True
    assert "UTF-8" in letters["bad-10"]["error"]
    assert good <= {r.key for r in records if not r.topic.endswith("dead-letters")}


def test_kill_9_mid_stream_loses_nothing(roles: Roles, sklearn_jurors: list[Path]) -> None:
    first = roles.start("worker", "--batch-size", "8", *juror_args(sklearn_jurors))
    ids = feed(roles, 3000)

    def some_labeled(records: list[Record]) -> bool:
        return len(records) >= 200

    asyncio.run(
        read_records(
            roles.bootstrap, [roles.topic(t) for t in OUTPUTS], until=some_labeled, timeout_s=60
        )
    )
    first.kill9()
    roles.start("worker", "--batch-size", "8", *juror_args(sklearn_jurors))
    records = outputs(roles, ids, timeout_s=120)
    missing = ids - {r.key for r in records}
    assert not missing, f"{len(missing)} ids lost, e.g. {sorted(missing)[:5]}\n{roles.logs()}"


def test_two_workers_share_four_partitions(roles: Roles, sklearn_jurors: list[Path]) -> None:
    a = roles.start("worker", *juror_args(sklearn_jurors))
    b = roles.start("worker", *juror_args(sklearn_jurors))
    time.sleep(2)
    ids = feed(roles, 2000)
    records = outputs(roles, ids, timeout_s=120)
    assert ids <= {r.key for r in records}, roles.logs()
    assert a.alive and b.alive
    # Both processes labeled part of the stream.
    assert len({r.value["worker"] for r in records}) == 2, Counter(
        r.value["worker"] for r in records
    )


def test_a_multi_task_worker_gives_each_post_one_fate_with_every_task(
    roles: Roles, sklearn_jurors: list[Path], multihead_dir: Path, tmp_path: Path
) -> None:
    """Three tasks from one multi-head juror (and a TF-IDF juror on one of them): a settled
    post's label holds every task; an unsettled one is one review case asking only the tasks
    the jury could not settle (here: the two topic jurors disagree), carrying the others."""
    config = tmp_path / "tasks.toml"
    config.write_text(
        f"""
[tasks.topic]
labels = ["not-offensive", "offensive"]
jurors = ["{multihead_dir}", "{sklearn_jurors[0]}"]
policy = "majority"
threshold = 0.5

[tasks.length]
labels = ["short", "long"]
jurors = ["{multihead_dir}"]
threshold = 0.5

[tasks.tagged]
labels = ["tagged", "plain"]
jurors = ["{multihead_dir}"]
threshold = 0.5
"""
    )
    roles.start("worker", env={"JURYSTREAM_CONFIG": str(config)})
    ids = feed(roles, 120, bad_every=30)
    everything = outputs(roles, ids)
    audits = [r for r in everything if r.topic.endswith("review") and r.value["kind"] == "audit"]
    records = [r for r in everything if r not in audits]
    by_id = Counter(r.key for r in records)
    assert set(by_id) == ids and all(n == 1 for n in by_id.values()), roles.logs()
    topics = Counter(r.topic.removeprefix(roles.prefix) for r in records)
    assert topics["dead-letters"] == 4 and topics["labels"] > 0 and topics["review"] > 0, topics
    for r in records:
        if r.topic.endswith("labels"):
            assert list(r.value["tasks"]) == ["topic", "length", "tagged"]
            assert r.value["label"] == r.value["tasks"]["topic"]["label"]
            assert r.value["model_versions"] == {"mh": "1", "tfidf0": "1"}
            assert len(r.value["tasks"]["topic"]["votes"]) == 2
        elif r.topic.endswith("review"):
            asked, settled = r.value["asked"], r.value["settled"]
            assert list(asked) == ["topic"] and list(settled) == ["length", "tagged"]
            assert asked["topic"]["reason"].startswith("no majority")
