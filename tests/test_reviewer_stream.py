"""The reviewer role against a real broker (Tansu) and the OpenAI-compatible test server."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from jurystream.config import BrokerSettings, ReviewerSettings, Settings, Topic, TopicSettings
from jurystream.exporters.metrics import ReviewerMetrics
from jurystream.models.reviewer.chain import build_chain
from jurystream.models.reviewer.prompt import extract_post
from jurystream.models.rules.voting import Vote
from jurystream.stream.broker import EmbeddedBroker, ensure_topics
from jurystream.stream.client import Record, produce, read_records
from jurystream.stream.processes import RoleGroup
from jurystream.stream.records import HardSample, LabelRecord, Post, ReviewCase, TaskResult
from jurystream.stream.reviewer import ReviewerRole
from jurystream.testing.openai_server import OpenAIServer, Reply, answers_by_text

KEY_ENV = "JURYSTREAM_TEST_REVIEWER_KEY"
MODEL = "test-model"
SOURCE = f"reviewer:openai:{MODEL}"
LABELS = {"not-offensive": "anything else", "offensive": "insults, slurs or profanity"}


def _gold(i: int) -> str:
    return "offensive" if i % 3 == 0 else "not-offensive"


def _text(i: int) -> str:
    return f"post {i}: {'you clown' if i % 3 == 0 else 'nice game'} #{i}"


def _case(i: int) -> dict[str, object]:
    return {
        "id": f"m{i}",
        "text": _text(i),
        "jury_label": "offensive",
        "jury_confidence": 0.55,
        "votes": [
            {"juror": "a", "label": "offensive", "confidence": 0.55},
            {"juror": "b", "label": "not-offensive", "confidence": 0.6},
        ],
        "reason": "jurors disagree",
        "model_versions": {"a": "v1", "b": "v1"},
        "received_ms": time.time() * 1000,
        "meta": {"gold": _gold(i), "lang": "en"},
    }


def _settings(
    bootstrap: str, server: OpenAIServer, tasks: dict[str, object] | None = None, **reviewer: object
) -> Settings:
    run = uuid.uuid4().hex[:8]
    review = ReviewerSettings.model_validate(
        {
            "chain": ["openai"],
            "base_url": server.base_url,
            "model": MODEL,
            "api_key_env": KEY_ENV,
            "prices": {MODEL: {"input": 1.0, "output": 4.0}},
            "label_descriptions": LABELS,
            "concurrency": 4,
            "max_retries": 1,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.2,
            "timeout_s": 2.0,
            "park_backoff_max_s": 0.5,
            **reviewer,
        }
    )
    return Settings(
        app_id=f"jurystream-{run}",
        broker=BrokerSettings(bootstrap=bootstrap),
        topics=TopicSettings(prefix=f"t{run}.", partitions=2),
        reviewer=review,
        tasks=tasks or {},
    )


async def _produce_cases(settings: Settings, ids: range) -> None:
    bootstrap = settings.broker.bootstrap
    assert bootstrap
    items = [(f"m{i}".encode(), json.dumps(_case(i)).encode()) for i in ids]
    await produce(bootstrap, settings.topics.name(Topic.REVIEW), items)


async def _read(settings: Settings, topic: str, n: int, timeout_s: float = 60.0) -> list[Record]:
    bootstrap = settings.broker.bootstrap
    assert bootstrap
    return await read_records(
        bootstrap,
        [settings.topics.name(topic)],
        until=lambda recs: len({r.key for r in recs}) >= n,
        timeout_s=timeout_s,
    )


class Running:
    def __init__(self, settings: Settings, metrics: ReviewerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


@pytest.fixture
async def reviewer_role(
    broker: EmbeddedBroker, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[object]:
    """A factory: ``await start(**reviewer_settings)`` runs the role in this event loop."""
    monkeypatch.setenv(KEY_ENV, "sk-test")
    started: list[tuple[Running, object]] = []

    async def start(tasks: dict[str, object] | None = None, **reviewer: object) -> Running:
        settings = _settings(broker.bootstrap, openai_server, tasks, **reviewer)
        await ensure_topics(broker.bootstrap, settings.topics.all_names(), 2)
        metrics = ReviewerMetrics()
        chain = build_chain(settings.reviewer, metrics, tasks=settings.tasks)
        running = Running(settings, metrics)
        role = ReviewerRole(settings, broker.bootstrap, chain, metrics)
        running.task = asyncio.create_task(role.run(running.stop))
        started.append((running, chain))
        return running

    yield start
    for running, chain in started:
        running.stop.set()
        if running.task is not None:
            await asyncio.wait_for(running.task, 30)
        await chain.close()  # type: ignore[attr-defined]


async def test_an_outage_delays_labels_but_loses_and_duplicates_none(
    reviewer_role: object, openai_server: OpenAIServer
) -> None:
    n_before, n_total = 10, 30
    openai_server.answer = answers_by_text({_text(i): _gold(i) for i in range(n_total)})
    running: Running = await reviewer_role()  # type: ignore[operator]
    settings = running.settings

    await _produce_cases(settings, range(n_before))
    first = await _read(settings, "labels", n_before)
    assert len({r.key for r in first}) == n_before

    openai_server.outage(5.0)
    outage_ends = time.time() + 5.0
    await _produce_cases(settings, range(n_before, n_total))

    def cases(state: str) -> float | None:
        return running.metrics.registry.get_sample_value(
            "jurystream_review_cases", {"state": state}
        )

    while not cases("parked") and time.time() < outage_ends:  # the dashboard sees them wait
        await asyncio.sleep(0.05)
    assert cases("parked"), "no case was reported parked during the outage"
    assert (cases("in_flight") or 0) >= (cases("parked") or 0)
    labels = await _read(settings, "labels", n_total, timeout_s=90)
    running.stop.set()
    assert running.task is not None
    await asyncio.wait_for(running.task, 30)
    # Read again with the role stopped: a late duplicate would show up here.
    labels = await _read(settings, "labels", n_total + 1, timeout_s=3)
    hard = await _read(settings, "hard_samples", n_total + 1, timeout_s=3)

    keys = Counter(r.key for r in labels)
    assert set(keys) == {f"m{i}" for i in range(n_total)}, "labels lost"
    assert max(keys.values()) == 1, f"duplicated labels: {[k for k, c in keys.items() if c > 1]}"
    for rec in labels:
        i = int(str(rec.key)[1:])
        assert rec.value["label"] == _gold(i)
        assert rec.value["source"] == SOURCE
        assert rec.value["votes"][0] == {"juror": "a", "label": "offensive", "confidence": 0.55}
        assert rec.value["model_versions"] == {"a": "v1", "b": "v1"}
    assert Counter(r.key for r in hard) == keys
    sample = next(r.value for r in hard if r.key == "m3")
    assert sample["label"] == "offensive" and sample["label_source"] == SOURCE
    assert sample["text"] == _text(3) and len(sample["votes"]) == 2 and sample["weight"] == 0.9

    # The outage really happened, and the cases sent during it were answered after it.
    statuses = Counter(r.status for r in openai_server.requests)
    assert statuses[503] >= 2
    sent_during = {_text(i) for i in range(n_before, n_total)}
    late = [
        r for r in openai_server.requests if r.status == 200 and extract_post(r.user) in sent_during
    ]
    assert len(late) == n_total - n_before
    assert late and min(r.at for r in late) >= outage_ends - 0.1
    # The gold label travels in meta for the oracle; it never reaches the LLM's prompt.
    assert not any("gold" in json.dumps(r.body) for r in openai_server.requests)
    parked = running.metrics.registry.get_sample_value(
        "jurystream_messages_total", {"role": "reviewer", "outcome": "parked"}
    )
    assert parked and parked >= 1
    assert cases("parked") == 0 and cases("in_flight") == 0


async def test_budget_stops_spending_at_the_limit_and_resumes_next_window(
    reviewer_role: object, openai_server: OpenAIServer
) -> None:
    n, window_s, limit = 12, 3.0, 1500.0
    openai_server.answer = answers_by_text({_text(i): _gold(i) for i in range(n)})
    # One dollar per token makes a call cost a few hundred dollars: about 4 calls per window.
    running: Running = await reviewer_role(  # type: ignore[operator]
        concurrency=1,
        prices={MODEL: {"input": 1e6, "output": 1e6}},
        budget_per_hour_usd=limit,
        budget_hour_window_s=window_s,
    )
    await _produce_cases(running.settings, range(n))
    labels = await _read(running.settings, "labels", n, timeout_s=90)
    assert {r.key for r in labels} == {f"m{i}" for i in range(n)}

    billed = openai_server.billed()
    per_window: Counter[int] = Counter()
    for r in billed:
        per_window[math.floor(r.at / window_s)] += r.prompt_tokens + r.completion_tokens
    assert all(spent <= limit for spent in per_window.values()), per_window
    assert len(per_window) >= 2, "everything fit in one window: the budget never stopped"
    assert max(Counter(math.floor(r.at / window_s) for r in billed).values()) < n
    # The cost counter is the server's reported usage times the price, to the cent.
    cost = running.metrics.registry.get_sample_value(
        "jurystream_reviewer_cost_usd_total", {"backend": SOURCE}
    )
    assert cost == pytest.approx(sum(r.prompt_tokens + r.completion_tokens for r in billed))


async def test_bad_records_go_to_dead_letters_and_the_role_keeps_going(
    reviewer_role: object, openai_server: OpenAIServer, broker: EmbeddedBroker
) -> None:
    openai_server.answer = answers_by_text({_text(1): "offensive"})
    running: Running = await reviewer_role()  # type: ignore[operator]
    topic = running.settings.topics.name(Topic.REVIEW)
    await produce(
        broker.bootstrap,
        topic,
        [(b"bad1", b"not json"), (b"bad2", b'{"id": "x"}'), (b"m1", json.dumps(_case(1)).encode())],
    )
    labels = await _read(running.settings, "labels", 1)
    dead = await _read(running.settings, "dead_letters", 2)
    assert [r.key for r in labels] == ["m1"]
    assert sorted(str(r.value["error"])[:18] for r in dead) == ["not a review case:"] * 2
    assert {r.value["stage"] for r in dead} == {"review"}


def test_killing_the_reviewer_mid_flight_loses_nothing(
    roles: RoleGroup, openai_server: OpenAIServer
) -> None:
    n = 40
    scripted = answers_by_text({_text(i): _gold(i) for i in range(n)})

    def slow(body: dict[str, object]) -> Reply:
        reply = scripted(body)
        assert isinstance(reply, Reply)
        return Reply(reply.content, reply.status, delay_s=0.15, raw_body=reply.raw_body)

    openai_server.answer = slow
    env = {
        KEY_ENV: "sk-test",
        "JURYSTREAM_TOPICS__PARTITIONS": "2",
        "JURYSTREAM_REVIEWER__CHAIN": '["openai"]',
        "JURYSTREAM_REVIEWER__BASE_URL": openai_server.base_url,
        "JURYSTREAM_REVIEWER__MODEL": MODEL,
        "JURYSTREAM_REVIEWER__API_KEY_ENV": KEY_ENV,
        "JURYSTREAM_REVIEWER__PRICES": json.dumps({MODEL: {"input": 1, "output": 4}}),
        "JURYSTREAM_REVIEWER__LABEL_DESCRIPTIONS": json.dumps(LABELS),
        "JURYSTREAM_REVIEWER__CONCURRENCY": "2",
    }
    settings = Settings(
        broker=BrokerSettings(bootstrap=roles.bootstrap),
        topics=TopicSettings(prefix=roles.prefix, partitions=2),
    )
    asyncio.run(ensure_topics(roles.bootstrap, settings.topics.all_names(), 2))
    asyncio.run(_produce_cases(settings, range(n)))

    first = roles.start("reviewer", env=env)
    before = asyncio.run(_read(settings, "labels", 6, timeout_s=60))
    assert len(before) >= 6, roles.logs()
    first.kill9()
    seen_at_kill = {r.key for r in asyncio.run(_read(settings, "labels", n, timeout_s=2))}
    assert len(seen_at_kill) < n, "the reviewer finished before it was killed"

    roles.start("reviewer", env=env)
    labels = asyncio.run(_read(settings, "labels", n, timeout_s=90))
    keys = {r.key for r in labels}
    assert keys == {f"m{i}" for i in range(n)}, roles.logs()
    # At-least-once: a replayed batch may repeat a label, but every copy is the same answer.
    for rec in labels:
        assert rec.value["label"] == _gold(int(str(rec.key)[1:]))


async def test_oracle_chain_labels_from_gold_and_says_so(
    reviewer_role: object, openai_server: OpenAIServer
) -> None:
    running: Running = await reviewer_role(chain=["oracle"])  # type: ignore[operator]
    await _produce_cases(running.settings, range(6))
    labels = await _read(running.settings, "labels", 6)
    assert {r.key: (r.value["label"], r.value["source"]) for r in labels} == {
        f"m{i}": (_gold(i), "oracle") for i in range(6)
    }
    assert openai_server.requests == []


async def test_a_parked_case_holds_back_its_commit_but_not_the_cases_behind_it(
    broker: EmbeddedBroker, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    n = 20
    answers = {_text(i): _gold(i) for i in range(1, n)}  # m0 has no scripted answer: HTTP 400
    openai_server.answer = answers_by_text(answers)
    settings = _settings(broker.bootstrap, openai_server, max_case_failures=1000)
    settings = settings.model_copy(
        update={"topics": TopicSettings(prefix="t" + uuid.uuid4().hex[:8] + ".", partitions=1)}
    )
    await ensure_topics(broker.bootstrap, settings.topics.all_names(), 1)

    async def run_role() -> tuple[asyncio.Event, asyncio.Task[None], object]:
        metrics = ReviewerMetrics()
        chain = build_chain(settings.reviewer, metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(
            ReviewerRole(settings, broker.bootstrap, chain, metrics).run(stop)
        )
        return stop, task, chain

    stop, task, chain = await run_role()
    await _produce_cases(settings, range(n))  # one partition: m0 is first in line
    labels = await _read(settings, "labels", n - 1)
    assert {r.key for r in labels} == {f"m{i}" for i in range(1, n)}  # not stuck behind m0
    stop.set()
    await asyncio.wait_for(task, 30)
    await chain.close()  # type: ignore[attr-defined]

    # m0 was never answered, so nothing at or after it was committed: a restart replays it.
    openai_server.answer = answers_by_text({**answers, _text(0): _gold(0)})
    stop, task, chain = await run_role()
    labels = await _read(settings, "labels", n)
    stop.set()
    await asyncio.wait_for(task, 30)
    await chain.close()  # type: ignore[attr-defined]
    assert {r.key for r in labels} == {f"m{i}" for i in range(n)}
    assert next(r.value["label"] for r in labels if r.key == "m0") == _gold(0)


async def test_a_case_the_endpoint_keeps_refusing_while_answering_others_is_dead_lettered(
    reviewer_role: object, openai_server: OpenAIServer
) -> None:
    scripted = answers_by_text({_text(i): _gold(i) for i in range(1, 200)})

    def slow(body: dict[str, object]) -> Reply:  # answers keep arriving while m0 is retried
        reply = scripted(body)
        assert isinstance(reply, Reply)
        return Reply(reply.content, reply.status, delay_s=0.05, raw_body=reply.raw_body)

    openai_server.answer = slow
    running: Running = await reviewer_role(  # type: ignore[operator]
        max_case_failures=3, concurrency=2, park_backoff_max_s=0.2
    )
    await _produce_cases(running.settings, range(0, 1))
    dead: list[Record] = []
    for wave in range(30):  # a steady stream of answerable cases until m0 gives up
        await _produce_cases(running.settings, range(1 + 4 * wave, 5 + 4 * wave))
        dead = await _read(running.settings, "dead_letters", 1, timeout_s=0.5)
        if dead:
            break
    assert [r.key for r in dead] == ["m0"], "m0 was never dead-lettered"
    error = dead[0].value["error"]
    assert "HTTP 400" in error and "failed 3 times while other cases were answered" in error
    assert dead[0].value["stage"] == "review"
    labels = await _read(running.settings, "labels", 4 * (wave + 1), timeout_s=30)
    assert "m0" not in {r.key for r in labels} and len({r.key for r in labels}) >= 4 * (wave + 1)


async def test_a_second_reviewer_joining_mid_stream_takes_partitions_and_loses_nothing(
    broker: EmbeddedBroker, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    n = 60
    scripted = answers_by_text({_text(i): _gold(i) for i in range(n)})

    def slow(body: dict[str, object]) -> Reply:  # cases are in flight when partitions move
        reply = scripted(body)
        assert isinstance(reply, Reply)
        return Reply(reply.content, reply.status, delay_s=0.1, raw_body=reply.raw_body)

    openai_server.answer = slow
    settings = _settings(broker.bootstrap, openai_server, concurrency=2)
    await ensure_topics(broker.bootstrap, settings.topics.all_names(), 2)
    running = []
    for _ in range(2):
        metrics = ReviewerMetrics()
        chain = build_chain(settings.reviewer, metrics)
        stop = asyncio.Event()
        role = ReviewerRole(settings, broker.bootstrap, chain, metrics)
        running.append((stop, asyncio.create_task(role.run(stop)), chain, metrics))
        if len(running) == 1:
            await _produce_cases(settings, range(n))
            await _read(settings, "labels", 5)  # the first one is busy when the second joins
    labels = await _read(settings, "labels", n, timeout_s=90)
    for stop, task, chain, _ in running:
        stop.set()
        await asyncio.wait_for(task, 30)
        await chain.close()  # type: ignore[attr-defined]
    assert {r.key for r in labels} == {f"m{i}" for i in range(n)}
    assert all(r.value["label"] == _gold(int(str(r.key)[1:])) for r in labels)
    reviewed = [
        m.registry.get_sample_value(
            "jurystream_messages_total", {"role": "reviewer", "outcome": "reviewed"}
        )
        for *_, m in running
    ]
    assert all(count and count > 0 for count in reviewed), reviewed  # both took a share


async def test_cases_queue_behind_the_request_slots_so_none_stays_idle(
    reviewer_role: object, openai_server: OpenAIServer
) -> None:
    """At concurrency 64 the role holds more than 64 cases: the next ones wait on a request slot
    while earlier ones write their outputs. With the old limit (64 cases, equal to the
    concurrency) a slot stayed idle from a case's answer until the loop fetched the next one:
    bench scale measured 0.54 of concurrency ÷ latency."""
    n, concurrency = 192, 64
    scripted = answers_by_text({_text(i): _gold(i) for i in range(n)})

    def slow(body: dict[str, object]) -> Reply:
        reply = scripted(body)
        assert isinstance(reply, Reply)
        return Reply(reply.content, reply.status, delay_s=0.5, raw_body=reply.raw_body)

    openai_server.answer = slow
    running: Running = await reviewer_role(concurrency=concurrency)  # type: ignore[operator]
    assert running.settings.reviewer.in_flight_limit == 4 * concurrency
    await _produce_cases(running.settings, range(n))
    held = 0.0
    deadline = time.monotonic() + 60
    while len(openai_server.requests) < n and time.monotonic() < deadline:
        value = running.metrics.registry.get_sample_value(
            "jurystream_review_cases", {"state": "in_flight"}
        )
        held = max(held, value or 0.0)
        await asyncio.sleep(0.02)
    labels = await _read(running.settings, "labels", n)
    assert {r.key for r in labels} == {f"m{i}" for i in range(n)}
    assert held > concurrency, f"the role held at most {held} cases"
    assert openai_server.max_in_flight == concurrency  # the slots still bound the requests


TASKS = {
    "offensive": {"labels": ["not-offensive", "offensive"], "jurors": ["mh", "t1"]},
    "hate": {"labels": ["not-hate", "hate"], "jurors": ["mh", "t2"]},
    "irony": {"labels": ["non_irony", "irony"], "jurors": ["mh", "t3"]},
}


def _task_case(i: int, asked: list[str], kind: str = "escalation") -> tuple[bytes, bytes]:
    """A multi-task case as the worker writes it (``label_tasks_batch``)."""
    results = {
        t: TaskResult(
            label=TASKS[t]["labels"][1],  # type: ignore[index]
            source="jury",
            confidence=0.55 if t in asked else 0.95,
            votes=(Vote("mh", TASKS[t]["labels"][1], 0.55),),  # type: ignore[index]
            threshold=0.7,
            reason="split vote" if t in asked else None,
        )
        for t in TASKS
    }
    case = ReviewCase.of_tasks(
        Post.of(f"m{i}", _text(i)),
        {t: r for t, r in results.items() if t in asked},
        {t: r for t, r in results.items() if t not in asked},
        {"mh": "1"},
        time.time() * 1000,
        "w:1",
        kind=kind,  # type: ignore[arg-type]
    )
    return case.id.encode(), case.to_bytes()


async def test_a_multi_task_case_is_one_call_and_one_complete_label_record(
    reviewer_role: object, openai_server: OpenAIServer
) -> None:
    """Asked on two of three tasks: one request answers both, the label record holds all three
    (the settled task as the jury left it), one hard sample per reviewed task; an audit of every
    task writes samples only."""
    scripted = {"offensive": "not-offensive", "hate": "not-hate", "irony": "irony"}
    openai_server.answer = answers_by_text({_text(i): scripted for i in range(3)})
    running: Running = await reviewer_role(TASKS)  # type: ignore[operator]
    settings = running.settings
    bootstrap = settings.broker.bootstrap
    assert bootstrap
    cases = [_task_case(0, ["offensive", "irony"]), _task_case(1, ["hate"])]
    cases.append(_task_case(2, list(TASKS), kind="audit"))
    await produce(bootstrap, settings.topics.name(Topic.REVIEW), cases)

    samples = await _read(settings, "hard_samples", 2 + 1 + 3)  # every case answered
    labels = await _read(settings, "labels", 2)
    assert len(openai_server.requests) == 3  # one call per post, not per task
    records = {r.key: LabelRecord.parse(json.dumps(r.value).encode()) for r in labels}
    first = records["m0"]
    assert isinstance(first, LabelRecord)
    assert list(first.tasks) == list(TASKS)  # the settings' order
    assert {t: (r.label, r.source) for t, r in first.tasks.items()} == {
        "offensive": ("not-offensive", SOURCE),
        "hate": ("hate", "jury"),  # settled: kept as the jury decided
        "irony": ("irony", SOURCE),
    }
    assert first.tasks["offensive"].jury_label == "offensive"
    assert first.label == "not-offensive" and first.cost_usd and first.cost_usd > 0
    assert "m2" not in records  # an audit's labels stand
    by_key = {r.key: HardSample.parse(json.dumps(r.value).encode()) for r in samples}
    assert set(by_key) == {
        "m0#offensive",
        "m0#irony",
        "m1#hate",
        "m2#offensive",
        "m2#hate",
        "m2#irony",
    }
    sample = running.metrics.registry.get_sample_value

    def labels_total(task: str, source: str, label: str) -> float | None:
        return sample("jurystream_labels_total", {"task": task, "source": source, "label": label})

    assert labels_total("hate", "jury", "hate") == 1  # m0's settled task, counted per task
    assert labels_total("hate", SOURCE, "not-hate") == 1  # m1's reviewed one
    assert labels_total("offensive", SOURCE, "not-offensive") == 1  # m0's
    assert sample("jurystream_audits_total", {"task": "irony", "result": "agree"}) == 1
    assert sample("jurystream_audits_total", {"task": "hate", "result": "disagree"}) == 1
    audit = by_key["m2#hate"]
    assert isinstance(audit, HardSample)
    assert (audit.kind, audit.task, audit.label, audit.jury_label) == (
        "audit",
        "hate",
        "not-hate",
        "hate",
    )
