"""Voting policies and the jury's cascade, property-based where the rule is universal."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from jurystream.models.rules.voting import majority, threshold_policy, unanimous, weighted
from jurystream.models.serving.jury import Jury

LABELS = ("a", "b", "c")
NAMES = ("j0", "j1", "j2")


def probs_strategy(jurors: int = 3, labels: int = 3) -> st.SearchStrategy[np.ndarray]:
    raw = arrays(np.float64, (jurors, labels), elements=st.floats(0.01, 1.0))
    return raw.map(lambda m: m / m.sum(axis=1, keepdims=True))


@given(probs_strategy(), st.floats(0, 1))
def test_unanimous_never_accepts_a_split_vote(probs: np.ndarray, threshold: float) -> None:
    decision = unanimous(probs, NAMES, LABELS, threshold)
    if len(set(probs.argmax(axis=1))) > 1:
        assert decision.escalated
        assert decision.reason and decision.reason.startswith("split vote")
    else:
        assert decision.label == LABELS[int(probs[0].argmax())]


@given(probs_strategy(), st.floats(0, 1))
def test_unanimous_accepts_only_when_every_juror_clears_the_threshold(
    probs: np.ndarray, threshold: float
) -> None:
    decision = unanimous(probs, NAMES, LABELS, threshold)
    if not decision.escalated:
        assert all(v.confidence >= threshold for v in decision.votes)
        assert len({v.label for v in decision.votes}) == 1


@given(probs_strategy())
def test_every_decision_records_every_vote(probs: np.ndarray) -> None:
    for decision in (
        unanimous(probs, NAMES, LABELS),
        majority(probs, NAMES, LABELS),
        weighted(probs, NAMES, LABELS, 0.5, {"j0": 2.0}),
        threshold_policy(probs, NAMES, LABELS, 0.5),
    ):
        assert [v.juror for v in decision.votes] == list(NAMES)
        assert decision.escalated == (decision.reason is not None)
        assert decision.label in LABELS


@given(probs_strategy())
def test_majority_accepts_only_a_strict_majority(probs: np.ndarray) -> None:
    decision = majority(probs, NAMES, LABELS)
    agreeing = sum(v.label == decision.label for v in decision.votes)
    assert decision.escalated == (agreeing * 2 <= len(NAMES))


def test_majority_of_two_to_one() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.1, 0.9, 0.0]])
    decision = majority(probs, NAMES, LABELS, 0.5)
    assert not decision.escalated and decision.label == "a"
    assert decision.confidence == pytest.approx((0.9 + 0.8 + 0.1) / 3)


def test_weighted_follows_the_heavier_juror() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.2, 0.8, 0.0]])
    assert weighted(probs, NAMES, LABELS, 0.5, {}).label == "b"
    assert weighted(probs, NAMES, LABELS, 0.5, {"j0": 10.0}).label == "a"
    with pytest.raises(ValueError, match="positive sum"):
        weighted(probs, NAMES, LABELS, 0.5, {"j0": 0, "j1": 0, "j2": 0})


@given(probs_strategy(), st.floats(0, 1))
def test_threshold_policy_escalates_below_threshold(probs: np.ndarray, t: float) -> None:
    decision = threshold_policy(probs, NAMES, LABELS, t)
    assert decision.escalated == (probs.mean(axis=0).max() < t)


class RecordingJuror:
    """A juror with fixed answers per text that records which texts it was asked about."""

    def __init__(self, name: str, cost: float, answers: dict[str, list[float]]) -> None:
        self.name = name
        self.version = "1"
        self.labels = LABELS
        self.cost = cost
        self.answers = answers
        self.asked: list[str] = []

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self.asked.extend(texts)
        return np.array([self.answers[t] for t in texts], dtype=np.float32)


answer = st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3).map(
    lambda xs: [x / sum(xs) for x in xs]
)


@settings(max_examples=60)
@given(
    st.dictionaries(st.text(min_size=1, max_size=5), st.tuples(answer, answer, answer), min_size=1),
    st.floats(0.34, 1.0),
)
def test_cascade_never_calls_a_later_juror_when_an_earlier_one_is_confident(
    table: dict[str, tuple[list[float], list[float], list[float]]], threshold: float
) -> None:
    texts = list(table)
    # Deliberately listed out of cost order: the cascade must sort by cost.
    jurors = [
        RecordingJuror("mid", 2.0, {t: a[1] for t, a in table.items()}),
        RecordingJuror("cheap", 1.0, {t: a[0] for t, a in table.items()}),
        RecordingJuror("dear", 3.0, {t: a[2] for t, a in table.items()}),
    ]
    jury = Jury(tuple(jurors), policy="cascade", threshold=threshold)
    decisions = jury.decide(texts)
    cheap, mid, dear = jurors[1], jurors[0], jurors[2]
    assert cheap.asked == texts
    for text, decision in zip(texts, decisions, strict=True):
        first, second, _ = table[text]
        if max(first) >= threshold:
            assert text not in mid.asked and text not in dear.asked
            assert [v.juror for v in decision.votes] == ["cheap"]
            assert not decision.escalated
        elif max(second) >= threshold:
            assert text in mid.asked and text not in dear.asked
        else:
            assert text in dear.asked
        if decision.escalated:
            assert [v.juror for v in decision.votes] == ["cheap", "mid", "dear"]


def test_jury_refuses_mismatched_label_sets_and_unknown_policy() -> None:
    a = RecordingJuror("a", 1, {})
    b = RecordingJuror("b", 1, {})
    b.labels = ("x", "y", "z")
    with pytest.raises(
        ValueError, match=r"label sets differ .*only in the first: \['x', 'y', 'z'\]"
    ):
        Jury((a, b))
    with pytest.raises(ValueError, match="unknown voting policy"):
        Jury((a,), policy="dictator")


def test_with_juror_replaces_by_name_and_keeps_order() -> None:
    a, b = RecordingJuror("a", 1, {}), RecordingJuror("b", 1, {})
    newer = RecordingJuror("a", 1, {})
    newer.version = "2"
    jury = Jury((a, b)).with_juror(newer)
    assert [j.name for j in jury.jurors] == ["a", "b"]
    assert jury.versions == {"a": "2", "b": "1"}
