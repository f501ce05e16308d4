"""The jurors both benchmarks run on: bootstrapped once per (task, seed size, K), then reused.

Training a MiniLM juror costs minutes on 2 cores, so the bench keeps the jurors in a registry
under ``<workdir>/jurors/<task>-s<seed>`` and bootstraps only when one it needs is missing. Juror
``minilm-i`` is trained the same way whatever K is (seed i, resample i), so the quality bench's
two MiniLM jurors are the first two of the perf bench's three.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jurystream.config import Settings
from jurystream.models.serving.registry import Registry
from jurystream.models.training.bootstrap import TFIDF_NAME, BootstrapPlan, bootstrap_jurors
from jurystream.models.training.datasets import LabeledSet
from jurystream.models.training.training import TrainConfig

BENCH_EPOCHS = 4
BENCH_LEARNING_RATE = 1e-4
# int8 must pick the fp32 label on ≥ 95% of check texts (the exporter's default is 98%). A
# MiniLM trained on 400 tweets has many texts near its decision boundary, where dynamic int8
# flips a few; the benches measure the int8 jurors' accuracy directly, so what the flips cost
# is in the numbers, and each manifest records the agreement reached.
BENCH_MIN_INT8_AGREEMENT = 0.95


def jury_names(plan: BootstrapPlan) -> list[str]:
    """Juror names a plan produces, transformers first (the order ``bootstrap_jurors`` uses)."""
    names = [f"{plan.prefix}-{i}" for i in range(plan.transformers)]
    return [*names, TFIDF_NAME] if plan.tfidf else names


def bench_plan(
    settings: Settings,
    transformers: int,
    base: Path | None = None,
    learning_rate: float = BENCH_LEARNING_RATE,
) -> BootstrapPlan:
    """The benches' bootstrap plan: 4 epochs at lr 1e-4, the recipe the slow MiniLM test holds
    to a clear margin over the majority class (the trainer's 2 epochs at 3e-5, meant for
    refining a serving juror, leave a fresh MiniLM head predicting the majority class)."""
    return BootstrapPlan(
        transformers=transformers,
        tfidf=True,
        base=base,
        min_agreement=BENCH_MIN_INT8_AGREEMENT,
        train=TrainConfig(
            epochs=BENCH_EPOCHS,
            batch_size=settings.trainer.batch_size,
            learning_rate=learning_rate,
            threads=settings.trainer.threads,
        ),
    )


def ensure_jurors(
    registry_dir: Path,
    seed: LabeledSet,
    heldout: LabeledSet,
    plan: BootstrapPlan,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Serving directories of the plan's jurors; the whole jury is bootstrapped if one is missing
    (its members are trained as a set: different seeds and resamples of one seed set)."""
    registry = Registry(registry_dir)
    names = jury_names(plan)
    if any(registry.serving_version(n) is None for n in names):
        log(f"bootstrapping {', '.join(names)} into {registry_dir} (reused by later runs)")
        bootstrap_jurors(seed, registry, plan, heldout=heldout, progress=progress, log=log)
    return {n: registry.serving_dir(n) for n in names}
