"""Role start-up: jurors by directory or registry name, calibrated thresholds, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jurystream.config import load_settings
from jurystream.models.serving.juror import ModelLoadError
from jurystream.models.serving.thresholds_file import write_thresholds
from jurystream.stream.roles import load_jury


def test_calibrated_threshold_overrides_the_default(
    tmp_path: Path, sklearn_jurors: list[Path]
) -> None:
    path = write_thresholds(
        tmp_path / "thresholds.json",
        {"target_escalation_rate": 0.2, "policies": {"majority": {"threshold": 0.83}}},
    )
    jurors = [str(j) for j in sklearn_jurors]
    calibrated = load_settings(
        jury={"jurors": jurors, "policy": "majority", "thresholds_file": path}
    )
    assert load_jury(calibrated).threshold == pytest.approx(0.83)
    # A policy the file does not cover keeps jury.threshold.
    other = load_settings(
        jury={"jurors": jurors, "policy": "unanimous", "threshold": 0.6, "thresholds_file": path}
    )
    assert load_jury(other).threshold == pytest.approx(0.6)


def test_unknown_juror_says_where_it_looked(tmp_path: Path) -> None:
    settings = load_settings(registry=str(tmp_path / "reg"), jury={"jurors": ["nobody"]})
    with pytest.raises(
        ModelLoadError, match="neither a juror directory nor a juror of the registry"
    ):
        load_jury(settings)


def test_no_jurors_is_an_error_that_says_what_to_do() -> None:
    with pytest.raises(ModelLoadError, match="--juror"):
        load_jury(load_settings(jury={"jurors": []}))


def test_the_worker_does_not_load_the_training_stack() -> None:
    """Resident memory is an issue-15 target (< 300 MB with three MiniLM jurors): importing
    scikit-learn's metrics through the training modules once cost a worker about 80 MB."""
    code = (
        "import sys, jurystream.cli, jurystream.stream.roles, jurystream.stream.worker; "
        "heavy = ('sklearn', 'scipy', 'torch', 'transformers'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
