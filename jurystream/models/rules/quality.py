"""Online labeling quality: rolling accuracy and macro-F1, and label-distribution drift (PSI).

Pure (the scores are ``rules/scores.py``, the same as offline evaluation) and reused by any
role. The monitor role (``jurystream.stream.feedback``) feeds these windows from the labels and
feedback topics and exports the results as gauges; Prometheus only ever sees the numbers.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping

from jurystream.models.rules import scores

# Shares below this are clipped before taking logarithms: a label the reference never saw
# would otherwise make PSI infinite, which is useless as an alert signal.
PSI_EPSILON = 1e-4


def shares(counts: Mapping[str, float]) -> dict[str, float]:
    """Normalise non-negative counts (or weights) to shares summing to 1."""
    if any(v < 0 for v in counts.values()):
        raise ValueError("counts must be non-negative")
    total = float(sum(counts.values()))
    if total <= 0:
        raise ValueError("counts must not all be zero")
    return {k: float(v) / total for k, v in counts.items()}


def psi(
    reference: Mapping[str, float], observed: Mapping[str, float], epsilon: float = PSI_EPSILON
) -> float:
    """Population stability index between two label distributions (counts or shares).

    PSI = sum over labels of (o - r) * ln(o / r), with both sides normalised and shares clipped
    at ``epsilon``. It is 0 for identical distributions, symmetric, and by the usual rule of
    thumb < 0.1 is stable, 0.1-0.25 a moderate shift and > 0.25 a significant one.
    """
    ref = shares(reference)
    obs = shares(observed)
    total = 0.0
    for label in set(ref) | set(obs):
        r = max(ref.get(label, 0.0), epsilon)
        o = max(obs.get(label, 0.0), epsilon)
        total += (o - r) * math.log(o / r)
    return total


class RollingQuality:
    """The last ``size`` (gold, predicted) pairs, for rolling accuracy and macro-F1.

    A count-based window rather than a time-based one: quality is then always judged on the
    same amount of evidence, however bursty the feedback is.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window size must be at least 1")
        self._pairs: deque[tuple[str, str]] = deque(maxlen=size)

    def add(self, gold: str, predicted: str) -> None:
        self._pairs.append((gold, predicted))

    def __len__(self) -> int:
        return len(self._pairs)

    def accuracy(self) -> float:
        """Accuracy over the window; NaN while it is empty."""
        return scores.accuracy(*self._columns())

    def macro_f1(self) -> float:
        """Macro-F1 over the window; NaN while it is empty."""
        return scores.macro_f1(*self._columns())

    def _columns(self) -> tuple[list[str], list[str]]:
        return [g for g, _ in self._pairs], [p for _, p in self._pairs]


class LabelWindow:
    """Counts of the last ``size`` labels, for drift against a reference distribution."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("window size must be at least 1")
        self.size = size
        self._labels: deque[str] = deque()
        self._counts: Counter[str] = Counter()

    def add(self, label: str) -> None:
        self._labels.append(label)
        self._counts[label] += 1
        if len(self._labels) > self.size:
            old = self._labels.popleft()
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def full(self) -> bool:
        return len(self._labels) == self.size

    def counts(self) -> dict[str, int]:
        return dict(self._counts)
