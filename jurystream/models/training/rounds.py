"""One training round: refine every juror from its serving version, gate it, publish it.

For each juror the round builds a candidate from the serving version and the store's data,
through its kind's ``refine`` step (``jurystream.models.serving.kinds``):

- a kind that continues training (the transformer jurors, from the checkpoint kept with the
  serving version) gets the new examples plus a replay sample of earlier ones;
- a kind with no state worth continuing from (TF-IDF) is refit on everything: seed set, every
  hard sample, gold with text.

Both use the per-example weights of ``jurystream.models.rules.continual``. The candidate and the
serving version are then scored on the same held-out gold set; the gate decides. An accepted
candidate is published and promoted through the registry (which verifies it again); a rejected
one is recorded in the store with its metrics and the gate's reason, and nothing is published.
A juror whose round fails (bad checkpoint, export verification) is recorded as failed and the
other jurors carry on: one broken juror must not stop the others from improving.

Multi-task (``Settings.tasks``): a runner serves one task, with that task's store, jurors and
held-out gold. Its round passes the task to the refine step (``RefineInputs.task``: a
multi-head juror refits that task's head only), and serving version and candidate are scored
on that task alone (``for_task``: a multi-head juror's head, any other juror itself).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jurystream.config import TrainerSettings
from jurystream.models.rules.continual import (
    Example,
    gate,
    reliabilities,
    replay_sample,
    training_set,
)
from jurystream.models.rules.scores import classification_report
from jurystream.models.serving.juror import Juror, load_juror
from jurystream.models.serving.kinds import juror_kind
from jurystream.models.serving.registry import Registry
from jurystream.models.serving.tasks import for_task
from jurystream.models.training.evaluation import juror_probabilities
from jurystream.models.training.refine import RefineInputs
from jurystream.models.training.store import CandidateRecord, TrainingStore

log = logging.getLogger(__name__)

CHECK_TEXTS = 256  # texts the transformer export is verified on (int8 vs fp32 vs torch)


@dataclass(frozen=True)
class RoundResult:
    round: int
    trigger: str
    new_examples: int
    candidates: tuple[CandidateRecord, ...]

    @property
    def promoted(self) -> list[CandidateRecord]:
        return [c for c in self.candidates if c.outcome == "promoted"]


def evaluate_on(juror: Juror, holdout: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The juror's metrics on held-out (text, label name) pairs (labels it does not know drop)."""
    index = {name: i for i, name in enumerate(juror.labels)}
    pairs = [(t, index[y]) for t, y in holdout if y in index]
    if not pairs:
        return {"examples": 0}
    probs = juror_probabilities([juror], [t for t, _ in pairs])[:, 0]
    return classification_report(probs, [y for _, y in pairs], juror.labels)


class RoundRunner:
    """Runs rounds for a set of jurors against one store and one registry.

    ``gold`` is the configured held-out gold set as (text, label) pairs; the store's held-out
    feedback is added to it at every round, so the gate set grows with feedback.
    ``min_int8_agreement`` overrides the exporter's int8 bar for transformer candidates (the
    benches measure int8 jurors at a lower bar; None: the exporter's default). ``task`` makes
    it one task's runner in a multi-task deployment (None: the deployment's one task).
    """

    def __init__(
        self,
        store: TrainingStore,
        registry: Registry,
        settings: TrainerSettings,
        gold: Sequence[tuple[str, str]] = (),
        work_dir: Path | None = None,
        min_int8_agreement: float | None = None,
        task: str | None = None,
    ) -> None:
        self.task = task
        self.store = store
        self.registry = registry
        self.settings = settings
        self.gold = list(gold)
        self.work_dir = work_dir
        self.min_int8_agreement = min_int8_agreement
        if work_dir is not None:
            work_dir.mkdir(parents=True, exist_ok=True)

    def jurors(self) -> list[str]:
        return list(self.settings.jurors) or self.registry.jurors()

    def run(self, trigger: str) -> RoundResult | None:
        """One round over every juror; None if there was nothing new to train on."""
        new = self.store.new_examples()
        if not new:
            return None
        round_id = self.store.begin_round(trigger, len(new))
        s = self.settings
        earlier = self.store.earlier_examples()
        if s.replay_ratio is None:
            replay = earlier
        else:
            replay = replay_sample(earlier, len(new), s.replay_ratio, round_id)
        trust = reliabilities(
            self.store.reviewer_agreement(), s.reliability_prior, s.reliability_prior_strength
        )
        holdout = self.gold + self.store.holdout()
        log.warning(
            "round %d%s (%s): %d new examples, %d replayed, %d held-out gold, reliability %s",
            round_id,
            "" if self.task is None else f" of task {self.task}",
            trigger,
            len(new),
            len(replay),
            len(holdout),
            {k: round(v, 3) for k, v in trust.items()},
        )
        records = []
        with tempfile.TemporaryDirectory(prefix=f"round-{round_id}-", dir=self.work_dir) as tmp:
            for name in self.jurors():
                started = time.perf_counter()
                try:
                    record = self._refine(name, round_id, new, replay, trust, holdout, Path(tmp))
                except Exception as exc:
                    log.exception("round %d: juror %s failed", round_id, name)
                    record = CandidateRecord(
                        round_id,
                        name,
                        None,
                        "failed",
                        None,
                        f"{type(exc).__name__}: {exc}",
                        {},
                        {},
                        {},
                        0.0,
                    )
                record = replace(record, seconds=round(time.perf_counter() - started, 2))
                self.store.record_candidate(record)
                records.append(record)
        self.store.mark_trained(new, round_id)
        outcomes = sorted({r.outcome for r in records})
        self.store.finish_round(round_id, ",".join(outcomes) or "no jurors")
        return RoundResult(round_id, trigger, len(new), tuple(records))

    def _refine(
        self,
        name: str,
        round_id: int,
        new: list[Example],
        replay: list[Example],
        trust: dict[str, float],
        holdout: list[tuple[str, str]],
        work: Path,
    ) -> CandidateRecord:
        s = self.settings
        # The serving version as the registry says now: a juror shared with another task (a
        # multi-head juror) continues from what that task's last round promoted.
        manifest = self.registry.manifest(name)
        kind = juror_kind(manifest.kind)
        serving_dir = self.registry.local_dir(name, manifest.version)
        serving = self._for_task(load_juror(serving_dir, threads=s.threads))
        if not kind.continues_training:
            # No state to continue from: refit on the whole history (seed + every sample).
            examples = self.store.earlier_examples() + new
        else:
            examples = new + replay
        labels = tuple(serving.labels)  # a multi-head juror: the task's head's labels
        data = training_set(examples, labels, self.store.gold_labels(), trust, s.reliability_prior)
        if not data.texts:
            unknown = sorted(data.summary["unknown_labels"])
            raise ValueError(
                f"no usable training examples: their labels {unknown} are not in {name}'s "
                f"label set {list(labels)} (labels are matched by name)"
            )
        serving_metrics = evaluate_on(serving, holdout)

        def outcome(
            result: str, reason: str, metrics: dict[str, Any], version: str | None = None
        ) -> CandidateRecord:
            return CandidateRecord(
                round_id,
                name,
                manifest.version,
                result,
                version,
                reason,
                metrics,
                serving_metrics,
                data.summary,
                0.0,
            )

        if not serving_metrics["examples"]:
            reason = "no held-out gold set to judge a candidate on (trainer.gold_data or feedback)"
            return outcome("rejected", reason, {})
        check = [t for t, _ in holdout[:CHECK_TEXTS]] or list(data.texts[:CHECK_TEXTS])
        refine = kind.implementation("refine")
        directory = refine(
            RefineInputs(
                manifest,
                serving_dir,
                data,
                work / name,
                work,
                round_id,
                s,
                check,
                self.min_int8_agreement,
                self.task,
            )
        )
        # Gated on this round's task only. That is enough because nothing else changed: a
        # multi-head candidate keeps the serving version's frozen encoder and every other head
        # (its refine step refits the round's task's head alone), and any other juror votes
        # on one label set, the task's.
        metrics = evaluate_on(self._for_task(load_juror(directory, threads=s.threads)), holdout)
        decision = gate(metrics, serving_metrics, s.gate_tolerance, s.gate_metric)
        log.warning(
            "round %d: %s %s: %s",
            round_id,
            name,
            "accepted" if decision.accepted else "rejected",
            decision.reason,
        )
        if not decision.accepted:
            shutil.rmtree(directory, ignore_errors=True)
            return outcome("rejected", decision.reason, metrics)
        version = self.registry.publish(
            directory,
            name=name,
            parent=manifest.version,
            extra={
                "metrics": metrics,
                "round": {"id": round_id, "gate": decision.to_dict(), "data": data.summary},
            },
        )
        return outcome("promoted", decision.reason, metrics, version)

    def _for_task(self, juror: Juror) -> Juror:
        """What votes on this runner's task: a multi-head juror's head, any other juror."""
        return juror if self.task is None else for_task(juror, self.task)
