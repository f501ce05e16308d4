"""Labeling quality of jurors and voting policies, and threshold calibration.

The metrics themselves are ``jurystream.models.rules.scores``. Policy evaluation replays the jurors'
probabilities (computed once) through the real ``Jury`` code, so what is measured is exactly
what the worker would decide, cascade included. Calibration picks, per policy, the highest
threshold whose escalation rate stays within a target: the knob a team actually turns is
"how much may go to the (paid) reviewer", not an abstract confidence.

Thresholds file (``JurySettings.thresholds_file``)::

    {"target_escalation_rate": 0.2, "created_at": "...", "data": {...summary...},
     "policies": {"unanimous": {"threshold": 0.83, "escalation_rate": 0.19,
                                "accepted_accuracy": 0.93}, "majority": {...}, ...},
     "jurors":   {"minilm-0": {"threshold": 0.78, "escalation_rate": 0.2}, ...}}

``policies[<policy>].threshold`` replaces ``JurySettings.threshold`` for that policy;
``jurors[<name>].threshold`` is the confidence below which that juror alone would escalate the
target share (for per-juror rules such as a cascade tier).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from jurystream.models.rules.scores import accuracy, classification_report, macro_f1
from jurystream.models.rules.thresholds import OperatingPoint
from jurystream.models.serving.juror import Juror
from jurystream.models.serving.jury import Jury

LabelIds = Sequence[int] | np.ndarray

POLICY_NAMES = ("unanimous", "majority", "weighted", "threshold", "cascade")


def juror_probabilities(
    jurors: Sequence[Juror], texts: Sequence[str], batch_size: int = 32
) -> np.ndarray:
    """Every juror on every text, in serving-sized batches: shape (texts, jurors, labels)."""
    out = []
    for juror in jurors:
        rows = [
            juror.predict_proba(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)
        ]
        out.append(np.concatenate(rows) if rows else np.zeros((0, len(juror.labels))))
    return np.stack(out, axis=1)


class _Replay:
    """A juror that answers from precomputed probabilities (keyed by text)."""

    def __init__(self, juror: Juror, table: Mapping[str, np.ndarray]) -> None:
        self.name = juror.name
        self.version = juror.version
        self.labels = tuple(juror.labels)
        self.cost = juror.cost
        self.table = table

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.stack([self.table[t] for t in texts])


def replay_jurors(
    probs: np.ndarray, texts: Sequence[str], jurors: Sequence[Juror]
) -> tuple[Juror, ...]:
    """Stand-ins for ``jurors`` that replay ``probs`` so policies can be swept cheaply."""
    return tuple(
        _Replay(j, {t: probs[i, k] for i, t in enumerate(texts)}) for k, j in enumerate(jurors)
    )


def policy_report(jury: Jury, texts: Sequence[str], y_true: LabelIds) -> dict[str, Any]:
    """Escalation rate and accuracy of accepted labels (and of the jury's best guess overall)."""
    decisions = jury.decide(texts)
    index = {name: i for i, name in enumerate(jury.labels)}
    pred = np.array([index[d.label] for d in decisions])
    escalated = np.array([d.escalated for d in decisions])
    truth = np.asarray(y_true)
    accepted = ~escalated
    return {
        "threshold": jury.threshold,
        "escalation_rate": float(escalated.mean()),
        "accepted_accuracy": accuracy(truth[accepted], pred[accepted]),
        "accepted_macro_f1": macro_f1(truth[accepted], pred[accepted]),
        "best_guess_accuracy": accuracy(truth, pred),
        "juror_calls_per_text": float(np.mean([len(d.votes) for d in decisions])),
    }


def calibrate_policy(
    jurors: Sequence[Juror],
    policy: str,
    texts: Sequence[str],
    target_rate: float,
    weights: Mapping[str, float] | None = None,
    iterations: int = 24,
) -> float:
    """The highest threshold whose escalation rate is ≤ ``target_rate`` (bisection).

    Escalation never decreases as the threshold rises, for every policy, so bisection finds
    the boundary. If even threshold 0 escalates more (split votes alone), 0 is returned.
    """

    def rate(th: float) -> float:
        decisions = Jury(tuple(jurors), policy, th, dict(weights or {})).decide(texts)
        return float(np.mean([d.escalated for d in decisions]))

    if rate(1.0) <= target_rate:
        return 1.0
    lo, hi = 0.0, 1.0
    if rate(lo) > target_rate:
        return 0.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if rate(mid) <= target_rate:
            lo = mid
        else:
            hi = mid
    return lo


def operating_curve(
    jurors: Sequence[Juror],
    policy: str,
    texts: Sequence[str],
    y_true: LabelIds,
    thresholds: Sequence[float],
    weights: Mapping[str, float] | None = None,
) -> list[OperatingPoint]:
    """Escalation and accuracy of accepted labels at each threshold, for any policy.

    Pass replayed jurors (``replay_jurors``): the sweep then costs only the votes (~10 µs a
    post per threshold), not inference.
    """
    truth = np.asarray(y_true)
    index = {name: i for i, name in enumerate(jurors[0].labels)}
    curve = []
    for th in thresholds:
        decisions = Jury(tuple(jurors), policy, th, dict(weights or {})).decide(texts)
        accepted = np.array([not d.escalated for d in decisions], dtype=bool)
        pred = np.array([index[d.label] for d in decisions])
        n = int(accepted.sum())
        acc = float((pred[accepted] == truth[accepted]).mean()) if n else float("nan")
        curve.append(OperatingPoint(float(th), float(1 - accepted.mean()), n, acc))
    return curve


def juror_threshold(probs: np.ndarray, target_rate: float) -> float:
    """Confidence below which a single juror's least sure ``target_rate`` share falls."""
    confidence = np.sort(np.asarray(probs).max(axis=1))
    k = int(np.floor(target_rate * len(confidence)))
    return float(confidence[k]) if k < len(confidence) else 1.0


def evaluate(
    jurors: Sequence[Juror],
    texts: Sequence[str],
    y_true: LabelIds,
    *,
    policies: Sequence[str] = POLICY_NAMES,
    threshold: float = 0.7,
    weights: Mapping[str, float] | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Per-juror metrics and per-policy escalation/accuracy on one labeled split."""
    labels = tuple(jurors[0].labels)
    probs = juror_probabilities(jurors, texts, batch_size)
    replay = replay_jurors(probs, texts, jurors)
    return {
        "labels": list(labels),
        "jurors": {
            j.name: {"version": j.version, **classification_report(probs[:, k], y_true, labels)}
            for k, j in enumerate(jurors)
        },
        "policies": {
            p: policy_report(Jury(replay, p, threshold, dict(weights or {})), texts, y_true)
            for p in policies
        },
    }


def calibrate(
    jurors: Sequence[Juror],
    texts: Sequence[str],
    y_true: LabelIds,
    target_rate: float,
    *,
    policies: Sequence[str] = POLICY_NAMES,
    weights: Mapping[str, float] | None = None,
    batch_size: int = 32,
    data_summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Thresholds per policy and per juror for ``target_rate`` (the thresholds file content)."""
    if not 0.0 <= target_rate <= 1.0:
        raise ValueError(f"target escalation rate must be in [0, 1], got {target_rate}")
    probs = juror_probabilities(jurors, texts, batch_size)
    replay = replay_jurors(probs, texts, jurors)
    out: dict[str, Any] = {
        "target_escalation_rate": target_rate,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": data_summary or {"examples": len(texts)},
        "policies": {},
        "jurors": {},
    }
    for policy in policies:
        th = calibrate_policy(replay, policy, texts, target_rate, weights)
        report = policy_report(Jury(replay, policy, th, dict(weights or {})), texts, y_true)
        out["policies"][policy] = report
    for k, juror in enumerate(jurors):
        th = juror_threshold(probs[:, k], target_rate)
        rate = float((probs[:, k].max(axis=1) < th).mean())
        out["jurors"][juror.name] = {"threshold": th, "escalation_rate": rate}
    return out
