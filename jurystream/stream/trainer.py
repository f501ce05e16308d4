"""The trainer role: hard-samples + feedback → training store → rounds → registry → model-updates.

Like the reviewer, a plain aiokafka consumer with manual commits: a batch's offsets are
committed only after its records are in the SQLite store, so a crash replays them (the store's
inserts are idempotent). A record that is not a hard sample or a feedback record goes to
dead-letters with the reason, acknowledged before the commit, like every other role's bad
input. Rounds run in a worker thread while the consumer keeps storing new samples; a sample that
arrives during a round is trained on in the next one.

Not starving serving on a small machine is a matter of process boundaries, not scheduling:
the trainer is its own process (a worker never imports torch), it lowers its own priority with
``os.nice(trainer.nice)`` so the kernel prefers the workers whenever both want a core, and it
caps its threads (torch ``set_num_threads`` and onnxruntime sessions at ``trainer.threads``,
1 by default). On a GPU box the same command runs unchanged; only the registry (a shared path
or an fsspec URL) and the topics connect it to the workers.

On start the trainer re-announces the serving version of each of its jurors: a round that
promoted a version but died before announcing it still reaches the workers (workers ignore an
announcement of what they already serve).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import ConsumerRecord

from jurystream.config import Settings, Topic
from jurystream.exporters.metrics import TrainerMetrics
from jurystream.models.rules.continual import round_due
from jurystream.models.serving.registry import Registry
from jurystream.models.training.controller import ThresholdController
from jurystream.models.training.datasets import load_dataset
from jurystream.models.training.rounds import RoundResult, RoundRunner
from jurystream.models.training.store import TrainingStore
from jurystream.stream.records import (
    DeadLetter,
    Feedback,
    HardSample,
    Invalid,
    ModelUpdate,
    ThresholdUpdate,
)
from jurystream.stream.role import Role, RoleSpec, run_role
from jurystream.stream.security import Kafka
from jurystream.stream.updates import model_update, send_updates

log = logging.getLogger(__name__)

STORE_FILE = "trainer.sqlite"
POLL_MS = 500
RETRY_AFTER_CRASH_S = 60.0  # a round that crashed as a whole is not retried in a hot loop


class TrainerRole(Role):
    """Stores each polled batch (the template commits it after), runs rounds beside it."""

    metrics: TrainerMetrics

    def __init__(
        self,
        settings: Settings,
        kafka: Kafka,
        store: TrainingStore,
        runner: RoundRunner,
        metrics: TrainerMetrics,
        controller: ThresholdController | None = None,
    ) -> None:
        spec = RoleSpec(
            "trainer",
            (Topic.HARD_SAMPLES, Topic.FEEDBACK),
            poll_ms=POLL_MS,
            max_records=2000,
            producer={"acks": "all", "enable_idempotence": False},
        )
        super().__init__(settings, kafka, metrics, spec)
        self.controller = controller
        self._announced: tuple[float, dict[str, str]] | None = None
        self._audits_at_decision = 0
        self.store = store
        self.runner = runner
        topics = settings.topics
        self.hard_topic = topics.name(Topic.HARD_SAMPLES)
        self.updates_topic = topics.name(Topic.MODEL_UPDATES)
        self.dead_topic = topics.name(Topic.DEAD_LETTERS)
        self.started = time.time()
        self._not_before = 0.0
        self._round: asyncio.Task[RoundResult | None] | None = None

    async def start(self) -> None:
        """Re-announce what serves (a round may have died before announcing it), then decide
        the threshold for it."""
        await self._announce(await asyncio.to_thread(self._serving_updates))
        await self._control("start")

    async def handle(self, messages: list[ConsumerRecord[Any, Any]]) -> None:
        """Store a polled batch and dead-letter what is unusable, acknowledged before the
        template commits it; enough new audits let the controller correct the threshold."""
        rejected = await asyncio.to_thread(self._store, messages)
        await self._dead_letter(rejected)
        if await asyncio.to_thread(self._audits_due):
            await self._control("audit")

    async def tick(self) -> None:
        """Announce a finished round; start the next one when due."""
        if self._round is not None and self._round.done():
            await self._finish(self._round)
            self._round = None
        if self._round is None:
            trigger = self._due()
            if trigger is not None:
                self._round = asyncio.create_task(asyncio.to_thread(self.runner.run, trigger))

    async def finish(self) -> None:
        if self._round is not None:
            log.warning("stopping: waiting for the round in hand to finish")
            await self._finish(self._round)
            self._round = None

    async def close(self) -> None:
        if self._round is not None and not self._round.done():
            self._round.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._round

    def _audits_due(self) -> bool:
        """Enough new audits at the serving threshold to let them correct it."""
        if self.controller is None or self.controller.current is None:
            return False
        judged = self.controller.audits_since_decision()
        return judged - self._audits_at_decision >= self.settings.controller.audit_min

    async def _control(self, why: str) -> None:
        """Decide the threshold for the serving jury and announce it if it changed."""
        if self.controller is None:
            return
        try:
            result = await asyncio.to_thread(self.controller.decide)
        except Exception:
            log.exception("threshold controller failed; the serving threshold stays")
            return
        if result is None:
            return
        self._audits_at_decision = await asyncio.to_thread(self.controller.audits_since_decision)
        decision = result.decision
        self.metrics.threshold_chosen(decision.threshold, decision.target_accuracy)
        if why != "start" and self._announced == (decision.threshold, result.versions):
            return
        audit = result.audit
        update = ThresholdUpdate(
            policy=self.settings.jury.policy,
            threshold=decision.threshold,
            versions=result.versions,
            seq=time.time(),
            reason=f"{why}: {decision.reason}",
            target_accuracy=round(decision.target_accuracy, 4),
            expected_accuracy=round(decision.expected_accuracy, 4),
            expected_escalation=round(decision.expected_escalation, 4),
            reviewer_accuracy=round(result.reviewer_accuracy, 4),
            audit=None if audit is None else {"agreed": audit.agreed, "total": audit.total},
        )
        await send_updates(self.producer, self.updates_topic, [update])
        self._announced = (decision.threshold, result.versions)
        log.warning("announced threshold %.2f (%s)", decision.threshold, update.reason)

    def _due(self) -> str | None:
        if time.time() < self._not_before:
            return None
        trainer = self.settings.trainer
        last = self.store.last_round_started() or self.started
        return round_due(
            self.store.pending_hard_samples(),
            trainer.every_samples,
            time.time() - last,
            trainer.every_minutes,
        )

    def _store(
        self, messages: list[ConsumerRecord[Any, Any]]
    ) -> list[tuple[ConsumerRecord[Any, Any], str]]:
        """Write a polled batch to the store (in a thread: SQLite blocks); returns the records
        that are not usable, each with the reason."""
        hard: list[HardSample] = []
        rejected = []
        share = self.settings.trainer.feedback_holdout
        for msg in messages:
            if msg.topic == self.hard_topic:
                sample = HardSample.parse(msg.value, msg.key)
                if isinstance(sample, Invalid):
                    rejected.append((msg, f"not a hard sample: {sample.reason}"))
                else:
                    hard.append(sample)
                continue
            gold = Feedback.parse(msg.value, msg.key)
            if isinstance(gold, Invalid):
                rejected.append((msg, f"not a feedback record: {gold.reason}"))
            else:
                self.store.add_gold(gold.id, gold.label, gold.text, holdout_share=share)
        if hard:
            self.store.add_hard_samples([h.example for h in hard])
            self.store.add_audits([a for h in hard if (a := h.audit) is not None])
        return rejected

    async def _dead_letter(self, rejected: list[tuple[ConsumerRecord[Any, Any], str]]) -> None:
        """Dead-letter unusable records and wait for the broker's acks (before the commit)."""
        sends = []
        for msg, error in rejected:
            letter = DeadLetter.of_message(msg, error, "trainer")
            log.warning("dead letter %s: %s", letter.key.decode(), error)
            sends.append(
                await self.producer.send(self.dead_topic, letter.to_bytes(), key=letter.key)
            )
            self.metrics.dead_lettered()
        await asyncio.gather(*sends)

    def _serving_updates(self) -> list[ModelUpdate]:
        registry = self.runner.registry
        return [
            model_update(registry, name, version)
            for name in self.runner.jurors()
            if (version := registry.serving_version(name)) is not None
        ]

    async def _announce(self, updates: list[ModelUpdate]) -> None:
        if updates:
            await send_updates(self.producer, self.updates_topic, updates)
            log.warning("announced %s", {u.name: u.version for u in updates})

    async def _finish(self, task: asyncio.Task[RoundResult | None]) -> None:
        try:
            result = await task
        except Exception:
            log.exception("training round crashed; its samples stay new for the next round")
            self._not_before = time.time() + RETRY_AFTER_CRASH_S
            return
        if result is None:
            return
        for candidate in result.candidates:
            self.metrics.round_finished(candidate.juror, candidate.outcome, candidate.seconds)
        registry = self.runner.registry
        updates = await asyncio.to_thread(
            lambda: [model_update(registry, c.juror, str(c.version)) for c in result.promoted]
        )
        await self._announce(updates)
        if updates:
            await self._control(f"round {result.round}")


def build_runner(settings: Settings) -> tuple[TrainingStore, RoundRunner]:
    """The store (seed set imported once) and the round runner with its held-out gold set."""
    trainer = settings.trainer
    store = TrainingStore(settings.data_dir / STORE_FILE)
    if trainer.seed_data:
        seed = load_dataset(trainer.seed_data, trainer.seed_split)
        added = store.add_seed(seed.sample(trainer.seed_size, seed=trainer.seed_sample))
        if added:
            log.warning("imported %d seed examples for replay", added)
    gold: list[tuple[str, str]] = []
    if trainer.gold_data:
        held = load_dataset(trainer.gold_data, trainer.gold_split).sample(trainer.gold_size)
        gold = list(zip(held.texts, held.gold(), strict=True))
    registry = Registry(settings.registry_url)
    return store, RoundRunner(store, registry, trainer, gold, settings.data_dir / "trainer-work")


@contextlib.asynccontextmanager
async def trainer(settings: Settings, kafka: Kafka, metrics: TrainerMetrics) -> AsyncIterator[Role]:
    """The trainer with its store, round runner and threshold controller."""
    store, runner = await asyncio.to_thread(build_runner, settings)
    metrics.declare_jurors(runner.jurors())
    log.warning(
        "trainer: jurors %s, a round every %d hard samples or %.0f min, registry %s",
        runner.jurors(),
        settings.trainer.every_samples,
        settings.trainer.every_minutes,
        settings.registry_url,
    )
    controller = None
    if settings.controller.enabled:
        controller = ThresholdController(
            settings, runner.registry, store, runner.gold, runner.jurors()
        )
    yield TrainerRole(settings, kafka, store, runner, metrics, controller)


def run_trainer(settings: Settings) -> int:
    """The ``trainer`` command: lower priority, capped threads, run until SIGTERM/SIGINT."""
    os.nice(settings.trainer.nice)
    return run_role(settings, TrainerMetrics, trainer)
