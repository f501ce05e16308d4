"""How a juror serves a batch: length-bounded inference calls, and a heap that is given back."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jurystream.models.serving.juror import length_chunks, load_juror, trim_heap
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.parallel import InferencePool, usable_cores
from jurystream.stream.feed import LABELS
from tests.fixtures.models import gibberish


@given(
    st.lists(st.integers(1, 128), max_size=64),
    st.integers(1, 16),
    st.floats(1.0, 2.0),
)
def test_length_chunks_cover_every_text_once_within_size_and_slack(
    lengths: list[int], max_texts: int, slack: float
) -> None:
    chunks = length_chunks(lengths, max_texts, slack)
    assert sorted(i for chunk in chunks for i in chunk) == list(range(len(lengths)))
    for chunk in chunks:
        assert 1 <= len(chunk) <= max_texts
        shortest, longest = min(lengths[i] for i in chunk), max(lengths[i] for i in chunk)
        assert longest <= slack * shortest


def test_length_chunks_group_similar_lengths_and_split_outliers() -> None:
    lengths = [30, 5, 31, 6, 120, 5, 32]
    assert length_chunks(lengths, max_texts=8, slack=1.1) == [[1, 5], [3], [0, 2, 6], [4]]
    assert length_chunks([7] * 5, max_texts=2, slack=1.1) == [[0, 1], [2, 3], [4]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_heap_returns_freed_heap_memory_to_the_os() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    process = psutil.Process()
    # 64 KiB blocks stay below glibc's mmap threshold, so they live on the heap like
    # onnxruntime's per-batch buffers; keep the last one so the heap top cannot simply shrink.
    blocks = [libc.malloc(64 * 1024) for _ in range(3000)]
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    for block in blocks[:-1]:
        libc.free(block)
    before = process.memory_info().rss
    trim_heap()
    after = process.memory_info().rss
    libc.free(blocks[-1])
    assert before - after > 100 * 2**20, (before / 2**20, after / 2**20)


def test_an_inference_pool_decides_exactly_as_one_thread(
    tiny_jurors: list[Path], sklearn_jurors: list[Path]
) -> None:
    jurors = tuple(load_juror(d) for d in [*tiny_jurors, sklearn_jurors[0]])
    texts = [*gibberish(40, seed=3), "you are a complete idiot", "what a lovely game"] * 2
    pool = InferencePool(3)
    try:
        for policy, threshold in (("unanimous", 0.7), ("majority", 0.6), ("cascade", 0.9)):
            alone = Jury(jurors, policy, threshold)
            pooled = replace(alone, pool=pool)
            np.testing.assert_allclose(pooled.probabilities(texts), alone.probabilities(texts))
            assert pooled.decide(texts) == alone.decide(texts)
            # A hot swap keeps the pool.
            assert pooled.with_juror(load_juror(tiny_jurors[0])).pool is pool
    finally:
        pool.close()


class _Broken:
    name, version, labels, cost = "broken", "1", LABELS, 1.0

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("onnxruntime: bad input")


def test_a_juror_failing_in_the_pool_fails_the_batch_for_the_worker_to_isolate(
    tiny_jurors: list[Path],
) -> None:
    pool = InferencePool(2)
    try:
        jury = Jury((load_juror(tiny_jurors[0]), _Broken()), pool=pool)
        with pytest.raises(RuntimeError, match="bad input"):
            jury.decide(["a post"])
    finally:
        pool.close()


def test_usable_cores_is_within_the_affinity() -> None:
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))
