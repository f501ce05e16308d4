"""One training round's candidate per juror kind (the ``refine`` steps of ``models.kinds``).

- a transformer juror continues training from the checkpoint kept with its serving version on
  the round's examples, then goes through the jurors' export path (optimum → int8 →
  verification);
- a TF-IDF juror has no state worth continuing from, so it is refit on what the round gives it
  (the whole history), with the hyper-parameters its manifest records, so it keeps its
  diversity from the other jurors.

torch, transformers and skl2onnx are imported inside the functions, when a round runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jurystream.config import TrainerSettings
from jurystream.models.rules.continual import TrainingSet
from jurystream.models.serving.juror import Manifest
from jurystream.models.serving.kinds import SKLEARN, TRANSFORMER, kept_checkpoint


@dataclass(frozen=True)
class RefineInputs:
    """What a round gives a juror's refine step."""

    manifest: Manifest  # the serving version's
    serving_dir: Path  # the serving version's (local) directory
    data: TrainingSet
    target: Path  # the candidate juror directory to write (must not exist)
    work: Path  # scratch space of the round
    round_id: int
    settings: TrainerSettings
    check_texts: Sequence[str]  # texts an export is verified on
    min_int8_agreement: float | None = None  # None: the exporter's default bar
    # Multi-task: the task the round is for. A multi-head juror refits only that task's head;
    # other kinds serve one task and ignore it.
    task: str | None = None


def refine_transformer(inputs: RefineInputs) -> Path:
    """Fine-tune from the serving checkpoint, then export, quantize and verify the candidate."""
    from jurystream.models.training.training import TrainConfig, train_transformer

    s, manifest, name = inputs.settings, inputs.manifest, inputs.manifest.name
    checkpoint = kept_checkpoint(inputs.serving_dir, manifest.kind)
    if checkpoint is None:
        raise ValueError(
            f"{name} v{manifest.version} has no training checkpoint to continue from; publish "
            "a version exported with it (`jurystream models export` keeps it)"
        )
    trained = train_transformer(
        checkpoint,
        inputs.data.texts,
        inputs.data.labels,
        manifest.labels,
        inputs.work / f"{name}-checkpoint",
        TrainConfig(
            epochs=s.epochs,
            batch_size=s.batch_size,
            learning_rate=s.learning_rate,
            max_length=manifest.max_length,
            seed=inputs.round_id,
            threads=s.threads,
        ),
        weights=inputs.data.weights,
        progress=False,
        description=f"round {inputs.round_id}: {name}",
    )
    bar = {} if inputs.min_int8_agreement is None else {"min_agreement": inputs.min_int8_agreement}
    export = TRANSFORMER.implementation("export")
    path: Path = export(
        trained.checkpoint,
        inputs.target,
        name=name,
        version="0",
        check_texts=list(inputs.check_texts),
        labels=manifest.labels,
        max_length=manifest.max_length,
        cost=manifest.cost,
        threads=s.threads,
        **bar,
    )
    return path


def refine_sklearn(inputs: RefineInputs) -> Path:
    """Refit TF-IDF + LR with the hyper-parameters the serving version's manifest records."""
    from jurystream.models.training.sklearn_juror import DEFAULT_C

    hyper = inputs.manifest.extra.get("training") or {}
    build = SKLEARN.implementation("export")
    path: Path = build(
        inputs.data.texts,
        inputs.data.labels,
        inputs.manifest.labels,
        inputs.target,
        name=inputs.manifest.name,
        version="0",
        seed=int(hyper.get("seed", 0)),
        bootstrap=bool(hyper.get("bootstrap", False)),
        ngram_max=int(hyper.get("ngram_max", 2)),
        c=float(hyper.get("c", DEFAULT_C)),
        # Jurors from before class weighting was recorded were trained without it.
        class_weight=hyper.get("class_weight"),
        weights=inputs.data.weights,
    )
    return path
