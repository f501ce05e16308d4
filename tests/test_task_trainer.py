"""The trainer with several tasks: samples and feedback routed to each task's store, rounds one
at a time across tasks, and thresholds announced and served per task."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from jurystream.config import Settings, TaskSettings, Topic
from jurystream.exporters.metrics import TrainerMetrics, WorkerMetrics
from jurystream.models.rules.continual import Example
from jurystream.models.serving.juror import load_juror
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.registry import Registry
from jurystream.models.serving.tasks import TaskJuries
from jurystream.models.training import rounds
from jurystream.models.training.controller import ThresholdController
from jurystream.models.training.refine import RefineInputs
from jurystream.models.training.store import TrainingStore
from jurystream.stream.client import produce, read_records
from jurystream.stream.feed import LABELS, labeled_examples
from jurystream.stream.records import Invalid, ThresholdUpdate, parse_update
from jurystream.stream.trainer import Lane, TrainerRole, build_lanes, task_of
from jurystream.stream.updates import latest_thresholds
from jurystream.stream.worker import LabelingWorker
from tests.fixtures.processes import Roles
from tests.test_trainer_role import wait_for

HARD = Settings().topics.name(Topic.HARD_SAMPLES)
FEEDBACK = Settings().topics.name(Topic.FEEDBACK)


@dataclass
class Message:
    """What the trainer reads of a consumed record."""

    topic: str
    value: bytes
    key: bytes | None = None
    id: bytes = b""  # the key a producer would give it
    partition: int = 0
    offset: int = 0


def sample(post_id: str, label: str, **fields: Any) -> Message:
    record = {"id": post_id, "text": f"the text of {post_id}", "label": label} | fields
    return Message(HARD, json.dumps(record).encode(), post_id.encode())


def gold(post_id: str, label: str, **fields: Any) -> Message:
    value = json.dumps({"id": post_id, "label": label} | fields).encode()
    return Message(FEEDBACK, value, id=post_id.encode())


class Producer:
    """Records what the role sends and acknowledges it at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.sent.append((topic, value, key))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def thresholds(self) -> list[ThresholdUpdate]:
        updates = [parse_update(v) for t, v, _ in self.sent if t.endswith("model-updates")]
        return [u for u in updates if isinstance(u, ThresholdUpdate)]


def task(jurors: list[str], **fields: Any) -> TaskSettings:
    return TaskSettings(labels=list(LABELS), jurors=jurors, **fields)


def deployment(tmp_path: Path, sklearn_jurors: list[Path], **tasks: TaskSettings) -> Settings:
    """A registry holding the three TF-IDF jurors, a gold file, and ``tasks`` over them."""
    registry = Registry(tmp_path / "registry")
    for directory in sklearn_jurors:
        registry.publish(directory)
    texts, labels = labeled_examples(300, seed=60)
    gold_file = tmp_path / "gold.jsonl"
    gold_file.write_text(
        "".join(
            json.dumps({"text": t, "label": LABELS[y]}) + "\n"
            for t, y in zip(texts, labels, strict=True)
        )
    )
    given = {
        name: spec.model_copy(update={"gold_data": str(gold_file)}) for name, spec in tasks.items()
    }
    return Settings(
        data_dir=tmp_path / "var",
        registry=registry.url,
        trainer={"every_samples": 60, "gate_tolerance": 0.3, "gold_data": str(gold_file)},
        tasks=given,
    )


def role(settings: Settings) -> tuple[TrainerRole, Producer]:
    """The role over ``settings``' lanes, with a producer that records what it sends."""
    metrics = TrainerMetrics(CollectorRegistry())
    trainer = TrainerRole(settings, None, build_lanes(settings), metrics)  # type: ignore[arg-type]
    producer = Producer()
    trainer._producer = producer
    return trainer, producer


# --- routing --------------------------------------------------------------------------------


def test_task_of_keeps_single_task_records_and_names_the_configured_tasks() -> None:
    assert task_of(None, [], "hard sample h1") is None
    assert task_of("hate", [], "hard sample h1") is None  # one task: trained as before
    assert task_of("hate", ["offensive", "hate"], "hard sample h1") == "hate"
    missing = task_of(None, ["offensive", "hate"], "hard sample h1")
    unknown = task_of("spam", ["offensive", "hate"], "feedback f1")
    assert isinstance(missing, Invalid) and isinstance(unknown, Invalid)
    assert "no 'task'" in missing.reason and "offensive, hate" in missing.reason
    assert "'spam'" in unknown.reason and "offensive, hate" in unknown.reason


def test_samples_feedback_and_audits_go_to_their_tasks_store(
    sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    settings = deployment(
        tmp_path, sklearn_jurors, offensive=task(["tfidf0"]), toxic=task(["tfidf1"])
    )
    trainer, _ = role(settings)
    stores = {lane.task: lane.store for lane in trainer.lanes}
    assert {t: s.path.name for t, s in stores.items()} == {
        "offensive": "trainer-offensive.sqlite",
        "toxic": "trainer-toxic.sqlite",
    }
    no, yes = LABELS
    audit = {"kind": "audit", "jury_label": no, "threshold": 0.7}
    messages = [
        sample("p1", yes, task="offensive"),
        sample("p1", no, task="toxic"),
        sample("p2", no, task="toxic", **audit),
        sample("p3", yes),  # no task
        sample("p4", yes, task="spam"),
        gold("p1", no, task="toxic"),
        gold("g1", yes, task="offensive", text="a gold post"),
        gold("g2", yes),
    ]
    rejected = trainer._store(messages)

    assert [(m.key, reason) for m, reason in rejected] == [
        (b"p3", "hard sample p3 has no 'task'; this trainer trains the tasks offensive, toxic"),
        (
            b"p4",
            "hard sample p4 is for task 'spam', which is not one of the tasks offensive, toxic",
        ),
        (None, "feedback g2 has no 'task'; this trainer trains the tasks offensive, toxic"),
    ]
    offensive, toxic = stores["offensive"], stores["toxic"]
    assert [(e.id, e.label) for e in offensive.new_examples() if e.origin == "hard"] == [
        ("p1", yes)
    ]
    assert sorted((e.id, e.label) for e in toxic.new_examples()) == [("p1", no), ("p2", no)]
    assert offensive.gold_labels() == {"g1": yes} and toxic.gold_labels() == {"p1": no}
    # The toxic reviewer's label of p1 matched the toxic gold: measured for that task only.
    assert toxic.reviewer_agreement() == {"reviewer": (1, 1)}
    assert offensive.reviewer_agreement() == {}
    assert toxic.audit_outcomes() == [(no, no)] and offensive.audit_outcomes() == []


def test_one_task_keeps_its_single_store_and_ignores_a_records_task(
    sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    trainer, _ = role(deployment(tmp_path, sklearn_jurors))
    (lane,) = trainer.lanes
    assert lane.task is None and lane.store.path.name == "trainer.sqlite"
    assert lane.runner.jurors() == ["tfidf0", "tfidf1", "tfidf2"]  # every juror in the registry
    messages = [sample("p1", LABELS[1]), sample("p2", LABELS[0], task="x")]
    assert trainer._store(messages) == []
    assert lane.store.pending_hard_samples() == 2


def test_trainer_role_dead_letters_what_no_task_trains_and_announces_each_tasks_threshold(
    roles: Roles, sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    settings = deployment(
        tmp_path,
        sklearn_jurors,
        offensive=task(["tfidf0", "tfidf1"]),
        toxic=task(["tfidf1", "tfidf2"], policy="majority"),
    )
    tasks = {name: spec.model_dump(exclude_defaults=True) for name, spec in settings.tasks.items()}
    env = {"JURYSTREAM_REGISTRY": settings.registry_url, "JURYSTREAM_TASKS": json.dumps(tasks)}
    trainer = roles.start("trainer", env=env)
    no, yes = LABELS
    hard = [sample("p1", yes, task="toxic"), sample("p2", no), sample("p3", no, task="spam")]
    asyncio.run(
        produce(roles.bootstrap, roles.topic(Topic.HARD_SAMPLES), [(m.key, m.value) for m in hard])
    )
    feedback = [gold("p1", yes, task="toxic"), gold("p4", yes, task="hate")]
    asyncio.run(
        produce(roles.bootstrap, roles.topic(Topic.FEEDBACK), [(m.id, m.value) for m in feedback])
    )
    dead = asyncio.run(
        read_records(
            roles.bootstrap,
            [roles.topic(Topic.DEAD_LETTERS)],
            until=lambda records: len(records) >= 3,
            timeout_s=60,
        )
    )
    assert sorted(r.value["error"] for r in dead) == [
        "feedback p4 is for task 'hate', which is not one of the tasks offensive, toxic",
        "hard sample p2 has no 'task'; this trainer trains the tasks offensive, toxic",
        "hard sample p3 is for task 'spam', which is not one of the tasks offensive, toxic",
    ], roles.logs()
    toxic = TrainingStore(tmp_path / "var" / "trainer-toxic.sqlite")
    wait_for(lambda: toxic.pending_hard_samples() == 1 and toxic.gold_labels() == {"p1": yes})
    assert TrainingStore(tmp_path / "var" / "trainer-offensive.sqlite").reviewed_samples() == 0

    def both(records: list[Any]) -> bool:
        return {r.key for r in records} >= {
            "thresholds:offensive:unanimous",
            "thresholds:toxic:majority",
        }

    updates = asyncio.run(
        read_records(roles.bootstrap, [roles.topic(Topic.MODEL_UPDATES)], until=both, timeout_s=60)
    )
    assert both(updates), roles.logs()
    announced = {r.value["task"]: r.value for r in updates if r.value.get("kind") == "thresholds"}
    assert announced["offensive"]["versions"] == {"tfidf0": "1", "tfidf1": "1"}
    assert announced["toxic"]["versions"] == {"tfidf1": "1", "tfidf2": "1"}
    assert trainer.stop() == 0, roles.logs()


# --- rounds ---------------------------------------------------------------------------------


def reviewed(n: int, seed: int, prefix: str) -> list[Example]:
    texts, labels = labeled_examples(n, seed=seed)
    return [
        Example(f"{prefix}{i}", t, LABELS[y], "hard", "oracle", 1.0)
        for i, (t, y) in enumerate(zip(texts, labels, strict=True))
    ]


def test_rounds_run_one_at_a_time_across_tasks_and_start_from_what_the_last_promoted(
    sklearn_jurors: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tfidf1 is shared by both tasks, as a multi-head juror would be.
    settings = deployment(
        tmp_path,
        sklearn_jurors,
        offensive=task(["tfidf0", "tfidf1"], target_accuracy=0.6),
        toxic=task(["tfidf1", "tfidf2"], policy="majority"),
    )
    refined: list[tuple[str, str | None, str]] = []

    def spy(*args: Any, **kwargs: Any) -> RefineInputs:
        inputs = RefineInputs(*args, **kwargs)
        refined.append((inputs.manifest.name, inputs.task, inputs.manifest.version))
        return inputs

    monkeypatch.setattr(rounds, "RefineInputs", spy)
    trainer, producer = role(settings)
    running = threading.Lock()
    order: list[str | None] = []

    def alone(lane: Lane) -> Callable[[str], Any]:
        run = lane.runner.run

        def guarded(trigger: str) -> Any:
            assert running.acquire(blocking=False), "two rounds at once"
            try:
                order.append(lane.task)
                return run(trigger)
            finally:
                running.release()

        return guarded

    for k, lane in enumerate(trainer.lanes):
        monkeypatch.setattr(lane.runner, "run", alone(lane))
        lane.store.add_hard_samples(reviewed(80, seed=20 + k, prefix=f"{lane.task}-"))

    async def drive() -> None:
        await trainer.start()
        for _ in range(600):
            await trainer.tick()
            if len(order) == 2 and trainer._round is None:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"rounds did not finish: {order}")

    asyncio.run(drive())

    assert order == ["offensive", "toxic"]
    # Each round refined its own task's jurors with the task in RefineInputs; the shared juror
    # entered the toxic round from the version the offensive round had just promoted.
    assert refined == [
        ("tfidf0", "offensive", "1"),
        ("tfidf1", "offensive", "1"),
        ("tfidf1", "toxic", "2"),
        ("tfidf2", "toxic", "1"),
    ]
    registry = Registry(settings.registry_url)
    assert registry.manifest("tfidf1").parent == "2" and registry.serving_version("tfidf1") == "3"
    for lane in trainer.lanes:
        assert lane.store.pending_hard_samples() == 0
        assert {c.outcome for c in lane.store.candidates()} == {"promoted"}

    # Thresholds: each task's controller announces with its task and policy, calibrated on its
    # own jurors; the offensive round moved tfidf1, so toxic was recalibrated for it too.
    announced = producer.thresholds()
    assert {(u.task, u.policy) for u in announced} == {
        ("offensive", "unanimous"),
        ("toxic", "majority"),
    }
    for u in announced:
        assert set(u.versions) == set(settings.tasks[str(u.task)].jurors)
    offensive = [u for u in announced if u.task == "offensive"]
    assert offensive[0].target_accuracy == 0.6  # the task's own target
    toxic = [u.versions for u in announced if u.task == "toxic"]
    assert toxic[0] == {"tfidf1": "1", "tfidf2": "1"}
    assert {"tfidf1": "2", "tfidf2": "1"} in toxic  # after the offensive round
    assert toxic[-1] == {"tfidf1": "3", "tfidf2": "2"}


def test_a_tasks_controller_reads_jurors_in_the_tasks_label_order(
    sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    # The same jurors and gold, the task's labels listed the other way round: the controller
    # must measure the same jury (jurors are matched to the task's labels by name).
    settings = deployment(
        tmp_path,
        sklearn_jurors,
        offensive=task(["tfidf0", "tfidf1"], target_accuracy=0.7),
        flipped=task(["tfidf0", "tfidf1"], target_accuracy=0.7).model_copy(
            update={"labels": list(reversed(LABELS))}
        ),
    )
    lanes = build_lanes(settings)
    decisions = []
    for lane in lanes:
        assert isinstance(lane.controller, ThresholdController)
        result = lane.controller.decide()
        assert result is not None
        decisions.append(result.decision)
    offensive, flipped = decisions
    assert offensive.expected_accuracy > 0.6
    assert flipped == offensive


# --- thresholds per task --------------------------------------------------------------------


def test_a_task_threshold_update_round_trips_with_its_own_key() -> None:
    update = ThresholdUpdate(
        policy="majority", threshold=0.62, versions={"a": "2"}, seq=3.0, task="toxic"
    )
    assert parse_update(update.to_bytes()) == update
    assert update.key == b"thresholds:toxic:majority"
    single = ThresholdUpdate(policy="majority", threshold=0.62, versions={"a": "2"}, seq=3.0)
    assert "task" not in json.loads(single.to_bytes()) and single.key == b"thresholds:majority"
    older = update.model_copy(update={"seq": 1.0, "threshold": 0.9})
    other = update.model_copy(update={"seq": 2.0, "task": "offensive"})
    # A worker catching up gets the latest of every task, not only the latest overall.
    assert latest_thresholds([update, other, older]) == [other, update]


def update(task: str | None, policy: str, versions: dict[str, str]) -> ThresholdUpdate:
    return ThresholdUpdate(policy=policy, threshold=0.55, versions=versions, seq=1.0, task=task)


def test_worker_applies_a_task_threshold_to_that_tasks_jury_once_it_serves_its_versions(
    sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "registry")
    for directory in sklearn_jurors:
        registry.publish(directory)
    registry.publish(sklearn_jurors[1], name="tfidf1")  # version 2, not serving yet below
    t0, t1, t2 = (load_juror(registry.local_dir(f"tfidf{k}", "1")) for k in range(3))
    juries = TaskJuries(
        {
            "offensive": Jury((t0, t1), "unanimous", 0.7),
            "toxic": Jury((t1, t2), "majority", 0.7),
        }
    )
    settings = Settings(data_dir=tmp_path / "var")
    metrics = WorkerMetrics(CollectorRegistry())
    worker = LabelingWorker(settings, juries, metrics, {})

    def thresholds() -> dict[str, float]:
        assert isinstance(worker.jury, TaskJuries)
        served = {t: j.threshold for t, j in worker.jury.juries.items()}
        gauge = metrics.registry.get_sample_value
        assert served == {t: gauge("jurystream_jury_threshold", {"task": t}) for t in served}
        return served

    try:
        worker.set_threshold(update("toxic", "majority", {"tfidf1": "1", "tfidf2": "1"}))
        assert thresholds() == {"offensive": 0.7, "toxic": 0.55}
        # Ignored: no task, another task's policy, a task this worker does not serve.
        worker.set_threshold(update(None, "unanimous", {"tfidf0": "1"}))
        worker.set_threshold(update("offensive", "majority", {"tfidf0": "1"}))
        worker.set_threshold(update("spam", "unanimous", {"tfidf0": "1"}))
        assert thresholds() == {"offensive": 0.7, "toxic": 0.55}
        # Calibrated for tfidf1 v2: waits for the swap, then serves offensive only.
        later = update("offensive", "unanimous", {"tfidf0": "1", "tfidf1": "2"})
        worker.set_threshold(later.model_copy(update={"threshold": 0.8}))
        assert thresholds() == {"offensive": 0.7, "toxic": 0.55}
        worker.swap(load_juror(registry.local_dir("tfidf1", "2")))
        assert thresholds() == {"offensive": 0.8, "toxic": 0.55}
    finally:
        worker.close()

    single = LabelingWorker(
        settings, Jury((t0, t1), "unanimous", 0.7), WorkerMetrics(CollectorRegistry()), {}
    )
    try:
        single.set_threshold(update("offensive", "unanimous", {"tfidf0": "1"}))
        assert isinstance(single.jury, Jury) and single.jury.threshold == 0.7
        single.set_threshold(update(None, "unanimous", {"tfidf0": "1"}))
        assert single.jury.threshold == 0.55
    finally:
        single.close()


def test_each_tasks_controller_shows_its_own_target_and_threshold(
    sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    settings = deployment(
        tmp_path,
        sklearn_jurors,
        offensive=task(["tfidf0", "tfidf1"], target_accuracy=0.8),
        toxic=task(["tfidf1", "tfidf2"], target_accuracy=0.9),
    )
    trainer, producer = role(settings)
    asyncio.run(trainer.start())

    gauge = trainer.metrics.registry.get_sample_value
    targets = {t: gauge("jurystream_target_accuracy", {"task": t}) for t in settings.tasks}
    assert targets == {"offensive": 0.8, "toxic": 0.9}
    announced = {u.task: u.threshold for u in producer.thresholds()}
    assert set(announced) == {"offensive", "toxic"}  # every lane decided, not only the first
    assert {t: gauge("jurystream_jury_threshold", {"task": t}) for t in announced} == announced
