"""What several tasks cost when one juror serves them all: a multi-head juror's ``predict_heads``
against a single-head juror's ``predict_proba`` on the same texts (BENCHMARKS.md, Multi-task).

Each round times every variant once, in a rotating order, on one thread; the figure is the
median over rounds of each variant's time divided by the single head's in the same round, so
other work on a shared machine slows both sides of a ratio alike.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Variant = Callable[[Sequence[str]], Any]


@dataclass(frozen=True)
class HeadsRow:
    variant: str
    texts_per_s: float
    vs_one_head: float  # median per-round time ratio to the first variant


def variants(multi: Any, single: Any) -> dict[str, Variant]:
    """The single head first (the reference), then the ways to label with the multi-head."""
    heads = list(multi.heads)
    return {
        f"1 head ({single.name}), predict_proba": single.predict_proba,
        f"{len(heads)} heads ({multi.name}), predict_heads": multi.predict_heads,
        f"{len(heads)} heads, predict_proba (first head only)": multi.predict_proba,
        f"{len(heads)} heads, each head view in turn": lambda texts: [
            multi.head(task).predict_proba(texts) for task in heads
        ],
    }


def time_variants(
    runs: dict[str, Variant], texts: Sequence[str], rounds: int = 8
) -> tuple[list[HeadsRow], dict[str, float]]:
    """Every variant on ``texts`` once per round (after one warm-up); rows and load averages."""
    names = list(runs)
    for run in runs.values():
        run(texts)
    load_start = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.perf_counter()
            runs[name](texts)
            times[name].append(time.perf_counter() - started)
    reference = times[names[0]]
    rows = [
        HeadsRow(
            name,
            len(texts) / statistics.median(times[name]),
            statistics.median(t / ref for t, ref in zip(times[name], reference, strict=True)),
        )
        for name in names
    ]
    return rows, {"load_start": load_start, "load_end": os.getloadavg()[0]}


def markdown(rows: Sequence[HeadsRow], texts: int, load: dict[str, float]) -> str:
    lines = [
        f"{texts} texts, 1 thread; load average {load['load_start']:.2f} at the start, "
        f"{load['load_end']:.2f} at the end",
        "",
        "| variant | texts/s | time vs one head |",
        "|---|---:|---:|",
    ]
    lines += [f"| {r.variant} | {r.texts_per_s:.0f} | {r.vs_one_head:.2f}x |" for r in rows]
    return "\n".join(lines)
