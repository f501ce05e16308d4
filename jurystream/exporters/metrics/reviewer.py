"""The reviewer's metrics: cases, verdicts, audits, and what each backend call cost.

``ReviewerMetrics`` implements the tiers' ``ReviewHooks``: the chain reports calls, tokens,
dollars and the budget through it without importing anything from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry

from jurystream.exporters.metrics import families as f
from jurystream.exporters.metrics.base import RoleMetrics
from jurystream.exporters.metrics.families import DEFAULT_TASK
from jurystream.models.reviewer.hooks import CALL_OUTCOMES, CallOutcome


class ReviewerMetrics(RoleMetrics):
    role = "reviewer"
    outcomes = ("reviewed", "audit_reviewed", "parked", "dead_lettered")

    def __init__(
        self, registry: CollectorRegistry | None = None, tasks: Iterable[str] = (DEFAULT_TASK,)
    ) -> None:
        super().__init__(registry, tasks)
        r = self.registry
        self._latency = f.STAGE_LATENCY.create(r)
        self._cases = f.REVIEW_CASES.create(r)
        self._audits = f.AUDITS.create(r)
        self._hard = f.HARD_SAMPLES.create(r)
        self._labels = f.LABELS_OUT.create(r)
        self._calls = f.REVIEWER_CALLS.create(r)
        self._tokens = f.REVIEWER_TOKENS.create(r)
        self._cost = f.REVIEWER_COST.create(r)
        self._remaining = f.BUDGET_REMAINING.create(r)
        self._exhausted = f.BUDGET_EXHAUSTED.create(r)
        for state in ("in_flight", "parked"):  # 0, not "no data", before the first case
            self._cases.labels(state).set(0)
        for task in self.tasks:
            for result in ("agree", "disagree"):
                self._audits.labels(task, result)

    # --- cases ---

    def cases_in_flight(self, count: int) -> None:
        """The process holds ``count`` cases now (answered or not)."""
        self._cases.labels("in_flight").set(count)

    def case_answered(self, seconds: float) -> None:
        """The chain answered a case in ``seconds`` (its last attempt, parking not included)."""
        self._latency.labels("review").observe(seconds)

    def case_parked(self) -> None:
        """A case the chain could not answer yet waits to be retried (until ``park_ended``)."""
        self._count("parked")
        self._cases.labels("parked").inc()

    def park_ended(self) -> None:
        """A parked case is retried now, or was dropped (rebalance, shutdown)."""
        self._cases.labels("parked").dec()

    def hard_sample_written(self, source: str, task: str = DEFAULT_TASK) -> None:
        """A verdict by ``source`` on ``task`` went to hard-samples for training."""
        self._hard.labels(task, source).inc()

    def audit_reviewed(self, agreed: bool, task: str = DEFAULT_TASK) -> None:
        """An audit case was answered; ``agreed``: the reviewer gave the jury's label."""
        self._audits.labels(task, "agree" if agreed else "disagree").inc()
        self._count("audit_reviewed")

    def reviewed(self, source: str, label: str, task: str = DEFAULT_TASK) -> None:
        """An escalated case was answered: ``source``'s ``label`` for ``task`` was written to
        labels."""
        self._count("reviewed")
        self._labels.labels(task, source, label).inc()

    def reviewed_tasks(self, labels: Mapping[str, tuple[str, str]]) -> None:
        """An escalated multi-task case was answered: the post's label record holds ``{task:
        (source, label)}``, the tasks the jury settled counted with source ``jury`` (the worker
        writes no record for an escalated post, so nobody else counts them)."""
        self._count("reviewed")
        for task, (source, label) in labels.items():
            self._labels.labels(task, source, label).inc()

    def dead_lettered(self) -> None:
        """A case went to dead-letters (malformed, or it can never be answered)."""
        self._count("dead_lettered")

    # --- the tiers' ReviewHooks ---

    def called(self, backend: str, outcome: CallOutcome) -> None:
        if outcome not in CALL_OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {CALL_OUTCOMES}")
        self._calls.labels(backend, outcome).inc()

    def billed(self, backend: str, input_tokens: int, output_tokens: int, usd: float) -> None:
        """Counted per call rather than per case: that lets the dashboard price the
        counterfactual "every message to the reviewer" from the measured mean."""
        if input_tokens < 0 or output_tokens < 0 or usd < 0:
            raise ValueError("tokens and cost must be non-negative")
        self._tokens.labels(backend, "input").inc(input_tokens)
        self._tokens.labels(backend, "output").inc(output_tokens)
        self._cost.labels(backend).inc(usd)

    def budget(self, remaining_usd: Mapping[str, float], exhausted: bool) -> None:
        for window, remaining in remaining_usd.items():
            self._remaining.labels(window).set(max(0.0, remaining))
        self._exhausted.set(1 if exhausted else 0)
