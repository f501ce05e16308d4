"""k-nearest-neighbour demonstrations from a small gold pool (LLMaAA).

Similarity is cosine over TF-IDF vectors (word unigrams and bigrams plus character 3-5-grams,
fitted on the pool). No ONNX sentence encoder ships with the project and the serving install
has no torch, so a TF-IDF encoder is the one that is always available; it is cheap (well under
a millisecond per query for a pool of a few hundred) and picks lexically close examples, which
is what a demonstration is for. Texts identical to the case are never shown: that would leak
the case's own gold label into its prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from jurystream.models.datasets import LabeledSet
from jurystream.models.reviewer.prompt import Demonstration


class KnnDemonstrations:
    """``pool.nearest(text)`` → the ``k`` most similar gold examples, most similar first."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str], k: int) -> None:
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} pool texts but {len(labels)} labels")
        if not texts:
            raise ValueError("the gold pool is empty")
        self.texts = list(texts)
        self.labels = list(labels)
        self.k = k
        # Words of any length and single symbols (emoji, punctuation) so no pool is "empty".
        self._words = TfidfVectorizer(
            ngram_range=(1, 2),
            sublinear_tf=True,
            lowercase=True,
            token_pattern=r"(?u)\b\w+\b|[^\w\s]",
        )
        self._chars = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, lowercase=True
        )
        self._matrix = self._embed(self.texts, fit=True)

    @classmethod
    def from_labeled_set(cls, data: LabeledSet, k: int) -> KnnDemonstrations:
        return cls(data.texts, data.gold(), k)

    def _embed(self, texts: Sequence[str], fit: bool = False) -> Any:
        if fit:
            words, chars = self._words.fit_transform(texts), self._chars.fit_transform(texts)
        else:
            words, chars = self._words.transform(texts), self._chars.transform(texts)
        return normalize(hstack([words, chars]).tocsr())

    def nearest(self, text: str) -> list[Demonstration]:
        if self.k == 0:
            return []
        query = self._embed([text])
        scores = np.asarray((query @ self._matrix.T).todense()).ravel()
        out: list[Demonstration] = []
        for i in np.argsort(-scores, kind="stable"):
            if self.texts[i] == text:
                continue
            out.append(Demonstration(self.texts[i], self.labels[i]))
            if len(out) == self.k:
                break
        return out
