"""The monitor's labels ⋈ feedback join, rolling quality and drift (no Kafka needed here)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jurystream.config import Settings, Topic
from jurystream.exporters.metrics import DEFAULT_TASK, MonitorMetrics
from jurystream.exporters.metrics.families import PER_TASK
from jurystream.stream.broker import free_port
from jurystream.stream.client import produce
from jurystream.stream.feedback import QualityMonitor, drift_references, label_facts
from jurystream.stream.records import Feedback, LabelRecord
from tests.fixtures.processes import Roles


def label(
    post_id: str, lab: str, source: str = "jury", votes: dict[str, str] | None = None
) -> bytes:
    record = {
        "id": post_id,
        "label": lab,
        "source": source,
        "votes": [{"juror": j, "label": v, "confidence": 0.9} for j, v in (votes or {}).items()],
        "model_versions": {j: "1" for j in votes or {}},
    }
    return json.dumps(record).encode()


def gold(post_id: str, lab: str) -> bytes:
    return json.dumps({"id": post_id, "label": lab}).encode()


def hard_sample(post_id: str, jury: str, reviewed: str, kind: str = "audit") -> bytes:
    record = {"id": post_id, "text": "t", "label": reviewed, "jury_label": jury, "kind": kind}
    return json.dumps(record).encode()


def value(m: MonitorMetrics, name: str, **labels: str) -> float | None:
    """A sample's value; a per-task family's is read for ``DEFAULT_TASK`` unless ``task``
    says otherwise."""
    if name in PER_TASK:
        labels = {"task": DEFAULT_TASK, **labels}
    got = m.registry.get_sample_value(name, labels)
    return None if got is None else float(got)


def make(
    capacity: int = 100,
    window: int = 10,
    drift: int = 4,
    ref: dict[str, float] | None = None,
    refs: dict[str, dict[str, float]] | None = None,
):  # type: ignore[no-untyped-def]
    """A monitor; ``ref``: the single task's training distribution, ``refs``: per task."""
    m = MonitorMetrics()
    references = {DEFAULT_TASK: ref or {}, **(refs or {})}
    return m, QualityMonitor(m, window, drift, references, capacity)


def test_join_in_either_order_counts_per_source_and_per_juror() -> None:
    m, q = make()
    q.on_label(b"1", label("1", "pos", votes={"a": "pos", "b": "neg"}))
    q.on_feedback(b"1", gold("1", "pos"))  # label first
    q.on_feedback(b"2", gold("2", "neg"))
    q.on_label(b"2", label("2", "pos", source="reviewer", votes={"a": "neg", "b": "neg"}))
    assert value(m, "jurystream_feedback_total", source="jury", result="correct") == 1
    assert value(m, "jurystream_feedback_total", source="reviewer", result="wrong") == 1
    assert value(m, "jurystream_juror_feedback_total", juror="a", result="correct") == 2
    assert value(m, "jurystream_juror_feedback_total", juror="b", result="wrong") == 1
    assert value(m, "jurystream_juror_feedback_total", juror="b", result="correct") == 1
    q.publish()
    assert value(m, "jurystream_online_accuracy", source="jury") == 1.0
    assert value(m, "jurystream_online_accuracy", source="reviewer") == 0.0
    assert value(m, "jurystream_juror_online_accuracy", juror="b") == 0.5
    assert value(m, "jurystream_juror_online_window_samples", juror="a") == 2


def test_replays_are_not_counted_twice() -> None:
    m, q = make()
    for _ in range(3):
        q.on_label(b"2", label("2", "pos", votes={"a": "pos"}))  # replayed before its gold
    for _ in range(3):
        q.on_label(b"1", label("1", "pos", votes={"a": "pos"}))
        q.on_feedback(b"1", gold("1", "neg"))
    q.on_feedback(b"2", gold("2", "pos"))
    assert value(m, "jurystream_feedback_total", source="jury", result="wrong") == 1
    assert value(m, "jurystream_feedback_total", source="jury", result="correct") == 1
    assert value(m, "jurystream_juror_feedback_total", juror="a", result="wrong") == 1
    assert len(q.drift[DEFAULT_TASK]) == 2


def test_unmatched_records_expire_at_capacity_and_bad_ones_are_counted() -> None:
    m, q = make(capacity=2)
    for i in range(5):
        q.on_feedback(None, gold(f"g{i}", "pos"))
    assert value(m, "jurystream_feedback_unmatched_total", topic="feedback", reason="expired") == 3
    q.on_label(b"g0", label("g0", "pos"))  # its gold expired: stays pending, not judged
    assert value(m, "jurystream_feedback_total", source="jury", result="correct") is None
    q.on_label(b"g4", label("g4", "pos"))
    assert value(m, "jurystream_feedback_total", source="jury", result="correct") == 1
    q.on_label(b"x", b"not json")
    q.on_feedback(b"y", json.dumps({"id": "y"}).encode())
    assert value(m, "jurystream_feedback_unmatched_total", topic="labels", reason="invalid") == 1
    assert value(m, "jurystream_feedback_unmatched_total", topic="feedback", reason="invalid") == 1


def test_macro_f1_is_published_per_source_over_the_rolling_window() -> None:
    m, q = make(window=4)
    pairs = [("pos", "pos"), ("neg", "pos"), ("neg", "neg"), ("neg", "neg"), ("pos", "pos")]
    for i, (g, p) in enumerate(pairs):
        q.on_label(None, label(str(i), p))
        q.on_feedback(None, gold(str(i), g))
    q.publish()
    # Window = last 4 pairs: gold neg,neg,neg,pos vs pred pos,neg,neg,pos.
    assert value(m, "jurystream_online_accuracy", source="jury") == pytest.approx(0.75)
    f1_neg, f1_pos = 2 * 2 / (3 + 2), 2 * 1 / (1 + 2)
    assert value(m, "jurystream_online_macro_f1", source="jury") == pytest.approx(
        (f1_neg + f1_pos) / 2
    )
    assert value(m, "jurystream_online_window_samples", source="jury") == 4


def test_audits_estimate_accepted_accuracy_per_label_with_an_interval() -> None:
    m, q = make(window=10)
    q.publish()  # no audit yet: no series rather than a made-up accuracy
    assert value(m, "jurystream_audit_accuracy", label="all", bound="estimate") is None
    # 2 hard cases (not measurements) and 12 audits; the window keeps the last 10 audits
    q.on_hard_sample(b"h0", hard_sample("h0", "pos", "neg", kind="hard"))
    q.on_hard_sample(b"h1", hard_sample("h1", "neg", "pos", kind="hard"))
    outcomes = [("neg", "pos")] * 2 + [("pos", "pos")] * 6 + [("neg", "neg")] * 3 + [("neg", "pos")]
    for i, (jury, reviewed) in enumerate(outcomes):
        q.on_hard_sample(None, hard_sample(f"a{i}", jury, reviewed))
    q.on_hard_sample(b"bad", json.dumps({"kind": "audit", "label": "pos"}).encode())
    q.publish()
    est = value(m, "jurystream_audit_accuracy", label="all", bound="estimate")
    low = value(m, "jurystream_audit_accuracy", label="all", bound="low")
    high = value(m, "jurystream_audit_accuracy", label="all", bound="high")
    assert est == pytest.approx(9 / 10)
    assert low is not None and high is not None and low < 0.9 < high <= 1.0
    assert value(m, "jurystream_audit_window", label="all") == 10
    assert value(m, "jurystream_audit_accuracy", label="neg", bound="estimate") == pytest.approx(
        3 / 4
    )
    assert value(m, "jurystream_audit_window", label="pos") == 6
    bad = value(m, "jurystream_feedback_unmatched_total", topic="hard_samples", reason="invalid")
    assert bad == 1


def test_drift_against_the_training_reference() -> None:
    m, q = make(drift=4, ref={"pos": 50, "neg": 50})
    for i, lab in enumerate(["pos", "neg", "pos"]):
        q.on_label(None, label(str(i), lab))
    q.publish()
    assert value(m, "jurystream_label_drift_psi", reference="training") is None  # window not full
    q.on_label(None, label("3", "neg"))
    q.publish()
    assert value(m, "jurystream_label_drift_psi", reference="training") == pytest.approx(0.0)
    for i in range(4, 8):
        q.on_label(None, label(str(i), "pos"))
    q.publish()
    assert value(m, "jurystream_label_drift_psi", reference="training") > 0.25  # type: ignore[operator]


def test_drift_without_reference_uses_the_first_full_window() -> None:
    m, q = make(drift=4)
    for i, lab in enumerate(["pos", "neg", "pos", "neg", "neg", "neg", "neg", "neg"]):
        q.on_label(None, label(str(i), lab))
    q.publish()
    drift = value(m, "jurystream_label_drift_psi", reference="first_window")
    assert drift is not None and drift > 0.25


def test_stream_counts_for_continual_learning() -> None:
    m, q = make()
    q.on_label(b"1", label("1", "pos", votes={"tfidf0": "pos"}))
    assert value(m, "jurystream_model_updates_total", juror="tfidf0") == 0
    assert value(m, "jurystream_feedback_unmatched_total", topic="labels", reason="expired") == 0
    q.on_model_update(b"tfidf0", json.dumps({"name": "tfidf0", "version": "2"}).encode())
    assert value(m, "jurystream_model_updates_total", juror="tfidf0") == 1


def test_parsers_take_the_id_from_the_key_when_the_value_has_none() -> None:
    record = LabelRecord.parse(json.dumps({"label": "a", "source": "jury"}).encode(), b"k")
    assert isinstance(record, LabelRecord)
    post_id, facts = record.id, label_facts(record)
    assert post_id == "k" and list(facts) == [DEFAULT_TASK] and facts[DEFAULT_TASK].votes == ()
    gold = Feedback.parse(json.dumps({"label": "b"}).encode(), b"k2")
    assert isinstance(gold, Feedback) and (gold.id, gold.label) == ("k2", "b")


def task_label(post_id: str, results: dict[str, tuple[str, str, dict[str, str]]]) -> bytes:
    """A multi-task label record: per task (label, source, votes); the top level mirrors the
    first task, as the worker writes it."""
    tasks = {
        task: {
            "label": lab,
            "source": source,
            "votes": [{"juror": j, "label": v, "confidence": 0.9} for j, v in votes.items()],
        }
        for task, (lab, source, votes) in results.items()
    }
    first = next(iter(tasks.values()))
    jurors = {j for _, _, votes in results.values() for j in votes}
    record = {**first, "id": post_id, "tasks": tasks, "model_versions": {j: "1" for j in jurors}}
    return json.dumps(record).encode()


def task_gold(post_id: str, lab: str, task: str | None) -> bytes:
    return json.dumps({"id": post_id, "label": lab, **({"task": task} if task else {})}).encode()


def test_a_multi_task_label_joins_each_task_with_that_tasks_feedback() -> None:
    m, q = make()
    results = {
        "offensive": ("yes", "jury", {"a": "yes", "b": "no"}),
        "hate": ("no", "reviewer:x", {"a": "yes"}),
    }
    q.on_feedback(b"1", task_gold("1", "yes", "hate"))  # before its label
    q.on_label(b"1", task_label("1", results))
    q.on_label(b"1", task_label("1", results))  # an at-least-once replay
    q.on_feedback(b"1", task_gold("1", "yes", "offensive"))
    q.on_feedback(b"1", task_gold("1", "yes", None))  # no task: meets a single-task label only
    fb, juror_fb = "jurystream_feedback_total", "jurystream_juror_feedback_total"
    assert value(m, fb, task="offensive", source="jury", result="correct") == 1
    assert value(m, fb, task="hate", source="reviewer:x", result="wrong") == 1
    assert value(m, fb, task="hate", source="jury", result="correct") is None
    assert value(m, juror_fb, task="offensive", juror="b", result="wrong") == 1
    assert value(m, juror_fb, task="hate", juror="a", result="correct") == 1
    assert value(m, fb, source="jury", result="correct") is None  # nothing joined as default
    q.publish()
    assert value(m, "jurystream_online_accuracy", task="hate", source="reviewer:x") == 0.0
    assert value(m, "jurystream_online_accuracy", task="offensive", source="jury") == 1.0
    assert value(m, "jurystream_juror_online_accuracy", task="offensive", juror="b") == 0.0
    assert value(m, "jurystream_label_drift_window_samples", task="hate") == 1
    # A single-task label meets feedback without a task, not a task's.
    q.on_feedback(b"2", task_gold("2", "pos", "hate"))
    q.on_label(b"2", label("2", "pos"))
    assert value(m, fb, source="jury", result="correct") is None
    q.on_feedback(b"2", task_gold("2", "pos", None))
    assert value(m, fb, source="jury", result="correct") == 1


def test_audits_and_drift_are_kept_per_task() -> None:
    m, q = make(window=10, drift=2, ref={"pos": 50, "neg": 50}, refs={"irony": {"yes": 1}})
    for i, (task, jury, reviewed) in enumerate(
        [("hate", "yes", "no"), ("hate", "yes", "yes"), ("irony", "no", "no"), (None, "pos", "pos")]
    ):
        sample = {"id": f"a{i}", "text": "t", "label": reviewed, "jury_label": jury}
        sample |= {"kind": "audit", **({"task": task} if task else {})}
        q.on_hard_sample(None, json.dumps(sample).encode())
    for i, labels in enumerate([("yes", "no"), ("yes", "no"), ("yes", "no")]):
        results = {"hate": (labels[0], "jury", {}), "irony": (labels[1], "jury", {})}
        q.on_label(None, task_label(f"p{i}", results))
    for i, lab in enumerate(["pos", "neg"]):
        q.on_label(None, label(f"s{i}", lab))
    q.publish()
    accuracy = "jurystream_audit_accuracy"
    assert value(m, accuracy, task="hate", label="all", bound="estimate") == pytest.approx(0.5)
    assert value(m, accuracy, task="irony", label="all", bound="estimate") == pytest.approx(1.0)
    assert value(m, "jurystream_audit_window", label="all") == 1  # the single-task audit
    # Each task is measured against its own training reference where one is configured (irony
    # was trained on "yes" only and now sees "no": drift), else against its first full window.
    psi = "jurystream_label_drift_psi"
    assert value(m, psi, reference="training") == pytest.approx(0.0)
    assert value(m, psi, task="hate", reference="first_window") == pytest.approx(0.0)
    assert value(m, psi, task="hate", reference="training") is None
    assert value(m, psi, task="irony", reference="training") > 0.25  # type: ignore[operator]
    assert value(m, psi, task="irony", reference="first_window") is None
    assert value(m, "jurystream_label_drift_window_samples", task="irony") == 2


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_monitor_role_joins_topics_on_a_real_broker(roles: Roles) -> None:
    port = free_port()
    roles.start("monitor", "--metrics-port", str(port))
    n = 120
    labels = [(f"m{i}".encode(), label(f"m{i}", "pos" if i % 3 else "neg")) for i in range(n)]
    golds = [(f"m{i}".encode(), gold(f"m{i}", "pos")) for i in range(n)]
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.FEEDBACK), golds[: n // 2]))
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.LABELS), labels))
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.FEEDBACK), golds[n // 2 :]))
    audits = [
        (f"a{i}".encode(), hard_sample(f"a{i}", "pos", "pos" if i % 4 else "neg"))
        for i in range(40)
    ]
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.HARD_SAMPLES), audits))
    task = ("task", DEFAULT_TASK)
    correct = ("jurystream_feedback_total", (("result", "correct"), ("source", "jury"), task))
    wrong = ("jurystream_feedback_total", (("result", "wrong"), ("source", "jury"), task))
    deadline = time.monotonic() + 60
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            seen = scrape(port)
        if seen.get(correct, 0) + seen.get(wrong, 0) >= n:
            break
        time.sleep(0.5)
    assert seen.get(correct) == 80 and seen.get(wrong) == 40, roles.logs()
    time.sleep(1.5)  # one more publish interval for the gauges
    seen = scrape(port)
    acc = ("jurystream_online_accuracy", (("source", "jury"), task))
    assert seen[acc] == pytest.approx(80 / 120)
    audit = ("jurystream_audit_accuracy", (("bound", "estimate"), ("label", "all"), task))
    window = ("jurystream_audit_window", (("label", "all"), task))
    while time.monotonic() < deadline and seen.get(window, 0) < len(audits):
        time.sleep(0.5)
        seen = scrape(port)
    assert seen.get(window) == len(audits), roles.logs()
    assert seen[audit] == pytest.approx(30 / 40)
    lags = [v for (name, _), v in seen.items() if name == "jurystream_consumer_lag"]
    assert lags and all(v == 0 for v in lags)


def owned_partitions(port: int, topic: str) -> set[str]:
    with contextlib.suppress(OSError):
        return {
            dict(labels)["partition"]
            for (name, labels) in scrape(port)
            if name == "jurystream_consumer_lag" and dict(labels)["topic"] == topic
        }
    return set()


def test_three_monitors_split_the_partitions_and_still_join_every_pair(roles: Roles) -> None:
    """The range assignor gives each process the same partitions of labels and feedback.

    Three processes on four partitions: a round-robin assignment would split the two topics
    differently (with two processes it happens to coincide).
    """
    ports = [free_port() for _ in range(3)]
    for port in ports:
        roles.start("monitor", "--metrics-port", str(port))
    labels_topic, feedback_topic = roles.topic(Topic.LABELS), roles.topic(Topic.FEEDBACK)
    # Prime every partition so both processes report what they own once the group settles.
    primer = [(f"p{i}".encode(), label(f"p{i}", "pos")) for i in range(40)]
    asyncio.run(produce(roles.bootstrap, labels_topic, primer))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        owned = [owned_partitions(p, labels_topic) for p in ports]
        if all(owned) and sum(map(len, owned)) == len(set().union(*owned)) == 4:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"the monitors never split the partitions\n{roles.logs()}")
    for port, mine in zip(ports, owned, strict=True):
        assert owned_partitions(port, feedback_topic) == mine  # co-partitioned

    n = 200
    labels = [(f"m{i}".encode(), label(f"m{i}", "pos")) for i in range(n)]
    golds = [(f"m{i}".encode(), gold(f"m{i}", "pos" if i % 4 else "neg")) for i in range(n)]
    asyncio.run(produce(roles.bootstrap, feedback_topic, golds))
    asyncio.run(produce(roles.bootstrap, labels_topic, labels))

    def judged(port: int) -> float:
        seen = scrape(port)
        return sum(v for (name, _), v in seen.items() if name == "jurystream_feedback_total")

    deadline = time.monotonic() + 60
    counts = [0.0] * len(ports)
    while time.monotonic() < deadline and sum(counts) < n:
        counts = [judged(p) for p in ports]
        time.sleep(0.5)
    assert sum(counts) == n, (counts, roles.logs())
    assert all(c > 0 for c in counts), counts  # both processes did part of the join


def test_drift_references_come_from_each_tasks_settings() -> None:
    one = Settings(metrics={"drift_reference": {"pos": 3, "neg": 1}})
    assert drift_references(one) == {DEFAULT_TASK: {"pos": 3, "neg": 1}}
    several = Settings(
        metrics={"drift_reference": {"pos": 3, "neg": 1}},  # one label set: not the tasks'
        tasks={
            "hate": {"labels": ["no", "yes"], "jurors": ["a"], "drift_reference": {"no": 9}},
            "irony": {"labels": ["no", "yes"], "jurors": ["a"]},
        },
    )
    assert drift_references(several) == {"hate": {"no": 9}, "irony": {}}
