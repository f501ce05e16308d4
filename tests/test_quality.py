"""Rolling accuracy / macro-F1 checked against scikit-learn, PSI by its properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score

from jurystream.models.rules.quality import (
    LabelWindow,
    RollingQuality,
    psi,
    shares,
)

LABELS = st.sampled_from(["neg", "neu", "pos", "spam"])
PAIRS = st.lists(st.tuples(LABELS, LABELS), min_size=1, max_size=200)
COUNTS = st.dictionaries(LABELS, st.integers(0, 1000), min_size=1).filter(
    lambda d: sum(d.values()) > 0
)


def test_an_empty_window_is_nan_not_a_perfect_score() -> None:
    assert math.isnan(RollingQuality(5).accuracy())
    assert math.isnan(RollingQuality(5).macro_f1())


@given(PAIRS, st.integers(1, 50))
def test_rolling_window_scores_only_the_last_pairs(pairs: list[tuple[str, str]], size: int) -> None:
    window = RollingQuality(size)
    for gold, pred in pairs:
        window.add(gold, pred)
    recent = pairs[-size:]
    assert len(window) == len(recent)
    gold, pred = [g for g, _ in recent], [p for _, p in recent]
    assert window.accuracy() == pytest.approx(accuracy_score(gold, pred))
    assert window.macro_f1() == pytest.approx(
        f1_score(gold, pred, average="macro", zero_division=0)
    )


@given(COUNTS)
def test_psi_of_a_distribution_with_itself_is_zero(counts: dict[str, int]) -> None:
    assert psi(counts, counts) == pytest.approx(0.0, abs=1e-12)
    scaled = {k: 3 * v for k, v in counts.items()}
    assert psi(counts, scaled) == pytest.approx(0.0, abs=1e-12)


@given(COUNTS, COUNTS)
def test_psi_is_non_negative_and_symmetric(a: dict[str, int], b: dict[str, int]) -> None:
    assert psi(a, b) >= 0.0
    assert psi(a, b) == pytest.approx(psi(b, a))


def test_psi_grows_with_the_shift_and_flags_a_big_one() -> None:
    reference = {"neg": 0.5, "pos": 0.5}
    small = psi(reference, {"neg": 55, "pos": 45})
    large = psi(reference, {"neg": 90, "pos": 10})
    assert 0 < small < 0.1 < 0.25 < large
    # A label the training data never had is finite, and a clear shift.
    assert 0.25 < psi(reference, {"neg": 40, "pos": 40, "new": 20}) < math.inf


def test_shares_rejects_what_is_not_a_distribution() -> None:
    with pytest.raises(ValueError):
        shares({"a": 0, "b": 0})
    with pytest.raises(ValueError):
        shares({"a": -1, "b": 2})


@given(st.lists(LABELS, max_size=100), st.integers(1, 30))
def test_label_window_counts_the_last_labels(labels: list[str], size: int) -> None:
    window = LabelWindow(size)
    for label in labels:
        window.add(label)
    recent = labels[-size:]
    expected = {lab: recent.count(lab) for lab in set(recent)}
    assert window.counts() == expected
    assert window.full == (len(labels) >= size)


def test_windows_refuse_a_zero_size() -> None:
    with pytest.raises(ValueError):
        RollingQuality(0)
    with pytest.raises(ValueError):
        LabelWindow(0)
