"""Label sets are matched by name, never by position.

A juror trained on ``['not-hate', 'hate']`` and data loaded as ``['hate', 'not-hate']`` (a CSV's
label column is read in sorted order, TweetEval's in ``mapping.txt`` order) hold the same label
set: only the column order differs. Everywhere a juror meets data or another juror, columns are
put in one order by name; only label sets whose *names* differ are refused, with the names that
are missing on either side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from jurystream.models.serving.juror import Juror


class LabelSetError(ValueError):
    """Two label sets that do not hold the same names: nothing can be matched."""


def label_order(source: Sequence[str], target: Sequence[str], what: str = "labels") -> list[int]:
    """Indices into ``source`` that list its labels in ``target``'s order.

    ``what`` names the two sides in the error, e.g. "juror tfidf vs the data".
    """
    if len(set(source)) != len(source) or len(set(target)) != len(target):
        raise LabelSetError(f"{what}: a label set names a label twice ({source} vs {target})")
    if set(source) != set(target):
        only_source = sorted(set(source) - set(target))
        only_target = sorted(set(target) - set(source))
        raise LabelSetError(
            f"{what}: label sets differ — {list(source)} vs {list(target)} "
            f"(only in the first: {only_source}; only in the second: {only_target}). "
            "Train on data with the same label names, or rename the labels in the data."
        )
    position = {name: i for i, name in enumerate(source)}
    return [position[name] for name in target]


class AlignedJuror:
    """A juror whose probability columns are re-ordered to another order of its label set."""

    def __init__(self, juror: Juror, labels: Sequence[str], order: Sequence[int]) -> None:
        self.juror = juror
        self.name = juror.name
        self.version = juror.version
        self.cost = juror.cost
        self.labels = tuple(labels)
        self.order = list(order)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.juror.predict_proba(texts))[:, self.order]


def align_juror(juror: Juror, labels: Sequence[str], what: str | None = None) -> Juror:
    """``juror`` answering in the order of ``labels`` (itself when the order already matches)."""
    target = tuple(labels)
    if tuple(juror.labels) == target:
        return juror
    order = label_order(juror.labels, target, what or f"juror {juror.name}")
    return AlignedJuror(juror, target, order)
