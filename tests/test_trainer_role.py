"""The `jurystream trainer` role on a real broker: durable store, feedback, rounds, updates."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from jurystream.config import Topic
from jurystream.models.serving.registry import Registry
from jurystream.models.training.store import TrainingStore
from jurystream.stream.client import Record, produce, read_records
from jurystream.stream.feed import LABELS, labeled_examples
from tests.fixtures.processes import Roles

JURORS = ("tfidf0", "tfidf1", "tfidf2")


def hard_samples(start: int, stop: int) -> list[tuple[bytes, bytes]]:
    """Reviewed posts from an LLM that is wrong on every 5th of the first 100 (gold says so)."""
    texts, labels = labeled_examples(stop, seed=61)
    out = []
    for i in range(start, stop):
        label = LABELS[labels[i]] if i >= 100 or i % 5 else LABELS[1 - labels[i]]
        record = {"id": f"h{i}", "text": texts[i], "label": label}
        record |= {"label_source": "reviewer:llm", "votes": [], "weight": 0.9}
        out.append((f"h{i}".encode(), json.dumps(record).encode()))
    return out


def feedback() -> list[tuple[bytes, bytes]]:
    """Gold for the first 100 reviewed posts (no text), and 60 gold posts that carry text."""
    _, labels = labeled_examples(100, seed=61)
    out = [
        (f"h{i}".encode(), json.dumps({"id": f"h{i}", "label": LABELS[y]}).encode())
        for i, y in enumerate(labels)
    ]
    texts, gold = labeled_examples(60, seed=62)
    for i, (text, y) in enumerate(zip(texts, gold, strict=True)):
        record = {"id": f"g{i}", "label": LABELS[y], "text": text}
        out.append((f"g{i}".encode(), json.dumps(record).encode()))
    return out


def wait_for(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_trainer_keeps_samples_across_restarts_weighs_reviewers_and_announces(
    roles: Roles, sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "registry")
    for directory in sklearn_jurors:
        registry.publish(directory)
    gold_file = tmp_path / "gold.jsonl"
    texts, labels = labeled_examples(300, seed=60)
    gold_file.write_text(
        "".join(
            json.dumps({"text": t, "label": LABELS[y]}) + "\n"
            for t, y in zip(texts, labels, strict=True)
        )
    )
    env = {
        "JURYSTREAM_REGISTRY": registry.url,
        "JURYSTREAM_TRAINER__GATE_TOLERANCE": "0.2",  # this test is about the role, not the gate
    }
    args = ("trainer", "--every-samples", "150", "--gold-data", str(gold_file))
    store = TrainingStore(tmp_path / "var" / "trainer.sqlite")

    first = roles.start(*args, env=env)
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.HARD_SAMPLES), hard_samples(0, 100)))
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.FEEDBACK), feedback()))
    # Records the trainer cannot use are dead-lettered with the reason, not trained on or lost.
    bad_hard = [
        (b"x1", b"\xff not utf-8"),
        (b"x2", json.dumps({"id": "x2", "label": "a"}).encode()),
    ]
    bad_feedback = [(b"x3", b"[1, 2]")]
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.HARD_SAMPLES), bad_hard))
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.FEEDBACK), bad_feedback))
    dead = asyncio.run(
        read_records(
            roles.bootstrap,
            [roles.topic(Topic.DEAD_LETTERS)],
            until=lambda records: len(records) >= 3,
            timeout_s=60,
        )
    )
    assert sorted(r.value["error"].split(":")[0] for r in dead) == [
        "not a feedback record",
        "not a hard sample",
        "not a hard sample",
    ], roles.logs()
    assert {r.value["stage"] for r in dead} == {"trainer"}
    errors = " | ".join(r.value["error"] for r in dead)
    assert "needs a non-empty string 'text'" in errors, errors  # says what to fix
    wait_for(lambda: store.pending_hard_samples() == 100 and len(store.gold_labels()) == 160)
    assert first.stop() == 0, roles.logs()  # below β: no round yet
    assert store.candidates() == []

    roles.start(*args, env=env)  # resumes from the store and the committed offsets
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.HARD_SAMPLES), hard_samples(100, 160)))

    def refined(records: list[Record]) -> bool:
        return set(JURORS) <= {
            r.value.get("name") for r in records if r.value.get("version") == "2"
        }

    updates = asyncio.run(
        read_records(
            roles.bootstrap, [roles.topic(Topic.MODEL_UPDATES)], until=refined, timeout_s=120
        )
    )
    assert refined(updates), roles.logs()
    # Each start re-announced the serving versions; the round announced version 2.
    versions = [r.value for r in updates if r.value.get("kind") != "thresholds"]
    assert [v["version"] for v in versions if v["name"] == "tfidf0"] == ["1", "1", "2"]
    for r in [r for r in updates if r.value.get("kind") != "thresholds"]:
        assert r.key == r.value["name"]
        assert r.value["registry"] == registry.url

    (round_id,) = {c.round for c in store.candidates()}
    assert {c.outcome for c in store.candidates()} == {"promoted"}
    # The LLM agreed with gold on 80 of 100 reviewed posts; the other 20 train on gold labels.
    assert store.reviewer_agreement() == {"reviewer:llm": (80, 100)}
    summary = store.candidates()[0].training
    assert summary["gold_overrides"] == 20
    held = len(store.holdout())
    assert 0 < held < 60
    assert summary["by_origin"]["gold"] == 100 + (60 - held)  # overrides + gold with text
    assert summary["by_origin"]["hard"] == 60
    assert 0.5 < summary["mean_weight"] < 1.0
    assert store.pending_hard_samples() == 0
    assert round_id == 1
