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
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from jurystream.cli import app
from jurystream.config import Settings, Topic, TopicSettings
from jurystream.exporters.metrics import WorkerMetrics
from jurystream.models.serving.juror import load_juror
from jurystream.models.serving.registry import Registry
from jurystream.models.training.sklearn_juror import build_sklearn_juror
from jurystream.stream.client import Record, produce, read_records
from jurystream.stream.feed import LABELS, generate_posts, labeled_examples
from jurystream.stream.records import Invalid, ModelUpdate
from jurystream.stream.updates import ModelUpdateFollower, announce, model_update
from tests.fixtures.processes import Roles
from tests.test_registry import corrupt

JURORS = ("tfidf0", "tfidf1", "tfidf2")
OUTPUTS = (Topic.LABELS, Topic.REVIEW, Topic.DEAD_LETTERS)
Action = Callable[[], None]  # a swap done by hand or by the CLI, in a thread


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
    # Wait until it labels, so the timed stream below is not swallowed as one startup backlog.
    (probe,) = generate_posts(1, seed=9, id_prefix="probe")
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.POSTS), [(probe.key, probe.value)]))
    arrived = asyncio.run(
        read_records(
            roles.bootstrap,
            [roles.topic(t) for t in OUTPUTS],
            until=lambda out: any(r.key == probe.key.decode() for r in out),
            timeout_s=60,
        )
    )
    assert arrived, roles.logs()


def promote_and_announce(roles: Roles, registry: Registry, name: str, version: str) -> Action:
    """What the trainer does with an accepted candidate: promote it, then announce it."""
    settings = Settings(topics=TopicSettings(prefix=roles.prefix))

    def action() -> None:
        registry.promote(name, version)
        asyncio.run(announce(settings, roles.bootstrap, [model_update(registry, name, version)]))

    return action


async def stream_and_swap(
    roles: Roles, n: int, rate: float, swap_after: int, actions: list[Action]
) -> tuple[dict[str, tuple[int, int]], list[Record]]:
    """Feed ``n`` posts at ``rate``/s; run ``actions`` once ``swap_after`` outputs came.

    Returns where each post went in the posts topic (partition, offset) and every output.
    """
    items = list(generate_posts(n, seed=5, id_prefix="swap"))
    placed: dict[str, tuple[int, int]] = {}
    seen: list[Record] = []

    async def feed() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=roles.bootstrap, linger_ms=2)
        await producer.start()
        try:
            start = time.monotonic()
            for i, item in enumerate(items):
                meta = await (
                    await producer.send(roles.topic(Topic.POSTS), item.value, key=item.key)
                )
                placed[item.key.decode()] = (meta.partition, meta.offset)
                ahead = (i + 1) / rate - (time.monotonic() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        finally:
            await producer.stop()

    async def swap_midway() -> None:
        while len(seen) < swap_after:
            await asyncio.sleep(0.05)
        for action in actions:
            await asyncio.to_thread(action)
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
    return placed, [r for r in records if r.key in placed]


def assert_every_output_once(placed: dict[str, tuple[int, int]], records: list[Record]) -> None:
    """One fate per post; an audit case (a measurement beside the label) is not a fate."""
    records = [r for r in records if r.value.get("kind") != "audit"]
    by_id = Counter(r.key for r in records)
    assert set(by_id) == set(placed)
    assert all(n == 1 for n in by_id.values()), [k for k, n in by_id.items() if n > 1]
    assert not [r for r in records if r.topic.endswith("dead-letters")]


def assert_votes_come_from_named_version(
    records: list[Record], registry: Registry, juror: str
) -> Counter[str]:
    """Each output's vote of ``juror`` is what the version it names answers on that post."""
    texts = {
        i.key.decode(): json.loads(i.value)["text"]
        for i in generate_posts(5000, seed=5, id_prefix="swap")
    }
    named = {r.value["model_versions"][juror] for r in records}
    models = {v: load_juror(registry.local_dir(juror, v)) for v in named}
    ids = sorted(r.key for r in records if r.key is not None)
    answers = {
        v: dict(
            zip(
                ids,
                (LABELS[k] for k in m.predict_proba([texts[i] for i in ids]).argmax(1)),
                strict=True,
            )
        )
        for v, m in models.items()
    }
    if len(answers) == 2:
        first, second = answers.values()
        assert sum(first[i] != second[i] for i in ids) > len(ids) // 2  # told apart on most
    for r in records:
        version = r.value["model_versions"][juror]
        assert votes_of(r, juror) == answers[version][r.key], (r.key, version)
    return Counter(r.value["model_versions"][juror] for r in records)


def versions_in_input_order(
    placed: dict[str, tuple[int, int]], records: list[Record], juror: str
) -> dict[int, list[str]]:
    """Per posts partition, the version that scored each post, in the order posts were read."""
    sequence: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for r in records:
        partition, offset = placed[r.key]
        sequence[partition].append((offset, r.value["model_versions"][juror]))
    return {p: [v for _, v in sorted(items)] for p, items in sequence.items()}


def votes_of(record: Record, juror: str) -> str:
    (vote,) = [v for v in record.value["votes"] if v["juror"] == juror]
    return str(vote["label"])


def test_hot_swap_mid_stream_loses_nothing_and_labels_name_their_version(
    roles: Roles, sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    registry = registry_with_jurors(tmp_path, sklearn_jurors)
    start_worker(roles, registry)
    v2 = registry.publish(inverted_juror(tmp_path, "tfidf0"), name="tfidf0", promote=False)
    swap = promote_and_announce(roles, registry, "tfidf0", v2)
    placed, records = asyncio.run(stream_and_swap(roles, 2400, 300, 400, [swap]))

    assert_every_output_once(placed, records)
    versions = assert_votes_come_from_named_version(records, registry, "tfidf0")
    assert versions["1"] >= 400 and versions["2"] >= 400, versions
    for r in records:
        assert r.value["model_versions"]["tfidf1"] == r.value["model_versions"]["tfidf2"] == "1"
    # Per partition, in input order: v1 up to the swap, v2 after it, never back.
    for partition, order in versions_in_input_order(placed, records, "tfidf0").items():
        assert order == sorted(order), f"partition {partition} went back to v1 after v2"
    assert "tfidf0 v2 loaded" in roles.logs(tail=100_000)


def test_models_rollback_swaps_running_workers_back(
    roles: Roles, sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    registry = registry_with_jurors(tmp_path, sklearn_jurors)
    registry.publish(inverted_juror(tmp_path, "tfidf0"), name="tfidf0")  # v2 serves at start
    start_worker(roles, registry)
    env = {
        "JURYSTREAM_BROKER__BOOTSTRAP": roles.bootstrap,
        "JURYSTREAM_TOPICS__PREFIX": roles.prefix,
        "JURYSTREAM_REGISTRY": registry.url,
    }

    def rollback() -> None:
        result = CliRunner().invoke(app, ["models", "rollback", "tfidf0"], env=env)
        assert result.exit_code == 0, result.output
        assert "announced tfidf0 v1" in result.output

    placed, records = asyncio.run(stream_and_swap(roles, 1500, 300, 400, [rollback]))
    assert_every_output_once(placed, records)
    versions = assert_votes_come_from_named_version(records, registry, "tfidf0")
    assert versions["2"] >= 300 and versions["1"] >= 300, versions
    for partition, order in versions_in_input_order(placed, records, "tfidf0").items():
        assert order == sorted(order, reverse=True), f"partition {partition}: {order}"
    assert registry.serving_version("tfidf0") == "1"


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

    settings = Settings(topics=TopicSettings(prefix=roles.prefix))
    asyncio.run(announce(settings, roles.bootstrap, [update_bad]))
    swap = promote_and_announce(roles, registry, "tfidf1", good)
    placed, records = asyncio.run(stream_and_swap(roles, 1200, 300, 600, [swap]))
    assert_every_output_once(placed, records)
    served = Counter(r.value["model_versions"]["tfidf1"] for r in records)
    # The corrupt version never served; the worker kept labeling with v1 and then took the
    # next good announcement, so the follower survived the refusal.
    assert bad not in served, served
    assert served["1"] > 0 and served[good] > 0, served
    logs = roles.logs(tail=100_000)
    assert f"juror tfidf1 v{bad} refused, v1 keeps serving" in logs, logs
    assert "sha256" in logs.split("refused", 1)[1].splitlines()[0]


def test_follower_counts_swaps_and_refusals_and_ignores_what_it_serves(
    sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    """The follower's decisions without a broker: what it loads, refuses and counts."""
    registry = registry_with_jurors(tmp_path, sklearn_jurors)
    good = registry.publish(sklearn_jurors[0], name="tfidf0", promote=False)
    wrong_labels = tmp_path / "wrong"
    texts, labels = labeled_examples(40, seed=2)
    build_sklearn_juror(texts, labels, ("ok", "not-ok"), wrong_labels, name="tfidf1")
    bad = registry.publish(wrong_labels, name="tfidf1", promote=False)
    metrics = WorkerMetrics()
    swapped: list[tuple[str, str]] = []
    follower = ModelUpdateFollower(
        Settings(),
        "unused:9092",
        dict.fromkeys(JURORS, "1"),
        LABELS,
        lambda juror: swapped.append((juror.name, juror.version)),
        metrics,
    )

    def update(name: str, version: str) -> ModelUpdate:
        parsed = ModelUpdate.parse(model_update(registry, name, version).to_bytes())
        assert isinstance(parsed, ModelUpdate)
        return parsed

    async def scenario() -> list[bool]:
        return [
            await follower.apply(update("tfidf0", "1")),  # already serving: nothing to do
            await follower.apply(update("tfidf0", good)),
            await follower.apply(update("tfidf1", bad)),  # another label set: refused
            await follower.apply(update("tfidf2", "1").model_copy(update={"name": "ghost"})),
        ]

    assert asyncio.run(scenario()) == [False, True, False, False]
    assert swapped == [("tfidf0", good)]
    assert follower.serving == {"tfidf0": good, "tfidf1": "1", "tfidf2": "1"}
    sample = metrics.registry.get_sample_value
    assert sample("jurystream_model_swaps_total", {"juror": "tfidf0", "outcome": "swapped"}) == 1
    assert sample("jurystream_model_swaps_total", {"juror": "tfidf1", "outcome": "refused"}) == 1
    refused = ModelUpdate.parse(b'{"name": "a", "version": "1", "registry": "r"}')
    assert isinstance(refused, Invalid) and "sha256" in refused.reason


def test_a_multi_task_follower_swaps_a_multi_head_juror_into_every_task_or_refuses_it(
    multihead_dir: Path, sklearn_jurors: list[Path], encoder_base: Path, tmp_path: Path
) -> None:
    """A multi-task worker checks labels in its swap (each task its own set): a version that
    lost a head some task needs is refused and the old one keeps serving every task."""
    from jurystream.models.serving.jury import Jury
    from jurystream.models.serving.tasks import TaskJuries, for_task
    from jurystream.models.training.multihead import build_multihead_juror
    from tests.fixtures.jurors import tasks as task_data

    registry = Registry(tmp_path / "registry")
    registry.publish(multihead_dir)
    good = registry.publish(multihead_dir, name="mh", promote=False)
    two_heads = {k: v for k, v in task_data().items() if k != "tagged"}
    lost = build_multihead_juror(
        two_heads,
        tmp_path / "mh-2",
        name="mh",
        base=encoder_base,
        progress=False,
        min_agreement=0.9,
    )
    bad = registry.publish(lost, name="mh", promote=False)
    mh, tfidf = load_juror(multihead_dir), load_juror(sklearn_jurors[0])
    served = TaskJuries(
        {
            "topic": Jury((for_task(mh, "topic"), tfidf), "majority", 0.5),
            "tagged": Jury((for_task(mh, "tagged"),), "unanimous", 0.5),
        }
    )
    holder = [served]

    def swap(juror: object) -> None:
        holder[0] = holder[0].with_juror(juror)  # type: ignore[arg-type]

    metrics = WorkerMetrics()
    follower = ModelUpdateFollower(Settings(), "unused:9092", served.versions, None, swap, metrics)

    async def scenario() -> list[bool]:
        return [
            await follower.apply(model_update(registry, "mh", bad)),
            await follower.apply(model_update(registry, "mh", good)),
        ]

    assert asyncio.run(scenario()) == [False, True]
    assert holder[0].versions == {"mh": good, "tfidf0": "1"}
    assert all(j.versions["mh"] == good for j in holder[0].juries.values())
    sample = metrics.registry.get_sample_value
    assert sample("jurystream_model_swaps_total", {"juror": "mh", "outcome": "refused"}) == 1
