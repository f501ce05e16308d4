"""Juror kinds: for each kind of juror, how it is loaded, refined in a training round, exported.

A juror directory's manifest names its ``kind``; this table is the one place that says what
that kind means, in the spirit of optimum's ``TasksManager``: code that needs to load, refine
or export a juror asks ``juror_kind(manifest.kind)`` instead of comparing kind strings. Adding a
kind is one entry in ``KINDS`` plus the functions it names.

Entries name their implementations (``"module:attribute"``) and import them on first use, as
``TasksManager`` names its model classes: a serving process that loads a TF-IDF juror never
imports torch or optimum, and the model layer does not import the exporter package (the
exporter imports models, never the reverse).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# The HF checkpoint a juror of a kind that continues training keeps in its directory: the
# trainer refines exactly the serving version from it.
CHECKPOINT_DIR = "checkpoint"


class UnknownKind(ValueError):
    """A manifest kind no entry of ``KINDS`` describes."""


@dataclass(frozen=True)
class JurorKind:
    """One kind of juror and where its steps are implemented."""

    kind: str  # the manifest's ``kind``
    family: str  # default juror name (or name prefix) of the kind: "minilm-0", "tfidf"
    juror: str  # serving class: ``cls(directory, manifest, threads=…)`` with ``predict_proba``
    refine: str  # one training round: ``refine(RefineInputs) -> candidate directory``
    export: str  # writes a verified juror directory of this kind from a trained model
    # Subdirectory with the state training continues from; None: nothing worth continuing
    # from, so a round refits on the whole history (seed set and every sample).
    checkpoint: str | None = None

    @property
    def continues_training(self) -> bool:
        return self.checkpoint is not None

    def implementation(self, step: Literal["juror", "refine", "export"]) -> Any:
        """The class or function named for ``step``, imported on first use."""
        return _resolve(getattr(self, step))


TRANSFORMER = JurorKind(
    kind="onnx-transformer",
    family="minilm",
    juror="jurystream.models.serving.juror:OnnxTransformerJuror",
    refine="jurystream.models.training.refine:refine_transformer",
    export="jurystream.exporters.onnx:export_transformer",
    checkpoint=CHECKPOINT_DIR,
)
SKLEARN = JurorKind(
    kind="onnx-sklearn",
    family="tfidf",
    juror="jurystream.models.serving.juror:OnnxSklearnJuror",
    refine="jurystream.models.training.refine:refine_sklearn",
    export="jurystream.models.training.sklearn_juror:build_sklearn_juror",
)
# A frozen encoder with one linear head per task, all served by one ONNX model. It keeps its
# encoder and heads (not a checkpoint to continue from): a round refits its task's head on the
# whole history, like TF-IDF.
MULTIHEAD = JurorKind(
    kind="onnx-multihead",
    family="minilm-mh",
    juror="jurystream.models.serving.multihead:OnnxMultiHeadJuror",
    refine="jurystream.models.training.refine:refine_multihead",
    export="jurystream.exporters.multihead:export_multihead",
)
KINDS: dict[str, JurorKind] = {k.kind: k for k in (TRANSFORMER, SKLEARN, MULTIHEAD)}


def juror_kind(kind: str) -> JurorKind:
    """The registry entry of a manifest ``kind``; UnknownKind names the known ones."""
    try:
        return KINDS[kind]
    except KeyError:
        raise UnknownKind(
            f"unknown juror kind {kind!r}; known: {', '.join(KINDS)} "
            "(a juror from a newer jurystream? upgrade, or re-export it)"
        ) from None


def kept_checkpoint(directory: Path, kind: str) -> Path | None:
    """The checkpoint a juror directory of ``kind`` keeps for further training, or None (a kind
    that keeps none, or a juror exported without it)."""
    entry = juror_kind(kind)
    if entry.checkpoint is None:
        return None
    checkpoint = directory / entry.checkpoint
    return checkpoint if (checkpoint / "config.json").is_file() else None


@functools.cache
def _resolve(name: str) -> Any:
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)
