"""Metrics (checked against scikit-learn), policy evaluation and threshold calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as skm

from jurystream.models.evaluation import (
    POLICY_NAMES,
    accuracy,
    calibrate,
    confusion_matrix,
    evaluate,
    expected_calibration_error,
    macro_f1,
    majority_baseline,
    per_class_recall,
    policy_threshold,
    read_thresholds,
    write_thresholds,
)
from jurystream.models.juror import load_juror
from jurystream.models.jury import Jury
from jurystream.stream.feed import labeled_examples
from tests.fixtures.models import gibberish

pairs = st.integers(1, 4).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=1, max_size=80),
    )
)


@given(pairs)
def test_metrics_match_sklearn(case: tuple[int, list[tuple[int, int]]]) -> None:
    n, rows = case
    t = [a for a, _ in rows]
    p = [b for _, b in rows]
    labels = list(range(n))
    np.testing.assert_array_equal(
        confusion_matrix(t, p, n), skm.confusion_matrix(t, p, labels=labels)
    )
    assert accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p))
    present = sorted(set(t) | set(p))
    expected_f1 = skm.f1_score(t, p, labels=present, average="macro", zero_division=0)
    assert macro_f1(t, p, n) == pytest.approx(expected_f1)
    recall = per_class_recall(t, p, n)
    for label in set(t):
        assert recall[label] == pytest.approx(
            skm.recall_score(t, p, labels=[label], average="macro")
        )
    for label in set(labels) - set(t):
        assert np.isnan(recall[label])


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


@pytest.fixture(scope="module")
def eval_split() -> tuple[list[str], list[int]]:
    texts, labels = labeled_examples(200, seed=21)
    noise = gibberish(60, seed=4)  # the jurors guess here, so policies differ
    return texts + noise, labels + [0] * len(noise)


def test_evaluate_matches_the_live_jury(
    tiny_jurors: list[Path], eval_split: tuple[list[str], list[int]]
) -> None:
    jurors = [load_juror(d) for d in tiny_jurors]
    texts, gold = eval_split
    report = evaluate(jurors, texts, gold, threshold=0.8)
    assert set(report["jurors"]) == {"tiny-0", "tiny-1", "tiny-2"}
    for name, r in report["jurors"].items():
        assert r["accuracy"] > 0.7, name
        assert sum(map(sum, r["confusion_matrix"])) == len(texts)
    assert set(report["policies"]) == set(POLICY_NAMES)
    for policy in POLICY_NAMES:
        # The replayed policy must decide exactly like a jury of the real jurors.
        live = Jury(tuple(jurors), policy, 0.8).decide(texts)
        rate = float(np.mean([d.escalated for d in live]))
        assert report["policies"][policy]["escalation_rate"] == pytest.approx(rate, abs=0.02)
    unanimous = report["policies"]["unanimous"]
    assert 0 < unanimous["escalation_rate"] < 1
    assert unanimous["accepted_accuracy"] >= unanimous["best_guess_accuracy"]
    assert report["policies"]["cascade"]["juror_calls_per_text"] < 3


@pytest.mark.parametrize("target", [0.1, 0.25, 0.4])
def test_calibration_hits_the_target_rate(
    tiny_jurors: list[Path], eval_split: tuple[list[str], list[int]], target: float, tmp_path: Path
) -> None:
    jurors = [load_juror(d) for d in tiny_jurors]
    texts, gold = eval_split
    out = calibrate(jurors, texts, gold, target, policies=("majority", "threshold", "cascade"))
    for policy, entry in out["policies"].items():
        assert entry["escalation_rate"] <= target + 1e-9, policy
        # Calibration should use the budget: a slightly higher threshold would exceed it.
        above = Jury(tuple(jurors), policy, min(1.0, entry["threshold"] + 0.02)).decide(texts)
        if entry["threshold"] < 0.98:
            assert np.mean([d.escalated for d in above]) > target - 0.05, policy
    for name, entry in out["jurors"].items():
        assert entry["escalation_rate"] <= target + 1e-9, name
    path = write_thresholds(tmp_path / "th.json", out)
    assert read_thresholds(path)["target_escalation_rate"] == target
    assert policy_threshold(path, "majority", 0.5) == out["policies"]["majority"]["threshold"]
    assert policy_threshold(path, "weighted", 0.55) == 0.55


def test_calibration_rejects_bad_target(tiny_jurors: list[Path]) -> None:
    with pytest.raises(ValueError, match="target escalation rate"):
        calibrate([load_juror(tiny_jurors[0])], ["a"], [0], 1.5)
