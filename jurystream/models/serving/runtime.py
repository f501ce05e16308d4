"""onnxruntime sessions and tokenizer inputs, set up one way for every ONNX model we run.

Serving jurors, export verification, the speed measurements and the k-NN sentence encoder all
feed MiniLM-style models: when each set up its own session or tokenizer, a verification could
pass on settings the worker never used. Here is the one set-up; callers differ only in the
model file, the thread budget and the maximum length.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort


def session(model: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with a fixed thread budget (the machine is shared with the stream).

    No CPU arena: batches are padded to their own longest text, so shapes change all the time
    and each session's arena kept the largest it had seen. Plain malloc, trimmed after every
    batch (``jurystream.models.serving.juror.trim_heap``), gives the memory back; throughput is the
    same within noise.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )


def load_tokenizer(tokenizer_file: Path, max_length: int) -> Any:
    """The ``tokenizer.json`` of a model, truncating at ``max_length`` and padding each batch
    to its longest text (not to ``max_length``: short posts stay cheap)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length=max_length)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id)
    return tokenizer


def encode(tokenizer: Any, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Model inputs for ``texts``: input ids, attention mask and token type ids (int64)."""
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
