"""The library messages an export prints on every run that say nothing to a jurystream user.

Each is filtered exactly where it is raised, by its text or category, so any other warning
still shows:

- transformers: "`torch_dtype` is deprecated! Use `dtype` instead!" — optimum's exporter
  reads the config's ``torch_dtype``; nothing in our call can change it.
- torch.jit ``TracerWarning`` while optimum traces the model for ONNX (the legacy TorchScript
  exporter, itself announced by two ``DeprecationWarning``s): tracing is what the export is.
- onnxruntime quantization: "Please consider to run pre-processing before quantization",
  logged on the root logger for every model; the shape-inference pre-pass it suggests is for
  static quantization, and our dynamic int8 is verified against fp32 after it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

TORCH_DTYPE = "`torch_dtype` is deprecated"
PREPROCESS = "Please consider to run pre-processing before quantization"


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


@contextlib.contextmanager
def _log_filter(logger: logging.Logger, *fragments: str) -> Iterator[None]:
    drop = _DropMessages(*fragments)
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


@contextlib.contextmanager
def quiet_onnx_export() -> Iterator[None]:
    """Around optimum's ``main_export``."""
    from torch.jit import TracerWarning

    with (
        warnings.catch_warnings(),
        _log_filter(logging.getLogger("transformers.configuration_utils"), TORCH_DTYPE),
    ):
        warnings.filterwarnings("ignore", category=TracerWarning)
        warnings.filterwarnings(
            "ignore", message=re.escape("You are using the legacy TorchScript-based ONNX export")
        )
        warnings.filterwarnings(
            "ignore", message=re.escape("The feature will be removed. Please remove usage")
        )
        yield


@contextlib.contextmanager
def quiet_quantization() -> Iterator[None]:
    """Around onnxruntime's ``quantize_dynamic``."""
    with _log_filter(logging.getLogger(), PREPROCESS):
        yield
