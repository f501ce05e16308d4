"""Per-juror throughput: PyTorch vs ONNX fp32 vs ONNX int8 on the same texts, in one run.

All three get the same inputs from the serving tokenizer (``tokenizer.json``) and tokenizing is
timed in every case, so the numbers are what a worker would see and the ratios isolate the
runtime and the precision. Each (runtime, batch size) is measured over several rounds of the
whole text set, interleaving the runtimes, and the median is reported; CPU time is recorded
beside wall time so the ratios hold on a machine shared with other work.
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

from jurystream.exporters.onnx import export_fp32, onnx_logits, torch_logits, torch_model
from jurystream.models.serving.juror import read_manifest
from jurystream.models.serving.kinds import kept_checkpoint
from jurystream.models.serving.runtime import encode, load_tokenizer, session


@dataclass(frozen=True)
class Measurement:
    runtime: str  # "torch", "onnx-fp32", "onnx-int8"
    batch_size: int
    texts_per_s: float  # wall clock, median over rounds
    texts_per_cpu_s: float  # per second of process CPU time, median over rounds
    rounds: int


def _rates(
    run: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], batch: int
) -> tuple[float, float]:
    """Texts per wall-clock second and per CPU second for one pass over ``texts``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(texts), batch):
        run(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - wall), len(texts) / (time.process_time() - cpu)


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
    checkpoint = kept_checkpoint(juror_dir, manifest.kind)
    if checkpoint is None:
        raise ValueError(f"{juror_dir}: needs a transformer juror exported with its checkpoint")
    tokenizer = load_tokenizer(juror_dir / "tokenizer.json", manifest.max_length)
    torch.set_num_threads(threads)
    reference = torch_model(checkpoint, threads)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = session(export_fp32(checkpoint, Path(tmp)), threads)
    int8 = session(juror_dir / str(manifest.extra.get("model_file", "model.onnx")), threads)

    def runner(fn: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Callable:
        return lambda batch: fn(encode(tokenizer, batch))

    runtimes = {
        "torch": runner(lambda feeds: torch_logits(reference, feeds)),
        "onnx-fp32": runner(lambda feeds: onnx_logits(fp32, feeds)),
        "onnx-int8": runner(lambda feeds: onnx_logits(int8, feeds)),
    }
    results = []
    for batch in batch_sizes:
        for run in runtimes.values():
            run(texts[:batch])  # warm-up: first-call allocations are not throughput
        # Rounds interleave the runtimes, so a neighbour's burst of CPU use hits all three.
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runtimes}
        for _ in range(rounds):
            for name, run in runtimes.items():
                samples[name].append(_rates(run, texts, batch))
        for name, rates in samples.items():
            wall = statistics.median(r[0] for r in rates)
            cpu = statistics.median(r[1] for r in rates)
            results.append(Measurement(name, batch, wall, cpu, rounds))
    return results


def markdown(juror: str, results: Sequence[Measurement], n_texts: int, threads: int) -> str:
    """A BENCHMARKS.md table: texts/s per runtime and batch, and ratios to PyTorch.

    Ratios use CPU time: on a shared machine the wall clock also counts time spent waiting for
    a core, which says more about the neighbours than about the runtime.
    """
    wall = {(m.runtime, m.batch_size): m.texts_per_s for m in results}
    cpu = {(m.runtime, m.batch_size): m.texts_per_cpu_s for m in results}
    batches = sorted({m.batch_size for m in results})
    lines = [
        f"Juror `{juror}`, {n_texts} texts, {threads} thread(s), median of "
        f"{results[0].rounds} interleaved rounds, {platform.machine()}. "
        "texts/s is wall clock; ratios are per CPU second.",
        "",
        "| batch | torch texts/s | ONNX fp32 texts/s | ONNX int8 texts/s | fp32 / torch "
        "| int8 / torch | int8 / fp32 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in batches:
        t, f, q = (wall[(r, b)] for r in ("torch", "onnx-fp32", "onnx-int8"))
        ct, cf, cq = (cpu[(r, b)] for r in ("torch", "onnx-fp32", "onnx-int8"))
        lines.append(
            f"| {b} | {t:.0f} | {f:.0f} | {q:.0f} | {cf / ct:.2f}× | {cq / ct:.2f}× "
            f"| {cq / cf:.2f}× |"
        )
    return "\n".join(lines)
