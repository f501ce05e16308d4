"""Label-quality math: accuracy, macro-F1, recall, confusion and calibration error.

One pure module on ``sklearn.metrics``, so every place that judges labels (juror evaluation,
the trainer's gate, the monitor's rolling windows, the benches) counts the same way. Labels may
be ids or names: the functions take any two equal-length sequences of hashable labels.

Conventions, where scikit-learn leaves a choice:

- no examples give NaN, never a perfect score: there is nothing to judge yet;
- macro-F1 averages over every label that occurs as truth or as prediction (scikit-learn's
  default without ``labels``), and a label that is predicted but never true (or the reverse)
  counts with F1 = 0, so a juror that invents labels is penalised.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from sklearn import metrics

Labels = Sequence[Hashable] | np.ndarray


def accuracy(y_true: Labels, y_pred: Labels) -> float:
    """Share of predictions equal to the truth; NaN for no examples."""
    if len(y_true) == 0:
        return float("nan")
    return float(metrics.accuracy_score(list(y_true), list(y_pred)))


def macro_f1(y_true: Labels, y_pred: Labels) -> float:
    """Unweighted mean F1 over the labels present in the truth or the predictions."""
    if len(y_true) == 0:
        return float("nan")
    return float(metrics.f1_score(list(y_true), list(y_pred), average="macro", zero_division=0))


def confusion_matrix(y_true: Labels, y_pred: Labels, n_labels: int) -> np.ndarray:
    """Counts of label ids, rows = true label, columns = predicted label."""
    return np.asarray(
        metrics.confusion_matrix(
            np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int), labels=range(n_labels)
        ),
        dtype=np.int64,
    )


def per_class_recall(y_true: Labels, y_pred: Labels, n_labels: int) -> np.ndarray:
    """Recall of each label id; NaN for a label absent from ``y_true`` (no evidence)."""
    return np.asarray(
        metrics.recall_score(
            np.asarray(y_true, dtype=int),
            np.asarray(y_pred, dtype=int),
            labels=range(n_labels),
            average=None,
            zero_division=np.nan,
        ),
        dtype=float,
    )


def expected_calibration_error(probs: np.ndarray, y_true: Labels, n_bins: int = 10) -> float:
    """ECE: |accuracy − confidence| per confidence bin, weighted by the bin's share.

    scikit-learn has reliability curves but no ECE; this is the usual equal-width binning.
    """
    probs = np.asarray(probs, dtype=float)
    if len(probs) == 0:
        return float("nan")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        members = bins == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def classification_report(
    probs: np.ndarray, y_true: Labels, label_names: Sequence[str]
) -> dict[str, Any]:
    """All metrics for one set of class probabilities over label ids (stored in manifests)."""
    y_pred = np.asarray(probs).argmax(axis=1)
    n = len(label_names)
    recall = per_class_recall(y_true, y_pred, n)
    return {
        "examples": len(y_true),
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "per_class_recall": {
            name: None if np.isnan(r) else float(r)
            for name, r in zip(label_names, recall, strict=True)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, n).tolist(),
        "ece": expected_calibration_error(probs, y_true),
    }


def majority_baseline(y_train: Labels, y_eval: Labels, n_labels: int) -> dict[str, Any]:
    """What always answering the most frequent training label scores (the bar to beat)."""
    top = int(np.bincount(np.asarray(y_train, dtype=int), minlength=n_labels).argmax())
    pred = [top] * len(y_eval)
    return {"label": top, "accuracy": accuracy(y_eval, pred), "macro_f1": macro_f1(y_eval, pred)}
