"""Audit sampling, the threshold controller and selection under a review budget: pure rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jurystream.config import ControllerSettings, Settings
from jurystream.models.rules.audit import (
    corrected_accuracy,
    estimate,
    estimates_by_label,
    is_audited,
    wilson_interval,
)
from jurystream.models.rules.selection import ReviewAllowance, select_informative, words
from jurystream.models.rules.thresholds import (
    OperatingPoint,
    audit_gap,
    choose_threshold,
    target_accuracy,
)
from jurystream.models.rules.voting import Decision, Vote
from jurystream.models.serving.registry import Registry
from jurystream.models.training.controller import ThresholdController
from jurystream.models.training.store import TrainingStore
from jurystream.stream.feed import LABELS, labeled_examples
from jurystream.stream.records import Invalid, ModelUpdate, Post, ThresholdUpdate, parse_update
from jurystream.stream.routing import route

# --- audit ----------------------------------------------------------------------------------


def test_audit_sampling_is_stable_and_hits_its_rate() -> None:
    ids = [f"post-{i}" for i in range(20_000)]
    sampled = [i for i in ids if is_audited(i, 0.02)]
    assert 0.015 < len(sampled) / len(ids) < 0.025
    assert sampled == [i for i in ids if is_audited(i, 0.02)]  # a replay decides the same
    assert not any(is_audited(i, 0.0) for i in ids[:1000])
    assert all(is_audited(i, 1.0) for i in ids[:1000])


@given(st.integers(0, 500), st.integers(1, 500))
def test_wilson_interval_holds_the_point_estimate_inside_0_1(k: int, n: int) -> None:
    k = min(k, n)
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_interval_narrows_with_more_audits() -> None:
    small = wilson_interval(8, 10)
    large = wilson_interval(800, 1000)
    assert small[1] - small[0] > 5 * (large[1] - large[0])
    assert wilson_interval(0, 0) == (0.0, 1.0)


@given(st.floats(0.0, 1.0), st.floats(0.6, 1.0), st.integers(2, 6))
def test_corrected_accuracy_inverts_the_agreement_of_a_noisy_reviewer(
    p: float, r: float, k: int
) -> None:
    agreement = p * r + (1 - p) * (1 - r) / (k - 1)
    assert corrected_accuracy(agreement, r, k) == pytest.approx(p, abs=1e-9)


def test_estimates_by_label_are_per_jury_label_precisions() -> None:
    outcomes = [("a", "a")] * 8 + [("a", "b")] * 2 + [("b", "b")] * 5
    est = estimates_by_label(outcomes)
    assert list(est) == ["all", "a", "b"]
    assert (est["all"].agreed, est["all"].total) == (13, 15)
    assert est["a"].accuracy == pytest.approx(0.8)
    assert est["b"].accuracy == 1.0 and est["b"].low < 1.0
    assert est["all"].covers(13 / 15)
    assert math.isnan(estimate(0, 0).accuracy)
    with pytest.raises(ValueError):
        estimate(3, 2)


# --- controller -----------------------------------------------------------------------------


def curve(*points: tuple[float, float, int, float]) -> list[OperatingPoint]:
    return [OperatingPoint(*p) for p in points]


CURVE = curve(
    (0.5, 0.05, 950, 0.80),
    (0.6, 0.15, 850, 0.86),
    (0.7, 0.30, 700, 0.91),
    (0.8, 0.50, 500, 0.95),
    (0.9, 0.80, 200, 0.97),
)


def test_controller_picks_the_least_escalating_threshold_that_meets_the_target() -> None:
    decision = choose_threshold(CURVE, target=0.9)
    assert decision.threshold == 0.7
    assert decision.expected_escalation == 0.30
    assert "meets target" in decision.reason


def test_better_jurors_get_a_lower_threshold_at_the_same_target() -> None:
    improved = curve(
        (0.5, 0.04, 960, 0.86),
        (0.6, 0.12, 880, 0.91),
        (0.7, 0.25, 750, 0.94),
    )
    assert choose_threshold(improved, 0.9).threshold < choose_threshold(CURVE, 0.9).threshold


def test_review_budget_caps_escalation_even_below_the_target() -> None:
    decision = choose_threshold(CURVE, target=0.95, max_escalation=0.2)
    assert decision.threshold == 0.6 and decision.expected_escalation <= 0.2
    assert "budget" in decision.reason


def test_unreachable_target_accepts_only_what_the_jury_is_best_at() -> None:
    decision = choose_threshold(CURVE, target=0.99)
    assert decision.threshold == 0.9
    assert "no threshold reaches" in decision.reason


def test_points_measured_on_too_few_labels_do_not_count() -> None:
    thin = curve((0.5, 0.1, 900, 0.80), (0.9, 0.99, 5, 1.0))
    assert choose_threshold(thin, target=0.95).threshold == 0.5


def test_target_defaults_to_reviewer_accuracy_minus_margin() -> None:
    assert target_accuracy(None, 0.92, 0.05) == pytest.approx(0.87)
    assert target_accuracy(0.8, 0.92, 0.05) == 0.8
    assert target_accuracy(None, 0.02, 0.05) == 0.0


def test_audit_gap_raises_the_target_when_the_stream_is_harder() -> None:
    worse = estimate(70, 100)  # the gold set predicted 0.91 at 0.7
    gap = audit_gap(CURVE, 0.7, worse, shrink=50)
    assert gap == pytest.approx((0.91 - 0.70) * 100 / 150)
    assert choose_threshold(CURVE, 0.9 + gap).threshold > 0.7
    assert audit_gap(CURVE, 0.7, None) == 0.0


def test_audits_better_than_gold_never_lower_the_target() -> None:
    """They saw only what the serving threshold accepts; a lower one accepts what they did not."""
    better = estimate(100, 100)  # the gold set predicted 0.91 at 0.7
    assert audit_gap(CURVE, 0.7, better, shrink=0) == 0.0
    assert choose_threshold(CURVE, 0.9 + audit_gap(CURVE, 0.7, better)).threshold == (
        choose_threshold(CURVE, 0.9).threshold
    )


# --- selection under a budget ---------------------------------------------------------------


def test_selection_prefers_uncertain_and_skips_near_duplicates() -> None:
    texts = [
        words("buy cheap pills now"),
        words("buy cheap pills now!!"),
        words("what a lovely day"),
        words("you are an idiot"),
    ]
    uncertainty = [0.5, 0.5, 0.1, 0.45]
    assert select_informative(uncertainty, texts, 2) == [0, 3]
    assert select_informative(uncertainty, texts, 0) == []
    assert select_informative(uncertainty, texts, 9) == [0, 1, 2, 3]


@given(st.lists(st.floats(0.0, 1.0), max_size=20), st.integers(0, 25))
def test_selection_returns_k_distinct_indices(uncertainty: list[float], k: int) -> None:
    texts = [frozenset({str(i % 3)}) for i in range(len(uncertainty))]
    chosen = select_informative(uncertainty, texts, k)
    assert chosen == sorted(set(chosen))
    assert len(chosen) == min(k, len(uncertainty))


def test_allowance_pays_its_rate_in_the_long_run_and_caps_bursts() -> None:
    allowance = ReviewAllowance(rate=0.1, burst=5, credit=0)
    granted = 0
    for _ in range(100):
        allowance.earn(32)
        granted += allowance.grant(10)  # far more escalations than the budget
    assert 310 <= granted <= 320
    idle = ReviewAllowance(rate=0.1, burst=5, credit=0)
    idle.earn(10_000)
    assert idle.grant(100) == 5


# --- routing --------------------------------------------------------------------------------


def decision(escalated: bool, confidence: float) -> Decision:
    vote = Vote("j", "a", confidence)
    return Decision("a", confidence, (vote,), escalated, "low" if escalated else None)


def test_every_post_gets_a_label_or_a_review_and_audits_get_both() -> None:
    posts = [Post(id=f"p{i}", text=f"text number {i}") for i in range(400)]
    decisions = [decision(i % 4 == 0, 0.5 if i % 4 == 0 else 0.9) for i in range(400)]
    routes = route(posts, decisions, audit_rate=0.1)
    assert [r.post for r in routes] == posts
    for r in routes:
        assert r.label or r.review == "escalation"
        assert (r.review == "escalation") == r.decision.escalated
        assert not r.unreviewed
    audits = [r for r in routes if r.review == "audit"]
    assert 10 < len(audits) < 60 and all(r.label and not r.decision.escalated for r in audits)


def test_budget_reviews_the_most_uncertain_and_flags_the_rest() -> None:
    posts = [Post(id=f"p{i}", text=f"distinct words {i} here") for i in range(10)]
    confidences = [0.9, 0.4, 0.9, 0.55, 0.9, 0.6, 0.9, 0.35, 0.9, 0.9]
    decisions = [decision(c < 0.7, c) for c in confidences]
    allowance = ReviewAllowance(rate=0.2, burst=2, credit=0)
    routes = route(posts, decisions, 0.0, allowance)
    reviewed = [r.post.id for r in routes if r.review == "escalation"]
    assert reviewed == ["p1", "p7"]  # the two least confident of four escalations
    flagged = [r.post.id for r in routes if r.unreviewed]
    assert flagged == ["p3", "p5"] and all(r.label for r in routes if r.unreviewed)


# --- thresholds travel on model-updates -----------------------------------------------------


def test_threshold_updates_parse_and_apply_only_to_their_versions() -> None:
    update = ThresholdUpdate(
        policy="threshold", threshold=0.74, versions={"a": "3", "b": "2"}, seq=1.0, reason="round 2"
    )
    parsed = parse_update(json.dumps(json.loads(update.to_bytes()) | {"extra": 1}).encode())
    assert parsed == update
    assert update.matches({"a": "3", "b": "2", "c": "1"})
    assert not update.matches({"a": "2", "b": "2"})
    model = parse_update(
        json.dumps({"name": "a", "version": "3", "registry": "/r", "sha256": "x"}).encode()
    )
    assert isinstance(model, ModelUpdate)
    for bad in (
        {"kind": "thresholds", "policy": "threshold", "threshold": 1.5, "versions": {"a": "1"}},
        {"kind": "thresholds", "policy": "threshold", "threshold": 0.5, "versions": {}},
    ):
        assert isinstance(parse_update(json.dumps(bad).encode()), Invalid)


def test_operating_curve_escalates_more_as_the_threshold_rises(tiny_jurors) -> None:
    from jurystream.models.serving.juror import load_juror
    from jurystream.models.training.evaluation import (
        juror_probabilities,
        operating_curve,
        replay_jurors,
    )
    from tests.fixtures.models import gibberish

    jurors = [load_juror(p) for p in tiny_jurors]
    texts = gibberish(200)
    truth = list(np.arange(200) % len(jurors[0].labels))
    replay = replay_jurors(juror_probabilities(jurors, texts), texts, jurors)
    points = operating_curve(replay, "threshold", texts, truth, [0.3, 0.5, 0.7, 0.9])
    escalation = [p.escalation for p in points]
    assert escalation == sorted(escalation)
    assert all(p.accepted == round((1 - p.escalation) * 200) for p in points)


def test_controller_weighs_only_audits_of_the_jury_it_calibrates(
    sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "registry")
    for juror in sklearn_jurors:
        registry.publish(juror)
    texts, labels = labeled_examples(300, seed=5)
    gold = [(t, LABELS[y]) for t, y in zip(texts, labels, strict=True)]
    settings = Settings().model_copy(update={"controller": ControllerSettings(target_accuracy=0.8)})
    store = TrainingStore(tmp_path / "trainer.sqlite")
    controller = ThresholdController(settings, registry, store, gold, registry.jurors())
    first = controller.decide()
    assert first is not None and first.audit is None
    threshold = first.decision.threshold

    # The live stream: the reviewer disagrees with half of 100 audited labels at that threshold.
    store.add_audits(
        [(f"a{i}", LABELS[1], LABELS[i % 2], threshold) for i in range(100)]
        + [(f"old{i}", LABELS[1], LABELS[1], 0.123) for i in range(50)]  # another threshold
    )
    assert controller.audits_since_decision() == 100
    second = controller.decide()
    assert second is not None and second.audit is not None and second.audit.total == 100
    assert second.decision.target_accuracy > first.decision.target_accuracy
    assert second.decision.threshold >= threshold

    # A refined juror serves: what the audits measured of the old jury says nothing about it.
    registry.publish(sklearn_jurors[0], name="tfidf0")
    third = controller.decide()
    assert third is not None and third.versions["tfidf0"] == "2"
    assert third.audit is None
    assert third.decision.target_accuracy == pytest.approx(0.8)
    assert controller.audits_since_decision() == 0
