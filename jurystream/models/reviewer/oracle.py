"""Reviewers of known quality for simulations and benchmarks, always reported as such.

The oracle answers the gold label carried in the feed (``meta["gold"]`` of the post); its
labels say ``source: "oracle"`` so nobody mistakes a simulation for a real review. The simulated
reviewer wraps it with a configurable accuracy: with probability ``1 - accuracy`` it answers a
different label, chosen deterministically from the case id so a replay gets the same answer.

A multi-task case is answered per asked task from ``meta["gold"]`` as ``{task: label}``; a task
without a usable gold label fails the whole case permanently, naming the task.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from jurystream.models.reviewer.base import (
    Case,
    Failure,
    Outcome,
    TaskSpec,
    TaskVerdict,
    UnknownTaskError,
    Verdict,
    asked_specs,
)
from jurystream.models.reviewer.hooks import NO_HOOKS, ReviewHooks


class OracleBackend:
    name = "oracle"

    def __init__(
        self,
        labels: Sequence[str] = (),
        hooks: ReviewHooks = NO_HOOKS,
        tasks: Mapping[str, TaskSpec] | None = None,
    ) -> None:
        self.labels = tuple(labels)
        self.tasks = dict(tasks or {})
        self._hooks = hooks

    async def review(self, case: Case) -> Outcome:
        if case.tasks:
            return self._review_tasks(case)
        gold = case.meta.get("gold")
        if not isinstance(gold, str) or (self.labels and gold not in self.labels):
            # Asking again cannot help: the case goes to dead-letters, not to a default label.
            self._hooks.called(self.name, "error")
            return Failure(self.name, f"no usable gold label in meta.gold: {gold!r}", True)
        self._hooks.called(self.name, "ok")
        return Verdict(gold, 1.0, self.name)

    def _review_tasks(self, case: Case) -> Outcome:
        gold = case.meta.get("gold")
        answers: dict[str, TaskVerdict] = {}
        for question in case.tasks:
            label = gold.get(question.task) if isinstance(gold, Mapping) else None
            spec = self.tasks.get(question.task)
            if not isinstance(label, str) or (spec is not None and label not in spec.labels):
                self._hooks.called(self.name, "error")
                return Failure(
                    self.name,
                    f"no usable gold label for task {question.task!r} in meta.gold: {gold!r}",
                    True,
                )
            answers[question.task] = TaskVerdict(label, 1.0)
        self._hooks.called(self.name, "ok")
        return Verdict.of_tasks(case, answers, self.name)


class SimulatedBackend:
    """The oracle, wrong on a ``1 - accuracy`` share of cases (source ``simulated:0.90``)."""

    def __init__(
        self,
        labels: Sequence[str],
        accuracy: float,
        seed: int = 0,
        hooks: ReviewHooks = NO_HOOKS,
        tasks: Mapping[str, TaskSpec] | None = None,
    ) -> None:
        if len(labels) < 2 and not tasks:
            raise ValueError("the simulated reviewer needs the label set (two labels or more)")
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy {accuracy} is outside [0, 1]")
        self.labels = tuple(labels)
        self.accuracy = accuracy
        self.seed = seed
        self.name = f"simulated:{accuracy:.2f}"
        self.tasks = dict(tasks or {})
        self._oracle = OracleBackend(labels, tasks=self.tasks)
        self._hooks = hooks

    async def review(self, case: Case) -> Outcome:
        if case.tasks:
            try:  # the wrong answers come from each task's label set
                asked_specs(case, self.tasks)
            except UnknownTaskError as exc:
                self._hooks.called(self.name, "error")
                return Failure(self.name, str(exc), True)
        outcome = await self._oracle.review(case)
        if not isinstance(outcome, Verdict):
            self._hooks.called(self.name, "error")
            return Failure(self.name, outcome.reason, getattr(outcome, "permanent", False))
        self._hooks.called(self.name, "ok")
        if case.tasks:
            answers = {
                task: TaskVerdict(
                    self._answer(f"{case.id}:{task}", gold.label, self.tasks[task].labels),
                    self.accuracy,
                )
                for task, gold in outcome.tasks.items()
            }
            return Verdict.of_tasks(case, answers, self.name)
        return Verdict(self._answer(case.id, outcome.label, self.labels), self.accuracy, self.name)

    def _answer(self, key: str, gold: str, labels: Sequence[str]) -> str:
        """Gold with probability ``accuracy``, else another label, the same on every replay."""
        rng = random.Random(f"{self.seed}:{key}")
        if rng.random() < self.accuracy:
            return gold
        return rng.choice([label for label in labels if label != gold])
