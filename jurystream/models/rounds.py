"""One training round: refine every juror from its serving version, gate it, publish it.

For each juror the round builds a candidate from the serving version and the store's data:

- a transformer juror continues training from the checkpoint kept with its serving version
  (``Registry.checkpoint_dir``) on the new examples plus a replay sample of earlier ones, then
  goes through the jurors' export path (optimum → int8 → verification);
- a TF-IDF juror has no state worth continuing from, so it is refit on everything (seed set,
  every hard sample, gold with text), with the hyper-parameters its manifest records.

Both use the per-example weights of ``jurystream.models.continual``. The candidate and the
serving version are then scored on the same held-out gold set; the gate decides. An accepted
candidate is published and promoted through the registry (which verifies it again); a rejected
one is recorded in the store with its metrics and the gate's reason, and nothing is published.
A juror whose round fails (bad checkpoint, export verification) is recorded as failed and the
other jurors carry on: one broken juror must not stop the others from improving.
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
from jurystream.models.continual import (
    Example,
    TrainingSet,
    gate,
    reliabilities,
    replay_sample,
    training_set,
)
from jurystream.models.evaluation import juror_probabilities
from jurystream.models.juror import Juror, Manifest, load_juror
from jurystream.models.registry import Registry
from jurystream.models.scores import classification_report
from jurystream.models.store import CandidateRecord, TrainingStore

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
    """

    def __init__(
        self,
        store: TrainingStore,
        registry: Registry,
        settings: TrainerSettings,
        gold: Sequence[tuple[str, str]] = (),
        work_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.gold = list(gold)
        self.work_dir = work_dir
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
            "round %d (%s): %d new examples, %d replayed, %d held-out gold, reliability %s",
            round_id,
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
        manifest = self.registry.manifest(name)
        serving = load_juror(self.registry.serving_dir(name), threads=s.threads)
        if manifest.kind == "onnx-sklearn":
            # No state to continue from: refit on the whole history (seed + every sample).
            examples = self.store.earlier_examples() + new
        else:
            examples = new + replay
        data = training_set(
            examples, manifest.labels, self.store.gold_labels(), trust, s.reliability_prior
        )
        if not data.texts:
            unknown = sorted(data.summary["unknown_labels"])
            raise ValueError(
                f"no usable training examples: their labels {unknown} are not in {name}'s "
                f"label set {list(manifest.labels)} (labels are matched by name)"
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
        check = [t for t, _ in holdout[:CHECK_TEXTS]]
        directory = self._candidate(name, manifest, data, round_id, check, work)
        metrics = evaluate_on(load_juror(directory, threads=s.threads), holdout)
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

    def _candidate(
        self,
        name: str,
        manifest: Manifest,
        data: TrainingSet,
        round_id: int,
        check: list[str],
        work: Path,
    ) -> Path:
        """Train and export the candidate juror directory (not yet published)."""
        s = self.settings
        target = work / name
        if manifest.kind == "onnx-sklearn":
            from jurystream.models.sklearn_juror import DEFAULT_C, build_sklearn_juror

            hyper = manifest.extra.get("training") or {}
            return build_sklearn_juror(
                data.texts,
                data.labels,
                manifest.labels,
                target,
                name=name,
                version="0",
                seed=int(hyper.get("seed", 0)),
                bootstrap=bool(hyper.get("bootstrap", False)),
                ngram_max=int(hyper.get("ngram_max", 2)),
                c=float(hyper.get("c", DEFAULT_C)),
                # Jurors from before class weighting was recorded were trained without it.
                class_weight=hyper.get("class_weight"),
                weights=data.weights,
            )
        from jurystream.exporters.onnx import export_transformer
        from jurystream.models.training import TrainConfig, train_transformer

        trained = train_transformer(
            self.registry.checkpoint_dir(name, manifest.version),
            data.texts,
            data.labels,
            manifest.labels,
            work / f"{name}-checkpoint",
            TrainConfig(
                epochs=s.epochs,
                batch_size=s.batch_size,
                learning_rate=s.learning_rate,
                max_length=manifest.max_length,
                seed=round_id,
                threads=s.threads,
            ),
            weights=data.weights,
            progress=False,
            description=f"round {round_id}: {name}",
        )
        return export_transformer(
            trained.checkpoint,
            target,
            name=name,
            version="0",
            check_texts=check or list(data.texts[:CHECK_TEXTS]),
            labels=manifest.labels,
            max_length=manifest.max_length,
            cost=manifest.cost,
            threads=s.threads,
        )
