"""k-nearest-neighbour demonstrations from a small gold pool (LLMaAA).

Similarity is the cosine of sentence embeddings. Two encoders:

- :class:`OnnxEncoder`: a transformer encoder exported to ONNX (``model.onnx`` with a
  ``last_hidden_state`` output + ``tokenizer.json``; ``jurystream.exporters.onnx.export_encoder``
  makes one from a checkpoint such as all-MiniLM-L6-v2), mean-pooled over the attention mask
  like sentence-transformers. Served with onnxruntime + tokenizers only, like the jurors.
- :class:`TfidfEncoder`: word 1-2-grams and character 3-5-grams fitted on the pool, the default
  when no encoder is configured (``reviewer.knn_encoder``): nothing to download or export, and it
  picks lexically close examples.

Texts identical to the case are never shown: that would leak the case's own gold label into its
prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy.sparse import hstack, issparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from jurystream.models.reviewer.prompt import Demonstration
from jurystream.models.serving import runtime
from jurystream.models.serving.juror import ModelLoadError
from jurystream.models.training.datasets import LabeledSet


class Encoder(Protocol):
    def fit(self, texts: Sequence[str]) -> None: ...

    def encode(self, texts: Sequence[str]) -> Any:
        """L2-normalised embeddings, shape (len(texts), dim): a dense array or, for
        high-dimensional sparse features, a scipy sparse matrix."""
        ...


class TfidfEncoder:
    def __init__(self) -> None:
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

    def fit(self, texts: Sequence[str]) -> None:
        self._words.fit(texts)
        self._chars.fit(texts)

    def encode(self, texts: Sequence[str]) -> Any:
        # Sparse: a pool of a few hundred posts has tens of thousands of n-gram features.
        sparse = hstack([self._words.transform(texts), self._chars.transform(texts)]).tocsr()
        return normalize(sparse)


class OnnxEncoder:
    """Mean-pooled, L2-normalised token embeddings from an ONNX transformer encoder."""

    def __init__(self, directory: Path | str, threads: int = 1, max_length: int = 128) -> None:
        directory = Path(directory)
        model, tokenizer_file = directory / "model.onnx", directory / "tokenizer.json"
        for path in (model, tokenizer_file):
            if not path.is_file():
                raise ModelLoadError(f"{directory}: no {path.name}; export one with export_encoder")
        self._session = runtime.session(model, threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]
        self._tokenizer = runtime.load_tokenizer(tokenizer_file, max_length)

    def fit(self, texts: Sequence[str]) -> None:
        """Nothing to fit: the encoder is pretrained."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        feeds = runtime.encode(self._tokenizer, texts)
        mask = feeds["attention_mask"]
        (hidden,) = self._session.run(
            [self._output], {k: v for k, v in feeds.items() if k in self._inputs}
        )
        hidden = np.asarray(hidden, dtype=np.float32)
        if hidden.ndim != 3:
            raise ModelLoadError(
                f"encoder output {self._output} has shape {hidden.shape}; expected token "
                "embeddings (batch, tokens, dim): export with task feature-extraction"
            )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)


class KnnDemonstrations:
    """``pool.nearest(text)`` → the ``k`` most similar gold examples, most similar first."""

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        k: int,
        encoder: Encoder | None = None,
    ) -> None:
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} pool texts but {len(labels)} labels")
        if not texts:
            raise ValueError("the gold pool is empty")
        self.texts = list(texts)
        self.labels = list(labels)
        self.k = k
        self.encoder: Encoder = encoder or TfidfEncoder()
        self.encoder.fit(self.texts)
        self._matrix = self.encoder.encode(self.texts)

    @classmethod
    def from_labeled_set(
        cls, data: LabeledSet, k: int, encoder: Encoder | None = None
    ) -> KnnDemonstrations:
        return cls(data.texts, data.gold(), k, encoder)

    def nearest(self, text: str) -> list[Demonstration]:
        if self.k == 0:
            return []
        scores = self._matrix @ self.encoder.encode([text]).T
        if issparse(scores):
            scores = scores.toarray()
        scores = np.asarray(scores).ravel()
        out: list[Demonstration] = []
        for i in np.argsort(-scores, kind="stable"):
            if self.texts[i] == text:
                continue
            out.append(Demonstration(self.texts[i], self.labels[i]))
            if len(out) == self.k:
                break
        return out
