"""Several tasks on one post: one jury per task, every juror scored once per batch.

A multi-task deployment (``Settings.tasks``) gives each task its own jury (label set, policy,
threshold). Jurors shared between tasks are scored once per batch: a multi-head juror
(``onnx-multihead``, one encoder pass with one head per task) serves every task it has a head
for from a single call, and a plain juror named in two tasks is run once. The policies then
decide each task on the scores already computed (``Jury.decide_probabilities``); a task on the
cascade policy asks its jurors one by one and so is scored on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np

from jurystream.models.rules.labelsets import AlignedJuror
from jurystream.models.rules.voting import Decision
from jurystream.models.serving.juror import ChunkMap, Juror
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.parallel import InferencePool


@runtime_checkable
class MultiHead(Protocol):
    """A juror with one head per task, all computed from one encoder pass."""

    name: str
    version: str
    heads: Mapping[str, tuple[str, ...]]

    def predict_heads(
        self, texts: Sequence[str], map_chunks: ChunkMap = map
    ) -> dict[str, np.ndarray]: ...

    def head(self, task: str) -> Juror: ...


@runtime_checkable
class Head(Protocol):
    """One task's head of a multi-head juror, seen as an ordinary juror."""

    parent: MultiHead
    task: str


# What is scored once per batch (a juror, or a multi-head juror), and which column order and
# head each task's juror reads from its result.
Unit = Juror | MultiHead


def _source(juror: Juror) -> tuple[Unit, str | None, list[int] | None]:
    order = None
    if isinstance(juror, AlignedJuror):
        order, juror = juror.order, juror.juror
    if isinstance(juror, Head):
        return juror.parent, juror.task, order
    return juror, None, order


def for_task(juror: Juror | MultiHead, task: str) -> Juror:
    """What serves ``task`` of a loaded juror: its head for a multi-head juror, else itself."""
    if isinstance(juror, MultiHead):
        if task not in juror.heads:
            raise ValueError(
                f"juror {juror.name} v{juror.version} has no head for task {task!r} "
                f"(its heads: {', '.join(juror.heads)}); retrain it with that task"
            )
        return juror.head(task)
    return juror


@dataclass(frozen=True)
class TaskJuries:
    """One jury per task, in the order of the settings (the first is the records' primary)."""

    juries: Mapping[str, Jury]
    pool: InferencePool | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.juries:
            raise ValueError("a multi-task jury needs at least one task")

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.juries)

    @property
    def versions(self) -> dict[str, str]:
        """Every juror served, by name (a shared juror serves one version to every task)."""
        return {name: v for jury in self.juries.values() for name, v in jury.versions.items()}

    def with_juror(self, juror: Juror | MultiHead) -> TaskJuries:
        """Replace ``juror`` (by name) in every task that serves it. A multi-head juror must
        still have a head for each of those tasks with the same label names, or it is refused
        (ValueError, LabelSetError) and nothing changes."""
        juries = {
            task: jury.with_juror(for_task(juror, task)) if juror.name in jury.versions else jury
            for task, jury in self.juries.items()
        }
        return replace(self, juries=juries)

    def with_threshold(self, task: str, threshold: float) -> TaskJuries:
        juries = dict(self.juries)
        juries[task] = juries[task].with_threshold(threshold)
        return replace(self, juries=juries)

    def decide(self, texts: Sequence[str]) -> list[dict[str, Decision]]:
        """Per text, each task's decision, in task order."""
        if not texts:
            return []
        pooled = {t: j for t, j in self.juries.items() if j.policy != "cascade"}
        units: dict[int, Unit] = {}
        for jury in pooled.values():
            for juror in jury.jurors:
                unit, _, _ = _source(juror)
                units.setdefault(id(unit), unit)
        scores = dict(zip(units, self._score(list(units.values()), texts), strict=True))
        by_task: dict[str, list[Decision]] = {}
        for task, jury in self.juries.items():
            if task not in pooled:
                by_task[task] = jury.decide(texts)
                continue
            columns = []
            for juror in jury.jurors:
                unit, head, order = _source(juror)
                result = scores[id(unit)]
                probs = result[head] if isinstance(result, dict) and head else result
                columns.append(np.asarray(probs) if order is None else np.asarray(probs)[:, order])
            by_task[task] = jury.decide_probabilities(np.stack(columns, axis=1))
        return [{task: by_task[task][i] for task in self.juries} for i in range(len(texts))]

    def _score(
        self, units: Sequence[Unit], texts: Sequence[str]
    ) -> list[np.ndarray | dict[str, np.ndarray]]:
        def one(unit: Unit) -> np.ndarray | dict[str, np.ndarray]:
            if isinstance(unit, MultiHead):
                return (
                    self.pool.score_heads(unit, texts) if self.pool else unit.predict_heads(texts)
                )
            return self.pool.score(unit, texts) if self.pool else unit.predict_proba(texts)

        if self.pool is None:
            return [one(unit) for unit in units]
        return self.pool.side_by_side(one, units)
