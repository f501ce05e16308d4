"""Bootstrap a jury from a small seed set: K diverse fine-tuned transformers + TF-IDF/LR.

This is the start of a labeling project: a few hundred labels, no jurors yet. Each
transformer juror starts from the same base weights but sees a different bootstrap resample
in a different order (its seed), so their mistakes differ and unanimity means something; the
TF-IDF juror adds a model of a different family that costs almost nothing (a cascade's first
tier). Every juror is exported, quantized and verified before it is published, and its
metrics on a held-out split, if one is given, go into its manifest.

A bootstrap never ends empty-handed because of one juror: a juror that fails (training, export,
verification) is reported and the others are still published; ``BootstrapIncomplete`` then
carries both lists so the command can show them and exit non-zero.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jurystream.models.rules.scores import classification_report
from jurystream.models.serving.juror import load_juror, precision_note
from jurystream.models.serving.kinds import SKLEARN, TRANSFORMER
from jurystream.models.serving.registry import Registry
from jurystream.models.training.datasets import LabeledSet
from jurystream.models.training.evaluation import juror_probabilities
from jurystream.models.training.training import TrainConfig

TFIDF_NAME = SKLEARN.family


@dataclass(frozen=True)
class BootstrapPlan:
    """What to train: ``transformers`` fine-tuned jurors (+ a TF-IDF one) from ``base``."""

    transformers: int = 3
    tfidf: bool = True
    base: Path | None = None  # None: the offline MiniLM weights
    prefix: str = TRANSFORMER.family
    train: TrainConfig = field(default_factory=TrainConfig)
    max_length: int = 128
    check_size: int = 256  # texts for the int8 vs fp32 agreement check
    min_agreement: float = 0.98
    tolerance: float = 1e-3


@dataclass(frozen=True)
class BootstrappedJuror:
    name: str
    version: str
    metrics: dict[str, Any]


class BootstrapIncomplete(RuntimeError):
    """Some jurors failed; ``published`` were still registered, ``failures`` says why not."""

    def __init__(self, published: list[BootstrappedJuror], failures: list[tuple[str, str]]) -> None:
        self.published = published
        self.failures = failures
        detail = "; ".join(f"{name}: {why}" for name, why in failures)
        super().__init__(
            f"{len(failures)} juror(s) failed ({detail}); "
            f"{len(published)} published: {', '.join(r.name for r in published) or 'none'}"
        )


def bootstrap_jurors(
    seed: LabeledSet,
    registry: Registry,
    plan: BootstrapPlan | None = None,
    *,
    heldout: LabeledSet | None = None,
    progress: bool = True,
    work_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> list[BootstrappedJuror]:
    """Train, export, verify and publish (as serving) every juror of ``plan``.

    ``heldout`` (e.g. the val split) is used for the check texts and the manifests' metrics;
    without it the seed set itself is used for the check (metrics are then omitted, since
    training accuracy says little).
    """
    from jurystream.models.training.training import base_model_path, train_transformer

    export_transformer = TRANSFORMER.implementation("export")
    build_sklearn_juror = SKLEARN.implementation("export")

    plan = plan or BootstrapPlan()
    if len(set(seed.labels)) < len(seed.label_names):
        missing = sorted(set(seed.label_names) - set(seed.gold()))
        raise ValueError(f"the seed set has no example of {missing}; every label needs some")
    if heldout is not None:  # same names in another order is the same label set
        heldout = heldout.with_label_order(seed.label_names, "held-out set vs seed set")
    base = plan.base or base_model_path()
    check = list((heldout or seed).texts[: plan.check_size])
    data = {"seed": seed.summary(), "heldout": heldout.summary() if heldout else None}
    results: list[BootstrappedJuror] = []
    failures: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        work = Path(tmp)

        def attempt(name: str, build: Callable[[], Path]) -> None:
            try:
                results.append(_publish(registry, build(), name, heldout, data, log))
            except Exception as exc:  # one juror's failure must not discard the others
                failures.append((name, f"{type(exc).__name__}: {exc}"))
                log(f"{name} failed, not published: {exc}")

        for i in range(plan.transformers):
            name = f"{plan.prefix}-{i}"

            def transformer(name: str = name, i: int = i) -> Path:
                config = replace(plan.train, seed=plan.train.seed + i, bootstrap=True)
                trained = train_transformer(
                    base,
                    seed.texts,
                    seed.labels,
                    seed.label_names,
                    work / f"{name}-checkpoint",
                    config,
                    progress=progress,
                    description=f"training {name}",
                )
                return export_transformer(
                    trained.checkpoint,
                    work / name,
                    name=name,
                    version="0",
                    check_texts=check,
                    labels=seed.label_names,
                    max_length=plan.max_length,
                    tolerance=plan.tolerance,
                    min_agreement=plan.min_agreement,
                    threads=plan.train.threads,
                )

            attempt(name, transformer)
        if plan.tfidf:
            attempt(
                TFIDF_NAME,
                lambda: build_sklearn_juror(
                    seed.texts,
                    seed.labels,
                    seed.label_names,
                    work / TFIDF_NAME,
                    name=TFIDF_NAME,
                    version="0",
                    seed=plan.train.seed,
                ),
            )
    if failures:
        raise BootstrapIncomplete(results, failures)
    return results


def _publish(
    registry: Registry,
    directory: Path,
    name: str,
    heldout: LabeledSet | None,
    data: dict[str, Any],
    log: Callable[[str], None],
) -> BootstrappedJuror:
    metrics: dict[str, Any] = {}
    if heldout is not None:
        probs = juror_probabilities([load_juror(directory)], heldout.texts)[:, 0]
        metrics = classification_report(probs, heldout.labels, heldout.label_names)
    version = registry.publish(directory, name=name, extra={"metrics": metrics, "data": data})
    if metrics:
        log(
            f"{name} v{version}: accuracy {metrics['accuracy']:.3f}, "
            f"macro-F1 {metrics['macro_f1']:.3f} on {metrics['examples']} held-out texts"
        )
    else:
        log(f"{name} v{version} published")
    note = precision_note(registry.manifest(name, version).extra)
    if note:
        log(f"{name} v{version}: {note}")
    return BootstrappedJuror(name, version, metrics)
