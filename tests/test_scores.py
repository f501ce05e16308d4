"""Label-quality math: small hand-worked examples and the properties every caller relies on."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jurystream.models.rules.scores import (
    accuracy,
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    majority_baseline,
    per_class_recall,
)

NAMES = ["neg", "neu", "pos", "spam"]
PAIRS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=200)


def test_small_example_by_hand() -> None:
    truth = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 2, 2]
    assert accuracy(truth, pred) == pytest.approx(4 / 6)
    # F1 per label = 2TP / (true + predicted): 4/5, 2/4, 2/3.
    assert macro_f1(truth, pred) == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)
    assert confusion_matrix(truth, pred, 4).tolist() == [
        [2, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 0],
    ]
    recall = per_class_recall(truth, pred, 4)
    assert recall[:3].tolist() == pytest.approx([2 / 3, 1 / 2, 1.0])
    assert math.isnan(recall[3])  # never true: no evidence, not a recall of 0


def test_empty_input_is_nan_not_a_perfect_score() -> None:
    assert math.isnan(accuracy([], []))
    assert math.isnan(macro_f1([], []))
    assert math.isnan(expected_calibration_error(np.zeros((0, 2)), []))


def test_macro_f1_penalises_a_minority_class_that_accuracy_hides() -> None:
    truth, pred = ["ok"] * 9 + ["bad"], ["ok"] * 10
    assert accuracy(truth, pred) == pytest.approx(0.9)
    assert macro_f1(truth, pred) == pytest.approx((2 * 9 / 19 + 0) / 2)


def test_an_invented_label_counts_as_zero_f1() -> None:
    assert macro_f1(["a", "a"], ["a", "b"]) == pytest.approx((2 / 3 + 0) / 2)


@given(PAIRS)
def test_scores_do_not_depend_on_how_labels_are_named(pairs: list[tuple[int, int]]) -> None:
    ids_true, ids_pred = [t for t, _ in pairs], [p for _, p in pairs]
    names_true, names_pred = [NAMES[t] for t in ids_true], [NAMES[p] for p in ids_pred]
    assert accuracy(names_true, names_pred) == pytest.approx(accuracy(ids_true, ids_pred))
    assert macro_f1(names_true, names_pred) == pytest.approx(macro_f1(ids_true, ids_pred))


@given(PAIRS)
def test_scores_are_bounded_and_perfect_only_when_all_agree(pairs: list[tuple[int, int]]) -> None:
    truth, pred = [t for t, _ in pairs], [p for _, p in pairs]
    assert 0.0 <= macro_f1(truth, pred) <= 1.0
    assert (accuracy(truth, pred) == 1.0) == (truth == pred)
    assert (macro_f1(truth, pred) == pytest.approx(1.0)) == (truth == pred)
    assert confusion_matrix(truth, pred, 4).sum() == len(pairs)
    assert np.trace(confusion_matrix(truth, pred, 4)) == sum(t == p for t, p in pairs)


def test_ece_known_values() -> None:
    # Confidence 0.8 everywhere, 80% right: perfectly calibrated.
    probs = np.tile([0.8, 0.2], (10, 1))
    assert expected_calibration_error(probs, [0] * 8 + [1] * 2) == pytest.approx(0.0)
    # Confidence 0.9 but always wrong: ECE 0.9.
    assert expected_calibration_error(np.tile([0.9, 0.1], (5, 1)), [1] * 5) == pytest.approx(0.9)
    # Two bins: (0.6 conf, 100% right) and (0.95 conf, 50% right) → 0.5*0.4 + 0.5*0.45.
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.95, 0.05], [0.95, 0.05]])
    assert expected_calibration_error(probs, [0, 0, 0, 1]) == pytest.approx(0.425)


def test_majority_baseline() -> None:
    out = majority_baseline([0, 0, 1], [0, 1, 1, 1], 2)
    assert out["label"] == 0 and out["accuracy"] == 0.25
    assert out["macro_f1"] == pytest.approx((0.4 + 0.0) / 2)


def test_classification_report_reads_the_argmax() -> None:
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    report = classification_report(probs, [0, 1, 1], ("no", "yes"))
    assert report["examples"] == 3
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["per_class_recall"] == {"no": 1.0, "yes": 0.5}
    assert report["confusion_matrix"] == [[1, 0], [1, 1]]
