"""The threshold controller applied to the serving jury: the rules are in ``thresholds.py``,
this class gathers what they need (serving jurors, held-out gold, audits, the reviewer's
measured accuracy) and remembers the last decision.

The trainer runs it at start, after every round that promoted a version, and whenever enough
new audits arrived; each decision is announced on ``model-updates`` with the juror versions it
was calibrated for (``stream.records.ThresholdUpdate``).

Multi-task (``Settings.tasks``): one controller per task, over that task's store (its audits,
its reviewer agreement), jurors (a multi-head juror's head for the task, every juror aligned
to the task's label names) and held-out gold, with the task's policy, weights and
``target_accuracy``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jurystream.config import PolicyName, Settings
from jurystream.models.rules.audit import AuditEstimate, estimates_by_label
from jurystream.models.rules.continual import reliability
from jurystream.models.rules.labelsets import align_juror
from jurystream.models.rules.thresholds import (
    GRID,
    ThresholdDecision,
    audit_gap,
    choose_threshold,
    target_accuracy,
)
from jurystream.models.serving.juror import Juror, load_juror
from jurystream.models.serving.registry import Registry
from jurystream.models.serving.tasks import for_task
from jurystream.models.training.evaluation import (
    juror_probabilities,
    operating_curve,
    replay_jurors,
)
from jurystream.models.training.store import TrainingStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlResult:
    decision: ThresholdDecision
    versions: dict[str, str]
    audit: AuditEstimate | None
    reviewer_accuracy: float
    # Since when this jury has served at this threshold: only audits stored since then measure
    # it (audits of earlier versions say nothing about the refined jurors).
    since: float


class ThresholdController:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        store: TrainingStore,
        gold: Sequence[tuple[str, str]],
        jurors: Sequence[str],
        task: str | None = None,
    ) -> None:
        self.task = task
        self.settings = settings
        self.registry = registry
        self.store = store
        self.gold = list(gold)
        self.jurors = list(jurors)
        self.current: ControlResult | None = None
        self._probs: dict[tuple[tuple[str, str], ...], np.ndarray] = {}
        control = settings.controller
        self.policy: PolicyName = settings.jury.policy
        self.weights = settings.jury.weights
        self.target: float | None = control.target_accuracy
        self.labels: tuple[str, ...] | None = None  # None: the first juror's
        if task is not None:
            spec = settings.tasks[task]
            self.policy, self.weights, self.labels = spec.policy, spec.weights, tuple(spec.labels)
            if spec.target_accuracy is not None:
                self.target = spec.target_accuracy

    def _load(self, name: str) -> Juror:
        juror = load_juror(self.registry.serving_dir(name))
        if self.task is None or self.labels is None:
            return juror
        what = f"task {self.task}: juror {name} vs the task's labels"
        return align_juror(for_task(juror, self.task), self.labels, what)

    def reviewer_accuracy(self) -> float:
        """Measured accuracy of the reviewer that labeled the most judged cases; the prior
        until gold feedback has judged any."""
        trainer = self.settings.trainer
        agreement = self.store.reviewer_agreement()
        if not agreement:
            return trainer.reliability_prior
        agree, total = max(agreement.values(), key=lambda at: at[1])
        return reliability(
            agree, total, trainer.reliability_prior, trainer.reliability_prior_strength
        )

    def audit(
        self, threshold: float, n_labels: int, reviewer: float, since: float
    ) -> AuditEstimate | None:
        outcomes = self.store.audit_outcomes(threshold, since)
        if not outcomes:
            return None
        return estimates_by_label(outcomes, reviewer, n_labels)["all"]

    def decide(self) -> ControlResult | None:
        """A decision for the jury serving now; None without held-out gold to judge on."""
        jurors = [self._load(n) for n in self.jurors]
        if not jurors:
            return None
        labels = self.labels or tuple(jurors[0].labels)
        index = {name: i for i, name in enumerate(labels)}
        pairs = [(t, index[y]) for t, y in self.gold + self.store.holdout() if y in index]
        if not pairs:
            where = "trainer" if self.task is None else f"tasks.{self.task}"
            log.warning("threshold controller: no held-out gold (%s.gold_data); skipped", where)
            return None
        texts = [t for t, _ in pairs]
        versions = {j.name: j.version for j in jurors}
        curve = operating_curve(
            replay_jurors(self._probabilities(jurors, texts, versions), texts, jurors),
            self.policy,
            texts,
            [y for _, y in pairs],
            GRID,
            self.weights,
        )
        control = self.settings.controller
        reviewer = self.reviewer_accuracy()
        target = target_accuracy(self.target, reviewer, control.margin)
        audit = None
        current = self.current
        same_jury = current is not None and current.versions == versions
        if current is not None and same_jury:
            threshold = current.decision.threshold
            audit = self.audit(threshold, len(labels), reviewer, current.since)
            gap = audit_gap(curve, threshold, audit, control.audit_shrink)
            target = min(1.0, max(0.0, target + gap))
        decision = choose_threshold(curve, target, self.settings.jury.review_budget)
        unchanged = (
            same_jury and current is not None and current.decision.threshold == decision.threshold
        )
        since = current.since if unchanged and current is not None else time.time()
        self.current = ControlResult(decision, versions, audit, reviewer, since)
        log.warning(
            "threshold controller%s: %.2f for %s (%s; expected accuracy %.3f, escalation %.3f)",
            "" if self.task is None else f" of task {self.task}",
            decision.threshold,
            versions,
            decision.reason,
            decision.expected_accuracy,
            decision.expected_escalation,
        )
        return self.current

    def audits_since_decision(self) -> int:
        """Audits of the serving jury at the serving threshold (what an audit-driven
        re-decision weighs)."""
        if self.current is None:
            return 0
        return len(self.store.audit_outcomes(self.current.decision.threshold, self.current.since))

    def _probabilities(
        self, jurors: Sequence[Juror], texts: Sequence[str], versions: dict[str, str]
    ) -> np.ndarray:
        key = tuple(sorted(versions.items()))
        if key not in self._probs:
            self._probs = {key: juror_probabilities(jurors, texts)}  # only the latest jury
        return self._probs[key]
