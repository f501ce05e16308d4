"""Every core on one jury: jurors scored side by side, each juror's length chunks spread over
one pool of threads.

onnxruntime and tokenizers release the GIL, so threads in one process are enough. Measured side
by side on 2 cores (Xeon, int8 MiniLM jurors, TweetEval offensive val, batches of 32; the
figures are in BENCHMARKS.md):

- two jurors: one thread 212 texts/s; two intra-op threads per session 182–203 (a chunk of
  ≤ 8 short texts is too small to split inside an operator); chunks over two threads 392;
  jurors side by side 416; both 400;
- three jurors: one thread 133; jurors side by side 204 (the third waits for a free core);
  chunks over two threads 233; both 254.

So both: a juror's chunks go to a pool of ``threads`` threads (one per core), and the jurors
are tokenized and fed side by side, so one juror's tokenizing overlaps another's inference.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from jurystream.models.serving.juror import ChunkMap, Juror

J = TypeVar("J")
R = TypeVar("R")


@runtime_checkable
class ChunkedJuror(Protocol):
    """A juror that scores a batch in independent chunks and lets the caller run them."""

    def predict_chunks(self, texts: Sequence[str], map_chunks: ChunkMap) -> np.ndarray: ...


class MultiHeadJuror(Protocol):
    def predict_heads(
        self, texts: Sequence[str], map_chunks: ChunkMap = map
    ) -> dict[str, np.ndarray]: ...


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    Kubernetes CPU limit of 2 on a 16-core node is 2, not 16)."""
    cores = len(os.sched_getaffinity(0))
    cpu_max = Path("/sys/fs/cgroup/cpu.max")
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, int(float(quota) // float(period))))


class InferencePool:
    """Threads that score one jury's batch on every core; shared by every jury a worker serves
    (a hot-swapped jury keeps the pool)."""

    def __init__(self, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"an inference pool needs at least one thread, not {threads}")
        self.threads = threads
        self._chunks = ThreadPoolExecutor(threads, thread_name_prefix="onnx")
        # These threads only tokenize and wait for their chunks: not counted against the cores.
        self._jurors = ThreadPoolExecutor(thread_name_prefix="juror")

    def score(self, juror: Juror, texts: Sequence[str]) -> np.ndarray:
        if isinstance(juror, ChunkedJuror):
            return juror.predict_chunks(texts, self._map_chunks)
        return np.asarray(self._chunks.submit(juror.predict_proba, texts).result())

    def score_heads(self, juror: MultiHeadJuror, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Every head of a multi-head juror, its chunks spread over the pool's threads."""
        return juror.predict_heads(texts, self._map_chunks)

    def _map_chunks(
        self, run: Callable[[list[int]], None], chunks: Iterable[list[int]]
    ) -> Iterator[None]:
        chunks = list(chunks)
        if len(chunks) == 1:  # a quiet stream's one post: no hand-over to another thread
            return map(run, chunks)
        return self._chunks.map(run, chunks)

    def probabilities(self, jurors: Sequence[Juror], texts: Sequence[str]) -> np.ndarray:
        """All jurors on all texts, side by side: shape (texts, jurors, labels)."""
        return np.stack(self.side_by_side(lambda j: self.score(j, texts), jurors), axis=1)

    def side_by_side(self, score: Callable[[J], R], jurors: Sequence[J]) -> list[R]:
        """``score`` of each juror, the jurors run side by side (their chunks share the cores)."""
        futures = [self._jurors.submit(score, j) for j in jurors]
        return [f.result() for f in futures]

    def close(self) -> None:
        self._jurors.shutdown(wait=True)
        self._chunks.shutdown(wait=True)
