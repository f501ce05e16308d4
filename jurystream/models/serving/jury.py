"""The jury: a fixed set of jurors and a voting policy, applied to a batch of texts.

A Jury is immutable. Hot-swapping a juror builds a new Jury (``with_juror``) that the worker
switches to between batches, so no batch is ever scored by a mix of old and new models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from jurystream.models.rules.labelsets import align_juror
from jurystream.models.rules.voting import POLICIES, Decision, Vote, confident, votes_of, weighted
from jurystream.models.serving.juror import Juror

if TYPE_CHECKING:
    from jurystream.models.serving.parallel import InferencePool


@dataclass(frozen=True)
class Jury:
    jurors: tuple[Juror, ...]
    policy: str = "unanimous"
    threshold: float = 0.7
    weights: Mapping[str, float] = field(default_factory=dict)
    # Threads that score on every core (the worker's); None: one juror after another here.
    pool: InferencePool | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.jurors:
            raise ValueError("a jury needs at least one juror")
        first = self.jurors[0]
        # Jurors may list one label set in different orders; they vote in the first's order.
        aligned = tuple(
            align_juror(j, first.labels, f"juror {j.name} vs juror {first.name}")
            for j in self.jurors
        )
        object.__setattr__(self, "jurors", aligned)
        if self.policy != "cascade" and self.policy not in POLICIES:
            known = ", ".join([*POLICIES, "cascade"])
            raise ValueError(f"unknown voting policy {self.policy!r}; choose one of {known}")

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.jurors[0].labels)

    @property
    def versions(self) -> dict[str, str]:
        return {j.name: j.version for j in self.jurors}

    def with_juror(self, juror: Juror) -> Jury:
        """A new jury with ``juror`` replacing the one of the same name (or added).

        The new juror answers in this jury's label order, whatever its own order.
        """
        juror = align_juror(juror, self.labels, f"juror {juror.name} vs the jury")
        if any(j.name == juror.name for j in self.jurors):
            jurors = [juror if j.name == juror.name else j for j in self.jurors]
        else:
            jurors = [*self.jurors, juror]
        return replace(self, jurors=tuple(jurors))

    def with_threshold(self, threshold: float) -> Jury:
        return replace(self, threshold=threshold)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """All jurors on all texts: shape (texts, jurors, labels)."""
        if self.pool is not None:
            return self.pool.probabilities(self.jurors, texts)
        return np.stack([j.predict_proba(texts) for j in self.jurors], axis=1)

    def decide(self, texts: Sequence[str]) -> list[Decision]:
        if not texts:
            return []
        if self.policy == "cascade":
            return self._cascade(texts)
        return self.decide_probabilities(self.probabilities(texts))

    def decide_probabilities(self, probs: np.ndarray) -> list[Decision]:
        """The policy's decisions on scores already computed, shape (texts, jurors, labels) in
        this jury's juror and label order (a multi-task jury scores shared encoders once)."""
        if self.policy == "cascade":
            raise ValueError("the cascade policy asks its jurors one by one: use decide()")
        names = [j.name for j in self.jurors]
        if self.policy == "weighted":
            return [weighted(p, names, self.labels, self.threshold, self.weights) for p in probs]
        policy = POLICIES[self.policy]
        return [policy(p, names, self.labels, self.threshold) for p in probs]

    def _cascade(self, texts: Sequence[str]) -> list[Decision]:
        """Cheapest juror first; a text leaves the chain at the first confident juror."""
        order = sorted(self.jurors, key=lambda j: j.cost)
        pending = list(range(len(texts)))
        seen: dict[int, list[tuple[str, np.ndarray]]] = {i: [] for i in pending}
        decisions: dict[int, Decision] = {}
        for juror in order:
            if not pending:
                break
            chosen = [texts[i] for i in pending]
            probs = (
                juror.predict_proba(chosen) if self.pool is None else self.pool.score(juror, chosen)
            )
            still = []
            for i, row in zip(pending, probs, strict=True):
                seen[i].append((juror.name, row))
                if confident(row, self.threshold):
                    (vote,) = votes_of(row[None, :], [juror.name], self.labels)
                    decisions[i] = Decision(
                        vote.label, vote.confidence, self._votes(seen[i]), False
                    )
                else:
                    still.append(i)
            pending = still
        for i in pending:
            rows = np.stack([r for _, r in seen[i]])
            mean = rows.mean(axis=0)
            best = int(mean.argmax())
            reason = f"cascade: no juror reached {self.threshold:.2f}"
            decisions[i] = Decision(
                self.labels[best], float(mean[best]), self._votes(seen[i]), True, reason
            )
        return [decisions[i] for i in range(len(texts))]

    def _votes(self, seen: list[tuple[str, np.ndarray]]) -> tuple[Vote, ...]:
        names = [n for n, _ in seen]
        return votes_of(np.stack([r for _, r in seen]), names, self.labels)
