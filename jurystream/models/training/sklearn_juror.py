"""The cheapest juror: TF-IDF + logistic regression, trained in seconds, exported with skl2onnx.

It needs no torch, so a serving-only install can still bootstrap a jury, and it is the natural
first tier of a cascade. It is served by ``OnnxSklearnJuror`` like any other ONNX juror.

Classes are weighted inversely to their frequency (``class_weight="balanced"``). Chosen by
measurement (``jurystream bench tfidf``, BENCHMARKS.md): unweighted, 400 TweetEval tweets taught
it mostly the majority class (offensive macro-F1 0.48 against the majority baseline's 0.40);
balanced, it beats the baseline by 0.18-0.29 macro-F1 on all four tasks, and a juror that always
votes the majority weakens every voting policy.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import StringTensorType
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from jurystream.models.serving.juror import Manifest, load_juror, sha256_file, write_manifest
from jurystream.models.serving.kinds import SKLEARN

# skl2onnx tokenizes with ONNX's Tokenizer op, which needs an explicit regex. ASCII classes,
# no \w or \b: onnxruntime's RE2 reads those as ASCII while Python's re reads them as Unicode,
# so a tweet with Hangul or accented words scored differently in ONNX than in sklearn and
# failed export verification.
TOKEN_PATTERN = r"[A-Za-z0-9_]{2,}"
DEFAULT_C = 4.0
DEFAULT_CLASS_WEIGHT = "balanced"  # measured: see the module docstring and BENCHMARKS.md


def train_pipeline(
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    seed: int = 0,
    bootstrap: bool = False,
    ngram_max: int = 2,
    max_features: int = 20_000,
    c: float = DEFAULT_C,
    class_weight: str | None = DEFAULT_CLASS_WEIGHT,
    weights: Sequence[float] | None = None,
) -> Pipeline:
    """Fit TF-IDF + LR; ``bootstrap`` resamples the seed set so jurors differ (diversity).

    ``weights`` scale each example's loss (the trainer down-weights less reliable labels), on
    top of ``class_weight`` ("balanced": each class weighs as much in total, or None).
    Balancing counts examples, not their weights: sklearn's own "balanced" would scale a class
    whose labels the trainer trusts less back up, undoing the per-example weights.
    """
    rng = np.random.default_rng(seed)
    idx = np.arange(len(texts))
    if bootstrap:
        idx = rng.choice(idx, size=len(idx), replace=True)
    train_texts = [texts[int(i)] for i in idx]
    train_labels = [int(labels[int(i)]) for i in idx]
    options: dict[str, Any] = {
        "lowercase": True,
        "token_pattern": TOKEN_PATTERN,
        "ngram_range": (1, ngram_max),
    }
    tfidf = TfidfVectorizer(**options, max_features=max_features).fit(train_texts)
    vocabulary = onnx_safe_vocabulary(tfidf.vocabulary_)
    if len(vocabulary) < len(tfidf.vocabulary_):
        tfidf = TfidfVectorizer(**options, vocabulary=vocabulary)
    pipeline = Pipeline(
        [
            ("tfidf", tfidf),
            (
                "lr",
                LogisticRegression(
                    C=c,
                    class_weight=_class_weights(train_labels, class_weight),
                    max_iter=2000,
                    random_state=seed,
                ),
            ),
        ]
    )
    fit_params = {} if weights is None else {"lr__sample_weight": [weights[int(i)] for i in idx]}
    pipeline.fit(train_texts, train_labels, **fit_params)
    return pipeline


def _class_weights(labels: Sequence[int], class_weight: str | None) -> dict[int, float] | None:
    """``n / (classes × count)`` per class for "balanced" (sklearn's formula, on counts)."""
    if class_weight is None:
        return None
    if class_weight != "balanced":
        raise ValueError(f"class_weight {class_weight!r}: use 'balanced' or None")
    counts = Counter(labels)
    return {y: len(labels) / (len(counts) * k) for y, k in counts.items()}


def onnx_safe_vocabulary(vocabulary: Mapping[str, int]) -> list[str]:
    """The vocabulary without n-grams whose shorter parts were cut by ``max_features``.

    ONNX's TfIdfVectorizer finds an n-gram only through its parts, so an n-gram whose
    unigram fell below the cut (ties at the boundary) counts in sklearn but never in ONNX,
    and the export then disagrees with sklearn. Dropping those n-grams keeps both the same.
    """
    kept = set(vocabulary)
    for term in sorted(vocabulary, key=lambda t: t.count(" ")):
        words = term.split(" ")
        parts = {
            " ".join(words[i : i + n])
            for n in range(1, len(words))
            for i in range(len(words) - n + 1)
        }
        if not parts <= kept:
            kept.discard(term)
    return sorted(kept)


def export_pipeline(
    pipeline: Pipeline,
    directory: Path,
    *,
    name: str,
    version: str,
    labels: Sequence[str],
    parent: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the juror directory (model.onnx + manifest) and check it serves like sklearn."""
    classes = list(pipeline.named_steps["lr"].classes_)
    if classes != list(range(len(labels))):
        raise ValueError(
            f"trained classes {classes} do not cover label ids 0..{len(labels) - 1}; "
            "the seed set needs at least one example of every label"
        )
    onnx_model = to_onnx(
        pipeline,
        initial_types=[("text", StringTensorType([None, 1]))],
        options={
            id(pipeline.named_steps["lr"]): {"zipmap": False},
            # ONNX's StringNormalizer defaults to en_US.UTF-8, which slim images lack.
            id(pipeline.named_steps["tfidf"]): {"locale": "C.UTF-8"},
        },
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(onnx_model.SerializeToString())
    manifest = Manifest(
        name=name,
        version=version,
        kind=SKLEARN.kind,
        labels=tuple(labels),
        files={"model.onnx": sha256_file(directory / "model.onnx")},
        cost=0.05,
        parent=parent,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        extra=extra or {},
    )
    write_manifest(directory, manifest)
    return directory


def verify_export(pipeline: Pipeline, directory: Path, texts: Sequence[str]) -> float:
    """Max abs difference between sklearn's and onnxruntime's probabilities on ``texts``."""
    juror = load_juror(directory)
    diff = np.abs(juror.predict_proba(texts) - pipeline.predict_proba(list(texts))).max()
    return float(diff)


def build_sklearn_juror(
    texts: Sequence[str],
    labels: Sequence[int],
    label_names: Sequence[str],
    directory: Path,
    *,
    name: str,
    version: str = "1",
    seed: int = 0,
    bootstrap: bool = False,
    ngram_max: int = 2,
    tolerance: float = 1e-3,
    weights: Sequence[float] | None = None,
    c: float = DEFAULT_C,
    class_weight: str | None = DEFAULT_CLASS_WEIGHT,
) -> Path:
    """Train, export and verify in one step; an export that disagrees with sklearn is refused.

    The manifest records the hyper-parameters (seed, bootstrap, ngram_max, c, class_weight),
    so the trainer can refit the same juror on more data without losing its diversity from the
    others.
    """
    pipeline = train_pipeline(
        texts,
        labels,
        seed=seed,
        bootstrap=bootstrap,
        ngram_max=ngram_max,
        c=c,
        class_weight=class_weight,
        weights=weights,
    )
    with tempfile.TemporaryDirectory(
        dir=directory.parent if directory.parent.exists() else None
    ) as tmp:
        staging = Path(tmp) / "juror"
        export_pipeline(
            pipeline,
            staging,
            name=name,
            version=version,
            labels=label_names,
            extra={
                "training": {
                    "examples": len(texts),
                    "seed": seed,
                    "bootstrap": bootstrap,
                    "ngram_max": ngram_max,
                    "c": c,
                    "class_weight": class_weight,
                    "weighted": weights is not None,
                }
            },
        )
        diff = verify_export(pipeline, staging, list(texts[:200]))
        if diff > tolerance:
            raise ValueError(
                f"ONNX export of {name} differs from sklearn by {diff:.2e} (> {tolerance:.0e}); "
                "not published"
            )
        directory.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            item.replace(directory / item.name)
    return directory
