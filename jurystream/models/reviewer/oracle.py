"""Reviewers of known quality for simulations and benchmarks, always reported as such.

The oracle answers the gold label carried in the feed (``meta["gold"]`` of the post); its
labels say ``source: "oracle"`` so nobody mistakes a simulation for a real review. The simulated
reviewer wraps it with a configurable accuracy: with probability ``1 - accuracy`` it answers a
different label, chosen deterministically from the case id so a replay gets the same answer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from jurystream.models.reviewer.base import Case, Failure, Outcome, Verdict
from jurystream.models.reviewer.hooks import NO_HOOKS, ReviewHooks


class OracleBackend:
    name = "oracle"

    def __init__(self, labels: Sequence[str] = (), hooks: ReviewHooks = NO_HOOKS) -> None:
        self.labels = tuple(labels)
        self._hooks = hooks

    async def review(self, case: Case) -> Outcome:
        gold = case.meta.get("gold")
        if not isinstance(gold, str) or (self.labels and gold not in self.labels):
            # Asking again cannot help: the case goes to dead-letters, not to a default label.
            self._hooks.called(self.name, "error")
            return Failure(self.name, f"no usable gold label in meta.gold: {gold!r}", True)
        self._hooks.called(self.name, "ok")
        return Verdict(gold, 1.0, self.name)


class SimulatedBackend:
    """The oracle, wrong on a ``1 - accuracy`` share of cases (source ``simulated:0.90``)."""

    def __init__(
        self,
        labels: Sequence[str],
        accuracy: float,
        seed: int = 0,
        hooks: ReviewHooks = NO_HOOKS,
    ) -> None:
        if len(labels) < 2:
            raise ValueError("the simulated reviewer needs the label set (two labels or more)")
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy {accuracy} is outside [0, 1]")
        self.labels = tuple(labels)
        self.accuracy = accuracy
        self.seed = seed
        self.name = f"simulated:{accuracy:.2f}"
        self._oracle = OracleBackend(labels)
        self._hooks = hooks

    async def review(self, case: Case) -> Outcome:
        outcome = await self._oracle.review(case)
        if not isinstance(outcome, Verdict):
            self._hooks.called(self.name, "error")
            return Failure(self.name, outcome.reason, getattr(outcome, "permanent", False))
        self._hooks.called(self.name, "ok")
        rng = random.Random(f"{self.seed}:{case.id}")
        if rng.random() < self.accuracy:
            return Verdict(outcome.label, self.accuracy, self.name)
        wrong = [label for label in self.labels if label != outcome.label]
        return Verdict(rng.choice(wrong), self.accuracy, self.name)
