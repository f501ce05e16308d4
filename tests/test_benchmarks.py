"""pytest-benchmark micro-benchmarks of the hot path: voting and juror inference per batch.

They run as ordinary tests too (each checks its result), and ``--benchmark-disable`` turns them
into a single call each. Timings: ``pytest tests/test_benchmarks.py --benchmark-only``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jurystream.models.rules.voting import POLICIES
from jurystream.models.serving.juror import load_juror
from jurystream.models.serving.jury import Jury
from jurystream.stream.feed import LABELS, labeled_examples

JURORS = ("a", "b", "c")


@pytest.fixture(scope="module")
def batch() -> list[str]:
    """One worker micro-batch (settings.jury.batch_size) of feed posts."""
    texts, _ = labeled_examples(32, seed=3)
    return texts


@pytest.fixture(scope="module")
def probs() -> np.ndarray:
    """Votes of three jurors on 32 texts, shape (texts, jurors, labels)."""
    raw = np.random.default_rng(0).random((32, len(JURORS), len(LABELS)))
    return raw / raw.sum(axis=2, keepdims=True)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_voting_policy_on_a_batch(benchmark, policy: str, probs: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    vote = POLICIES[policy]
    decisions = benchmark(lambda: [vote(p, JURORS, LABELS, 0.6) for p in probs])
    assert len(decisions) == len(probs)


def test_sklearn_jury_decides_a_batch(
    benchmark, sklearn_jurors: list[Path], batch: list[str]
) -> None:  # type: ignore[no-untyped-def]
    jury = Jury(tuple(load_juror(d) for d in sklearn_jurors), "unanimous", 0.7)
    decisions = benchmark(jury.decide, batch)
    assert len(decisions) == len(batch)


def test_transformer_juror_predicts_a_batch(
    benchmark, tiny_jurors: list[Path], batch: list[str]
) -> None:  # type: ignore[no-untyped-def]
    juror = load_juror(tiny_jurors[0])
    out = benchmark(juror.predict_proba, batch)
    assert out.shape == (len(batch), len(LABELS))
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-4)
