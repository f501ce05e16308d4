"""Voting policies: pure functions from the jurors' probabilities to one decision.

Each policy sees, for one text, a matrix ``probs`` of shape (jurors, labels) and returns a
Decision that records every vote, the combined confidence and, when it escalates, why. The
cascade's early stopping needs to call jurors, so it lives in ``jury.py``; the rule it applies
at each step (``confident``) is here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Vote:
    juror: str
    label: str
    confidence: float

    def to_dict(self) -> dict[str, object]:
        return {"juror": self.juror, "label": self.label, "confidence": round(self.confidence, 4)}


@dataclass(frozen=True, slots=True)
class Decision:
    """The jury's verdict on one text. ``label`` is the best guess even when escalated."""

    label: str
    confidence: float
    votes: tuple[Vote, ...]
    escalated: bool
    reason: str | None = None


def votes_of(probs: np.ndarray, jurors: Sequence[str], labels: Sequence[str]) -> tuple[Vote, ...]:
    top = probs.argmax(axis=1)
    return tuple(
        Vote(juror, labels[int(i)], float(probs[j, int(i)]))
        for j, (juror, i) in enumerate(zip(jurors, top, strict=True))
    )


def unanimous(
    probs: np.ndarray, jurors: Sequence[str], labels: Sequence[str], threshold: float = 0.0
) -> Decision:
    """AutoAnnotator's rule: accept only when every juror picks the same label confidently."""
    votes = votes_of(probs, jurors, labels)
    counts = Counter(v.label for v in votes)
    label, _ = counts.most_common(1)[0]
    confidence = float(min(v.confidence for v in votes if v.label == label))
    if len(counts) > 1:
        split = ", ".join(f"{lab}={n}" for lab, n in counts.most_common())
        return Decision(label, confidence, votes, True, f"split vote ({split})")
    weakest = min(votes, key=lambda v: v.confidence)
    if weakest.confidence < threshold:
        reason = f"low confidence: {weakest.juror} {weakest.confidence:.2f} < {threshold:.2f}"
        return Decision(label, confidence, votes, True, reason)
    return Decision(label, confidence, votes, False)


def majority(
    probs: np.ndarray, jurors: Sequence[str], labels: Sequence[str], threshold: float = 0.0
) -> Decision:
    """Accept the label most jurors pick if it has a strict majority and enough mean support."""
    votes = votes_of(probs, jurors, labels)
    counts = Counter(v.label for v in votes).most_common()
    label, n = counts[0]
    confidence = float(probs[:, labels.index(label)].mean())
    if 2 * n <= len(votes):
        split = ", ".join(f"{lab}={k}" for lab, k in counts)
        return Decision(label, confidence, votes, True, f"no majority ({split})")
    if confidence < threshold:
        reason = f"low confidence: mean p({label})={confidence:.2f} < {threshold:.2f}"
        return Decision(label, confidence, votes, True, reason)
    return Decision(label, confidence, votes, False)


def weighted(
    probs: np.ndarray,
    jurors: Sequence[str],
    labels: Sequence[str],
    threshold: float = 0.5,
    weights: Mapping[str, float] | None = None,
) -> Decision:
    """Average the jurors' probabilities weighted by their measured quality."""
    votes = votes_of(probs, jurors, labels)
    w = np.array([(weights or {}).get(j, 1.0) for j in jurors], dtype=np.float64)
    if w.sum() <= 0:
        raise ValueError("juror weights must have a positive sum")
    combined = (w[:, None] * probs).sum(axis=0) / w.sum()
    best = int(combined.argmax())
    confidence = float(combined[best])
    if confidence < threshold:
        reason = f"low confidence: weighted p({labels[best]})={confidence:.2f} < {threshold:.2f}"
        return Decision(labels[best], confidence, votes, True, reason)
    return Decision(labels[best], confidence, votes, False)


def threshold_policy(
    probs: np.ndarray, jurors: Sequence[str], labels: Sequence[str], threshold: float = 0.5
) -> Decision:
    """Accept the jury's mean probability when it clears the threshold."""
    return weighted(probs, jurors, labels, threshold=threshold, weights=None)


def confident(row: np.ndarray, threshold: float) -> bool:
    """The cascade's stopping rule: one juror alone is sure enough."""
    return float(row.max()) >= threshold


Policy = Callable[[np.ndarray, Sequence[str], Sequence[str], float], Decision]

POLICIES: dict[str, Policy] = {
    "unanimous": unanimous,
    "majority": majority,
    "weighted": weighted,
    "threshold": threshold_policy,
}
