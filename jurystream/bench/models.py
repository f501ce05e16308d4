"""Per-juror throughput: PyTorch vs ONNX fp32 vs ONNX int8 on the same texts, in one run.

All three get the same inputs from the serving tokenizer (``tokenizer.json``) and tokenizing is
timed in every case, so the numbers are what a worker would see and the ratios isolate the
runtime and the precision. Each (runtime, batch size) is measured over several rounds of the
whole text set and the median is reported, which is robust to a neighbour's burst of CPU use.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jurystream.exporters.onnx import (
    encode,
    export_fp32,
    onnx_logits,
    onnx_session,
    torch_logits,
    torch_model,
)
from jurystream.models.juror import read_manifest
from jurystream.models.registry import CHECKPOINT_DIR


@dataclass(frozen=True)
class Measurement:
    runtime: str  # "torch", "onnx-fp32", "onnx-int8"
    batch_size: int
    texts_per_s: float  # median over rounds
    rounds: int


def _rate(run: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        run(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - started)


def bench_juror(
    juror_dir: Path,
    texts: Sequence[str],
    batch_sizes: Sequence[int] = (1, 8, 32),
    rounds: int = 5,
    threads: int = 1,
) -> list[Measurement]:
    """Throughput of one transformer juror (with its kept checkpoint) per runtime and batch."""
    import torch

    manifest = read_manifest(juror_dir)
    checkpoint = juror_dir / CHECKPOINT_DIR
    if manifest.kind != "onnx-transformer" or not (checkpoint / "config.json").is_file():
        raise ValueError(f"{juror_dir}: needs a transformer juror exported with its checkpoint")
    tokenizer = juror_dir / "tokenizer.json"
    torch.set_num_threads(threads)
    reference = torch_model(checkpoint, threads)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = onnx_session(export_fp32(checkpoint, Path(tmp)), threads)
    int8 = onnx_session(juror_dir / str(manifest.extra.get("model_file", "model.onnx")), threads)

    def runner(fn: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Callable:
        return lambda batch: fn(encode(tokenizer, batch, manifest.max_length))

    runtimes = {
        "torch": runner(lambda feeds: torch_logits(reference, feeds)),
        "onnx-fp32": runner(lambda feeds: onnx_logits(fp32, feeds)),
        "onnx-int8": runner(lambda feeds: onnx_logits(int8, feeds)),
    }
    results = []
    for batch in batch_sizes:
        for name, run in runtimes.items():
            run(texts[:batch])  # warm-up: first-call allocations are not throughput
            rates = [_rate(run, texts, batch) for _ in range(rounds)]
            results.append(Measurement(name, batch, statistics.median(rates), rounds))
    return results


def markdown(juror: str, results: Sequence[Measurement], n_texts: int, threads: int) -> str:
    """A BENCHMARKS.md table: texts/s per runtime and batch, and ratios to PyTorch."""
    by = {(m.runtime, m.batch_size): m.texts_per_s for m in results}
    batches = sorted({m.batch_size for m in results})
    lines = [
        f"Juror `{juror}`, {n_texts} texts, {threads} thread(s), median of "
        f"{results[0].rounds} rounds, {platform.processor() or platform.machine()}.",
        "",
        "| batch | torch texts/s | ONNX fp32 texts/s | ONNX int8 texts/s | fp32 / torch "
        "| int8 / torch | int8 / fp32 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in batches:
        t, f, q = by[("torch", b)], by[("onnx-fp32", b)], by[("onnx-int8", b)]
        lines.append(
            f"| {b} | {t:.0f} | {f:.0f} | {q:.0f} | {f / t:.2f}× | {q / t:.2f}× | {q / f:.2f}× |"
        )
    return "\n".join(lines)
