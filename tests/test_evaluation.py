"""Metrics (checked against scikit-learn), policy evaluation and threshold calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jurystream.models.serving.juror import load_juror
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.thresholds_file import (
    policy_threshold,
    read_thresholds,
    write_thresholds,
)
from jurystream.models.training.evaluation import POLICY_NAMES, calibrate, evaluate
from jurystream.stream.feed import labeled_examples
from tests.fixtures.models import gibberish


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
