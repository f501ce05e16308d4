"""The whole continual-learning loop as users run it: worker, oracle reviewer and trainer roles.

TweetEval offensive, TF-IDF jurors (MiniLM rounds take minutes each on 2 cores; the
transformer path of a round is covered by tests/test_rounds.py with tiny BERTs): the jurors
start from 200 seed labels, the stream's escalations are answered by the oracle reviewer,
the trainer refines the jurors on those hard samples, the gate compares them on held-out
gold, the new versions are announced and the worker swaps them in. Along the way a share of
the confident labels is audited (reviewed without changing the jury's label), and the
threshold controller, recalibrated after the accepted round, serves the better jurors at a
lower threshold. Then a deliberately bad candidate (shuffled labels) must be rejected by the
same gate.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from jurystream.config import Topic, TrainerSettings
from jurystream.models.rules.continual import Example
from jurystream.models.serving.registry import Registry
from jurystream.models.training.datasets import LabeledSet, load_tweeteval, tweeteval_dir
from jurystream.models.training.rounds import RoundRunner, evaluate_on
from jurystream.models.training.sklearn_juror import build_sklearn_juror
from jurystream.models.training.store import TrainingStore
from jurystream.stream.client import Record, produce, read_records
from tests.fixtures.processes import Roles
from tests.test_bootstrap import data_root

JURORS = {"tfidf0": 1, "tfidf1": 2, "tfidf2": 2}  # name → ngram_max (diverse jurors)
SEED_SIZE = 200
BETA = 400


def posts(data: LabeledSet, indices: range, prefix: str) -> list[tuple[bytes, bytes]]:
    """Posts carrying their gold label in meta.gold, which only the oracle reviewer reads."""
    out = []
    for i in indices:
        post_id = f"{prefix}-{i}"
        value = {"id": post_id, "text": data.texts[i], "meta": {"gold": data.gold()[i]}}
        out.append((post_id.encode(), json.dumps(value).encode()))
    return out


def thresholds(records: list[Record]) -> list[dict[str, Any]]:
    """The controller's announcements, in order."""
    return sorted(
        (r.value for r in records if r.value.get("kind") == "thresholds"), key=lambda v: v["seq"]
    )


def every_juror_refined(records: list[Record]) -> bool:
    """Every juror has had a version after its bootstrap one announced."""
    versions = [r.value for r in records if r.value.get("kind") != "thresholds"]
    return set(JURORS) <= {v["name"] for v in versions if v["version"] != "1"}


@pytest.mark.slow
def test_stream_review_train_swap_beats_bootstrap_and_gate_rejects_shuffled(
    roles: Roles, tmp_path: Path
) -> None:
    directory = tweeteval_dir(data_root(), "offensive")
    train = load_tweeteval(directory, "train")
    val = load_tweeteval(directory, "val")
    seed = train.sample(SEED_SIZE, seed=0)
    seed_texts = set(seed.texts)
    stream = train.subset([i for i in range(len(train)) if train.texts[i] not in seed_texts])

    registry = Registry(tmp_path / "registry")
    holdout = list(zip(val.texts, val.gold(), strict=True))
    bootstrap_accuracy = {}
    for k, (name, ngram) in enumerate(JURORS.items()):
        built = build_sklearn_juror(
            seed.texts,
            seed.labels,
            seed.label_names,
            tmp_path / "built" / name,
            name=name,
            seed=k,
            bootstrap=True,
            ngram_max=ngram,
        )
        registry.publish(built, name=name)
        bootstrap_accuracy[name] = evaluate_on(registry.load(name), holdout)["accuracy"]

    env = {
        "JURYSTREAM_REGISTRY": registry.url,
        "JURYSTREAM_TRAINER__SEED_SIZE": str(SEED_SIZE),
        "JURYSTREAM_TRAINER__GOLD_SIZE": "600",  # the gate sees a sample of val; we test on all
    }
    juror_args = [a for name in JURORS for a in ("--juror", name)]
    roles.start("worker", *juror_args, "--threshold", "0.8", env=env)
    roles.start("reviewer", "--tier", "oracle", env=env)
    trainer = roles.start(
        "trainer",
        "--every-samples",
        str(BETA),
        "--seed-data",
        str(directory),
        "--gold-data",
        str(directory),
        env=env,
    )

    first = posts(stream, range(0, 1500), "wave1")
    first += [(f"bad-{i}".encode(), b"{not json") for i in range(5)]
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.POSTS), first))
    updates = asyncio.run(
        read_records(
            roles.bootstrap,
            [roles.topic(Topic.MODEL_UPDATES)],
            until=every_juror_refined,
            timeout_s=240,
        )
    )
    assert every_juror_refined(updates), roles.logs()
    # Rounds keep coming while hard samples arrive; stopping the trainer settles the versions
    # (it finishes and announces the round in hand first; replaying everything learned makes
    # a round longer than the default stop timeout).
    assert trainer.stop(timeout=240) == 0, roles.logs()
    serving = {name: registry.serving_version(name) for name in JURORS}
    updates = asyncio.run(  # read again: the last round's threshold follows its versions
        read_records(
            roles.bootstrap,
            [roles.topic(Topic.MODEL_UPDATES)],
            until=lambda rs: any(t["versions"] == serving for t in thresholds(rs)),
            timeout_s=30,
        )
    )

    # Every post of the first wave ends in exactly one of labels or dead-letters; audits are
    # reviewed (an audit hard sample) but keep the jury's label.
    ids = {k.decode() for k, _ in first}

    def settled(rs: list[Record]) -> bool:
        """Every post has its fate, and every audited label its audit hard sample (the two
        arrive on different topics: a read that stops at the labels can miss audits)."""
        fated = {r.key for r in rs if not r.topic.endswith("hard-samples")}
        audited = {r.key for r in rs if r.topic.endswith("labels") and r.value.get("audit")}
        sampled = {r.key for r in rs if r.topic.endswith("hard-samples")}
        return ids <= fated and audited & ids <= sampled

    fates = asyncio.run(
        read_records(
            roles.bootstrap,
            [roles.topic(t) for t in (Topic.LABELS, Topic.DEAD_LETTERS, Topic.HARD_SAMPLES)],
            until=settled,
            timeout_s=120,
        )
    )
    out: dict[str, list[Record]] = {}
    for r in fates:
        if r.key in ids and not r.topic.endswith("hard-samples"):
            out.setdefault(r.key, []).append(r)
    assert set(out) == ids and all(len(rs) == 1 for rs in out.values()), roles.logs()
    assert {k for k, (r,) in out.items() if r.topic.endswith("dead-letters")} == {
        f"bad-{i}" for i in range(5)
    }
    audits = [r.value for r in fates if r.topic.endswith("hard-samples")]
    audits = [v for v in audits if v["kind"] == "audit" and v["id"] in ids]
    audited = {k for k, (r,) in out.items() if r.value.get("audit")}
    assert audited == {a["id"] for a in audits}, "an audited label without its review"
    assert len(audits) >= 5, len(audits)  # jury.audit_rate 2% of ~1,200 confident labels
    for audit in audits:
        (label,) = out[audit["id"]]
        assert label.value["source"] == "jury" and label.value.get("audit") is True
        assert label.value["label"] == audit["jury_label"]

    # The controller calibrated the bootstrap jury at start and the refined jury after its
    # accepted round: better jurors meet the same target with fewer escalations.
    announced = thresholds(updates)
    assert announced[0]["versions"] == dict.fromkeys(JURORS, "1"), announced
    (last,) = [t for t in thresholds(updates) if t["versions"] == serving][-1:] or [None]
    assert last is not None, (announced, serving)
    assert last["threshold"] < announced[0]["threshold"], announced
    store = TrainingStore(tmp_path / "var" / "trainer.sqlite")
    rounds = store.candidates()
    assert {c.juror for c in rounds if c.outcome == "promoted"} == set(JURORS)
    assert not [c for c in rounds if c.outcome == "failed"], [c.reason for c in rounds]

    # The refined jurors beat their bootstrap versions on the whole val split.
    for name, version in serving.items():
        assert version != "1"
        refined = evaluate_on(registry.load(name), holdout)["accuracy"]
        assert refined > bootstrap_accuracy[name], (name, refined, bootstrap_accuracy)
        (update,) = [r.value for r in updates if r.value.get("name") == name][-1:]
        assert update["sha256"] and update["location"].endswith(f"/{name}/{update['version']}")
        assert update["metrics"]["accuracy"] > 0

    # The worker swapped: what it scores from now on names the serving version of every juror.
    time.sleep(3)
    second = posts(stream, range(1500, 1800), "wave2")
    asyncio.run(produce(roles.bootstrap, roles.topic(Topic.POSTS), second))
    expected = {k.decode() for k, _ in second}
    outputs = asyncio.run(
        read_records(
            roles.bootstrap,
            [roles.topic(Topic.LABELS), roles.topic(Topic.REVIEW)],
            until=lambda rs: expected <= {r.key for r in rs},
            timeout_s=120,
        )
    )
    later = [r for r in outputs if r.key in expected]
    assert {r.key for r in later} == expected, roles.logs()
    assert all(r.value["model_versions"] == serving for r in later), serving
    # ...and at the threshold the controller chose for those versions.
    assert all(r.value["threshold"] == last["threshold"] for r in later), last

    # A deliberately bad candidate: the store flooded with shuffled labels is rejected.
    published = {name: registry.versions(name) for name in JURORS}
    # A store holding nothing but shuffled labels: the candidate is trained on noise alone.
    labels = list(stream.gold()[2000:6000])
    random.Random(0).shuffle(labels)
    store = TrainingStore(tmp_path / "shuffled.sqlite")
    store.add_hard_samples(
        Example(f"bad-{i}", stream.texts[2000 + i], label, "hard", "oracle", 1.0)
        for i, label in enumerate(labels)
    )
    gate_set = holdout[:600]
    # Macro-F1: on this imbalanced set a noise-trained juror that predicts the majority class
    # can tie a weak serving juror on accuracy, never on macro-F1.
    gate = TrainerSettings(gate_metric="macro_f1")
    result = RoundRunner(store, registry, gate, gate_set).run("samples")
    assert result is not None
    for candidate in result.candidates:
        assert candidate.outcome == "rejected", (candidate.juror, candidate.reason)
        assert candidate.metrics["macro_f1"] < candidate.serving_metrics["macro_f1"]
        assert registry.versions(candidate.juror) == published[candidate.juror]
