"""Continual learning rules (trigger, replay, weights, gate) and the SQLite training store."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jurystream.models.rules.continual import (
    GOLD_WEIGHT,
    Example,
    example_weight,
    gate,
    held_out,
    reliability,
    replay_sample,
    round_due,
    training_set,
)
from jurystream.models.training.datasets import LabeledSet
from jurystream.models.training.store import CandidateRecord, TrainingStore

LABELS = ("not-offensive", "offensive")


def hard(i: int, label: str = "offensive", source: str = "oracle", conf: float = 1.0) -> Example:
    return Example(f"m{i}", f"text {i}", label, "hard", source, conf)


# --- trigger ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("new", "since_s", "expected"),
    [
        (0, 10_000, None),  # the timer never retrains on nothing
        (5, 60, None),
        (5, 30 * 60, "timer"),
        (10, 0, "samples"),
        (11, 30 * 60, "samples"),
    ],
)
def test_round_due_every_beta_samples_or_every_t_minutes(
    new: int, since_s: float, expected: str | None
) -> None:
    due = round_due(new, every_samples=10, seconds_since_last=since_s, every_minutes=30)
    assert due == expected


# --- replay ----------------------------------------------------------------------------------


def test_replay_is_ratio_times_new_and_keeps_the_label_mix() -> None:
    earlier = [hard(i, "offensive") for i in range(300)] + [
        hard(1000 + i, "not-offensive") for i in range(700)
    ]
    sample = replay_sample(earlier, new_count=100, ratio=2.0, seed=3)
    assert len(sample) == 200
    assert len({e.id for e in sample}) == 200  # without replacement
    counts = Counter(e.label for e in sample)
    assert counts == {"offensive": 60, "not-offensive": 140}
    assert replay_sample(earlier, 100, 2.0, seed=3) == sample  # reproducible per round
    assert replay_sample(earlier, 100, 2.0, seed=4) != sample


def test_replay_takes_everything_when_history_is_short() -> None:
    earlier = [hard(i) for i in range(5)]
    assert sorted(e.id for e in replay_sample(earlier, 100, 1.0, seed=0)) == sorted(
        e.id for e in earlier
    )
    assert replay_sample(earlier, 100, 0.0, seed=0) == []
    assert replay_sample([], 100, 1.0, seed=0) == []


@given(
    labels=st.lists(st.sampled_from("abc"), min_size=0, max_size=60),
    new=st.integers(0, 80),
    ratio=st.floats(0, 3),
)
def test_replay_size_property(labels: list[str], new: int, ratio: float) -> None:
    earlier = [hard(i, y) for i, y in enumerate(labels)]
    sample = replay_sample(earlier, new, ratio, seed=1)
    assert len(sample) == min(len(earlier), round(new * ratio))
    assert len({e.id for e in sample}) == len(sample)


# --- weights ---------------------------------------------------------------------------------


def test_reliability_starts_at_the_prior_and_converges_below_one() -> None:
    assert reliability(0, 0, prior=0.8, strength=10) == pytest.approx(0.8)
    assert reliability(900, 1000, 0.8, 10) == pytest.approx((900 + 8) / 1010)
    assert reliability(1000, 1000, 0.8, 10) < 1.0
    assert reliability(0, 50, 0.8, 10) < 0.15
    with pytest.raises(ValueError):
        reliability(3, 2, 0.8, 10)


def test_gold_outweighs_every_reviewer_label() -> None:
    trust = {"oracle": reliability(500, 500, 0.8, 10), "llm": reliability(60, 100, 0.8, 10)}
    seed = Example("s", "t", "offensive", "seed", "seed")
    gold = Example("g", "t", "offensive", "gold", "gold")
    assert example_weight(seed, trust, 0.8) == example_weight(gold, trust, 0.8) == GOLD_WEIGHT
    best = example_weight(hard(1, source="oracle"), trust, 0.8)
    worse = example_weight(hard(2, source="llm"), trust, 0.8)
    unsure = example_weight(hard(3, source="llm", conf=0.5), trust, 0.8)
    unknown = example_weight(hard(4, source="new-reviewer"), trust, 0.8)
    assert GOLD_WEIGHT > best > worse > unsure > 0
    assert unknown == pytest.approx(0.8)


def test_training_set_prefers_gold_and_skips_unknown_labels() -> None:
    examples = [
        hard(1, "offensive"),
        hard(2, "offensive"),  # gold feedback says otherwise
        hard(3, "spam"),  # not a label of this juror
        hard(1, "offensive"),  # an at-least-once duplicate
        Example("s1", "seed text", "not-offensive", "seed", "seed"),
    ]
    data = training_set(examples, LABELS, {"m2": "not-offensive"}, {"oracle": 0.9}, 0.8)
    assert data.texts == ("text 1", "text 2", "seed text")
    assert data.labels == (1, 0, 0)
    assert data.weights == (pytest.approx(0.9), GOLD_WEIGHT, GOLD_WEIGHT)
    assert data.summary["skipped_unknown_label"] == 1
    assert data.summary["unknown_labels"] == {"spam": 1}
    assert data.summary["gold_overrides"] == 1
    assert data.summary["by_origin"] == {"gold": 1, "hard": 1, "seed": 1}


def test_held_out_share_is_stable_and_about_right() -> None:
    ids = [f"post-{i}" for i in range(4000)]
    chosen = [i for i in ids if held_out(i, 0.25)]
    assert 0.22 < len(chosen) / len(ids) < 0.28
    assert chosen == [i for i in ids if held_out(i, 0.25)]
    assert not any(held_out(i, 0.0) for i in ids)
    assert all(held_out(i, 1.0) for i in ids)


# --- gate ------------------------------------------------------------------------------------


def test_gate_rejects_a_candidate_worse_than_serving_beyond_tolerance() -> None:
    serving = {"accuracy": 0.80, "macro_f1": 0.70}
    assert gate({"accuracy": 0.82}, serving, 0.01).accepted
    assert gate({"accuracy": 0.795}, serving, 0.01).accepted  # within tolerance
    worse = gate({"accuracy": 0.75}, serving, 0.01)
    assert not worse.accepted
    assert "below serving" in worse.reason
    assert worse.to_dict()["candidate"] == 0.75
    assert not gate({"accuracy": 0.9, "macro_f1": 0.5}, serving, 0.01, "macro_f1").accepted
    assert not gate({"accuracy": math.nan}, serving, 0.01).accepted
    assert not gate({}, serving, 0.01).accepted


# --- store -----------------------------------------------------------------------------------


def test_store_counts_new_samples_replays_idempotently_and_survives_reopen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "var" / "trainer.sqlite"
    store = TrainingStore(path)
    seed = LabeledSet(("a", "b", "c"), (0, 1, 0), LABELS)
    assert store.add_seed(seed) == 3
    assert store.add_seed(seed) == 0
    store.add_hard_samples([hard(i) for i in range(5)])
    assert store.pending_hard_samples() == 5
    assert [e.origin for e in store.earlier_examples()] == ["seed"] * 3

    round_id = store.begin_round("samples", 5)
    store.mark_trained(store.new_examples(), round_id)
    assert store.pending_hard_samples() == 0
    # A replayed record (at-least-once) is not new again; a relabel is kept.
    store.add_hard_samples([hard(0, "not-offensive"), hard(9)])
    assert [e.id for e in store.new_examples()] == ["m9"]
    reopened = TrainingStore(path)
    earlier = {e.id: e for e in reopened.earlier_examples()}
    assert earlier["m0"].label == "not-offensive" and len(earlier) == 8
    assert reopened.last_round_started() is not None


def test_store_gold_feedback_measures_reviewers_and_splits_a_holdout(tmp_path: Path) -> None:
    store = TrainingStore(tmp_path / "t.sqlite")
    store.add_hard_samples(
        [hard(i, "offensive", "llm") for i in range(10)]
        + [hard(100 + i, "offensive", "oracle") for i in range(4)]
    )
    for i in range(10):  # the llm was right on 7 of 10
        store.add_gold(f"m{i}", "offensive" if i < 7 else "not-offensive", None, 0.5)
    for i in range(4):
        store.add_gold(f"m{100 + i}", "offensive", None, 0.5)
    assert store.reviewer_agreement() == {"llm": (7, 10), "oracle": (4, 4)}
    assert store.gold_labels()["m8"] == "not-offensive"

    texts = {f"fb{i}": f"feedback text {i}" for i in range(200)}
    for post_id, text in texts.items():
        store.add_gold(post_id, "offensive", text, 0.3)
    holdout = store.holdout()
    trained = [e for e in store.new_examples() if e.origin == "gold"]
    assert len(holdout) + len(trained) == 200
    assert 40 < len(holdout) < 80
    assert not {t for t, _ in holdout} & {e.text for e in trained}  # never both


def test_store_records_candidates(tmp_path: Path) -> None:
    store = TrainingStore(tmp_path / "t.sqlite")
    round_id = store.begin_round("timer", 3)
    record = CandidateRecord(
        round_id, "tfidf0", "1", "rejected", None, "worse", {"accuracy": 0.5}, {}, {}, 1.5
    )
    store.record_candidate(record)
    store.finish_round(round_id, "rejected")
    assert store.candidates() == [record]
    assert store.candidates(round_id + 1) == []
