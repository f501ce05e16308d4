"""How the TF-IDF juror's class weighting and regularization were chosen: measured, per task.

For each TweetEval task and seed sample, the juror is fit on ``seed_size`` stratified train
labels with each variant and scored (macro-F1) on the val split against the majority-class
baseline. ``jurystream bench tfidf`` prints the table that BENCHMARKS.md keeps. Only sklearn
is measured: the ONNX export is verified to match it (max-abs-diff 1e-3) when it is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jurystream.models.rules.scores import macro_f1, majority_baseline
from jurystream.models.training.datasets import load_tweeteval, tweeteval_dir
from jurystream.models.training.sklearn_juror import DEFAULT_C, DEFAULT_CLASS_WEIGHT, train_pipeline

TASKS = ("offensive", "hate", "emotion", "irony")


@dataclass(frozen=True)
class Variant:
    name: str
    c: float
    class_weight: str | None


VARIANTS = (
    Variant("unweighted C=4 (before)", 4.0, None),
    Variant("balanced C=1", 1.0, "balanced"),
    Variant(f"balanced C={DEFAULT_C:g} (default)", DEFAULT_C, DEFAULT_CLASS_WEIGHT),
    Variant("balanced C=16", 16.0, "balanced"),
)


@dataclass(frozen=True)
class Row:
    task: str
    system: str
    macro_f1: float  # mean over the seed samples
    spread: float  # max - min over the seed samples
    samples: int


def run_tfidf_bench(
    data_root: Path,
    tasks: Sequence[str] = TASKS,
    seed_size: int = 400,
    samples: Sequence[int] = (0, 1, 2),
    variants: Sequence[Variant] = VARIANTS,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Majority baseline and every variant, macro-F1 averaged over the seed ``samples``."""
    rows = []
    for task in tasks:
        directory = tweeteval_dir(data_root, task)
        train = load_tweeteval(directory, "train", drop_empty=True)
        val = load_tweeteval(directory, "val", drop_empty=True)
        n = len(train.label_names)
        scores: dict[str, list[float]] = {}
        for sample in samples:
            seed = train.sample(seed_size, seed=sample)
            base = majority_baseline(seed.labels, val.labels, n)["macro_f1"]
            scores.setdefault("majority class", []).append(base)
            for variant in variants:
                pipeline = train_pipeline(
                    seed.texts, seed.labels, c=variant.c, class_weight=variant.class_weight
                )
                f1 = macro_f1(val.labels, pipeline.predict(list(val.texts)))
                scores.setdefault(variant.name, []).append(f1)
            log(f"{task}: sample {sample} done")
        for system, values in scores.items():
            spread = max(values) - min(values)
            rows.append(Row(task, system, float(np.mean(values)), spread, len(values)))
    return rows


def markdown(rows: Sequence[Row], seed_size: int) -> str:
    lines = [
        f"| task | TF-IDF juror ({seed_size} seed labels) | val macro-F1 (mean) | spread |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r.task} | {r.system} | {r.macro_f1:.3f} | {r.spread:.3f} |" for r in rows]
    return "\n".join(lines)
