"""How a juror serves a batch: length-bounded inference calls, and a heap that is given back."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jurystream.models.juror import length_chunks, trim_heap


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
