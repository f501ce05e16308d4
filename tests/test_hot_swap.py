"""Hot swap on a real broker: workers follow model-updates between batches, without loss.

The new version of ``tfidf0`` is trained on inverted labels, so it votes the opposite way on
most posts: each output's vote then shows which version really scored it, and the test checks
that against the version the output names.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path

from aiokafka import AIOKafkaProducer

from jurystream.config import Settings, TopicSettings
from jurystream.models.juror import load_juror
from jurystream.models.registry import Registry
from jurystream.models.sklearn_juror import build_sklearn_juror
from jurystream.stream.client import Record, read_records
from jurystream.stream.feed import LABELS, generate_posts, labeled_examples
from jurystream.stream.updates import announce, model_update
from tests.fixtures.processes import Roles
from tests.test_registry import corrupt

JURORS = ("tfidf0", "tfidf1", "tfidf2")
OUTPUTS = ("labels", "review", "dead-letters")


def registry_with_jurors(tmp_path: Path, sklearn_jurors: list[Path]) -> Registry:
    registry = Registry(tmp_path / "registry")
    for directory in sklearn_jurors:
        registry.publish(directory)
    assert {n: registry.serving_version(n) for n in JURORS} == dict.fromkeys(JURORS, "1")
    return registry


def inverted_juror(tmp_path: Path, name: str) -> Path:
    """A juror that learned the opposite labels: it disagrees with v1 on most posts."""
    texts, labels = labeled_examples(80, seed=1)
    return build_sklearn_juror(
        texts, [1 - y for y in labels], LABELS, tmp_path / f"{name}-inverted", name=name
    )


def start_worker(roles: Roles, registry: Registry) -> None:
    args = [a for name in JURORS for a in ("--juror", name)]
    roles.start("worker", "--batch-size", "8", *args, env={"JURYSTREAM_REGISTRY": registry.url})


async def stream_and_announce(
    roles: Roles,
    n: int,
    rate: float,
    announce_after: int,
    announcements: list[tuple[Registry, str, str]],
) -> tuple[dict[str, tuple[int, int]], list[Record]]:
    """Feed ``n`` posts at ``rate``/s; promote and announce once ``announce_after`` outputs came.

    Returns where each post went in the posts topic (partition, offset) and every output.
    """
    settings = Settings(topics=TopicSettings(prefix=roles.prefix))
    items = list(generate_posts(n, seed=5, id_prefix="swap"))
    placed: dict[str, tuple[int, int]] = {}
    seen: list[Record] = []

    async def feed() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=roles.bootstrap, linger_ms=2)
        await producer.start()
        try:
            start = time.monotonic()
            for i, item in enumerate(items):
                meta = await (await producer.send(roles.topic("posts"), item.value, key=item.key))
                placed[item.key.decode()] = (meta.partition, meta.offset)
                ahead = (i + 1) / rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        finally:
            await producer.stop()

    async def swap_midway() -> None:
        while len(seen) < announce_after:
            await asyncio.sleep(0.05)
        for registry, name, version in announcements:
            registry.promote(name, version)  # what the trainer and `models promote` do
            await announce(settings, roles.bootstrap, [model_update(registry, name, version)])
            await asyncio.sleep(1.0)

    feeding = asyncio.create_task(feed())
    swapping = asyncio.create_task(swap_midway())
    expected = {i.key.decode() for i in items}
    records = await read_records(
        roles.bootstrap,
        [roles.topic(t) for t in OUTPUTS],
        until=lambda out: expected <= {r.key for r in out},
        timeout_s=120,
        on_record=seen.append,
    )
    await feeding
    await swapping
    return placed, records


def votes_of(record: Record, juror: str) -> str:
    (vote,) = [v for v in record.value["votes"] if v["juror"] == juror]
    return str(vote["label"])


def test_hot_swap_mid_stream_loses_nothing_and_labels_name_their_version(
    roles: Roles, sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    registry = registry_with_jurors(tmp_path, sklearn_jurors)
    start_worker(roles, registry)
    v2 = registry.publish(inverted_juror(tmp_path, "tfidf0"), name="tfidf0", promote=False)
    assert v2 == "2"
    placed, records = asyncio.run(
        stream_and_announce(
            roles, 2400, rate=300, announce_after=400, announcements=[(registry, "tfidf0", v2)]
        )
    )

    by_id = Counter(r.key for r in records)
    assert set(by_id) == set(placed), roles.logs()
    assert all(n == 1 for n in by_id.values()), [k for k, n in by_id.items() if n > 1]
    assert not [r for r in records if r.topic.endswith("dead-letters")]

    # Every output names the version that scored it: its tfidf0 vote is that version's answer.
    texts = {i.key.decode(): i.value for i in generate_posts(2400, seed=5, id_prefix="swap")}
    models = {v: load_juror(registry.local_dir("tfidf0", v)) for v in ("1", "2")}
    ids = sorted(placed)
    post_texts = [json.loads(texts[i])["text"] for i in ids]
    answers = {
        v: dict(zip(ids, (LABELS[k] for k in m.predict_proba(post_texts).argmax(1)), strict=True))
        for v, m in models.items()
    }
    disagree = sum(answers["1"][i] != answers["2"][i] for i in ids)
    assert disagree > len(ids) // 2  # the two versions are told apart on most posts
    versions: Counter[str] = Counter()
    for r in records:
        served = r.value["model_versions"]
        assert served["tfidf1"] == served["tfidf2"] == "1"
        versions[served["tfidf0"]] += 1
        assert votes_of(r, "tfidf0") == answers[served["tfidf0"]][r.key], (r.key, served)
    assert versions["1"] >= 400 and versions["2"] >= 400, versions

    # Per partition, in input order: v1 up to the swap, v2 after it, never back.
    sequence: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for r in records:
        partition, offset = placed[r.key]
        sequence[partition].append((offset, r.value["model_versions"]["tfidf0"]))
    for partition, items in sequence.items():
        order = [v for _, v in sorted(items)]
        assert order == sorted(order), f"partition {partition} went back to v1 after v2"
    assert "tfidf0 v2 loaded" in roles.logs(tail=100_000)


def test_corrupt_announced_version_is_refused_and_old_keeps_serving(
    roles: Roles, sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    registry = registry_with_jurors(tmp_path, sklearn_jurors)
    start_worker(roles, registry)
    bad = registry.publish(inverted_juror(tmp_path, "tfidf1"), name="tfidf1", promote=False)
    good_source = tmp_path / "tfidf1-copy"
    shutil.copytree(sklearn_jurors[1], good_source)
    good = registry.publish(good_source, name="tfidf1", promote=False)
    update_bad = model_update(registry, "tfidf1", bad)  # checksums taken before the damage
    corrupt(registry.local_dir("tfidf1", bad), "flipped")

    async def run() -> tuple[dict[str, tuple[int, int]], list[Record]]:
        settings = Settings(topics=TopicSettings(prefix=roles.prefix))
        await announce(settings, roles.bootstrap, [update_bad])
        return await stream_and_announce(
            roles, 1200, rate=300, announce_after=600, announcements=[(registry, "tfidf1", good)]
        )

    placed, records = asyncio.run(run())
    assert {r.key for r in records} == set(placed), roles.logs()
    served = Counter(r.value["model_versions"]["tfidf1"] for r in records)
    # The corrupt version never served; the worker kept labeling with v1 and then took the
    # next good announcement, so the follower survived the refusal.
    assert bad not in served, served
    assert served["1"] > 0 and served[good] > 0, served
    logs = roles.logs(tail=100_000)
    assert f"juror tfidf1 v{bad} refused, v1 keeps serving" in logs, logs
    assert "sha256" in logs.split("refused", 1)[1].splitlines()[0]
