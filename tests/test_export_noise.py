"""A tiny export prints no known library noise, and real warnings still get through."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from jurystream.exporters.noise import quiet_onnx_export, quiet_quantization
from jurystream.exporters.onnx import export_transformer
from jurystream.stream.feed import labeled_examples

NOISE = (
    "torch_dtype` is deprecated",
    "TracerWarning",
    "Please consider to run pre-processing before quantization",
    "legacy TorchScript-based ONNX export",
)


def test_a_tiny_export_emits_none_of_the_known_noise(
    tiny_base: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # transformers says "torch_dtype is deprecated" once per process: forget that it did.
    warning_once = getattr(logging.Logger, "warning_once", None)
    if warning_once is not None and hasattr(warning_once, "cache_clear"):
        warning_once.cache_clear()
    caplog.set_level(logging.WARNING)
    texts, _ = labeled_examples(40, seed=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_transformer(
            tiny_base, tmp_path / "j", name="j", version="1", check_texts=texts, max_length=64
        )
    out, err = capfd.readouterr()
    # transformers logs to stderr itself; everything else reaches the root logger (caplog)
    lines = [out, err, caplog.text, *(f"{w.category.__name__}: {w.message}" for w in caught)]
    shown = "\n".join(lines)
    for noise in NOISE:
        assert noise not in shown, shown


def test_other_warnings_and_log_lines_still_show(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_onnx_export(), quiet_quantization():
            warnings.warn("a real problem", UserWarning, stacklevel=1)
            logging.getLogger().warning("a real log line")
            logging.getLogger().warning("Please consider to run pre-processing before quantization")
    assert [str(w.message) for w in caught] == ["a real problem"]
    assert "a real log line" in caplog.text and "pre-processing" not in caplog.text
