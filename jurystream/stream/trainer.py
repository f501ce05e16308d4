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

Several tasks (``Settings.tasks``): one trainer process keeps a ``Lane`` per task, with its own
store (``trainer-<task>.sqlite``), round runner over the task's jurors and held-out gold, and
threshold controller. Hard samples and feedback go to the lane of their ``task``; one without
a task, or for a task not configured, is dead-lettered. Rounds still run one at a time across
tasks: a multi-head juror is shared by several tasks, and a round for task B must start from
the version task A's round just promoted, not from the one both started with (two rounds side
by side would each publish a child of the same parent, and the later would drop the earlier's
training). Without tasks there is one lane, ``trainer.sqlite``, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord

from jurystream.config import Settings, SettingsError, Topic
from jurystream.exporters.metrics import DEFAULT_TASK, TrainerMetrics
from jurystream.models.rules.continual import round_due
from jurystream.models.serving.registry import Registry
from jurystream.models.training.controller import ThresholdController
from jurystream.models.training.datasets import LabeledSet, load_dataset, load_task_dataset
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


def store_file(task: str | None) -> str:
    """The training store of a task (``trainer-<task>.sqlite``), or of the one task."""
    return STORE_FILE if task is None else f"trainer-{task}.sqlite"


def task_of(task: str | None, tasks: Sequence[str], what: str) -> str | Invalid | None:
    """The task a record is trained for, or why it cannot be.

    One task (``tasks`` empty): None, whatever the record says, as before tasks existed.
    Several: the record's task, which must be one of them; the reason names them all.
    """
    if not tasks:
        return None
    if task in tasks:
        return task
    configured = ", ".join(tasks)
    if task is None:
        return Invalid(f"{what} has no 'task'; this trainer trains the tasks {configured}")
    return Invalid(f"{what} is for task {task!r}, which is not one of the tasks {configured}")


@dataclass
class Lane:
    """One task's training state: its store, rounds and threshold controller (``task`` None:
    the deployment's one task), and what its controller last announced."""

    task: str | None
    store: TrainingStore
    runner: RoundRunner
    controller: ThresholdController | None = None
    announced: tuple[float, dict[str, str]] | None = None
    audits_at_decision: int = 0
    not_before: float = 0.0  # no round before this time (a crashed round is not retried at once)

    def why(self, what: str) -> str:
        return what if self.task is None else f"{self.task} {what}"


class TrainerRole(Role):
    """Stores each polled batch (the template commits it after), runs rounds beside it."""

    metrics: TrainerMetrics

    def __init__(
        self, settings: Settings, kafka: Kafka, lanes: Sequence[Lane], metrics: TrainerMetrics
    ) -> None:
        spec = RoleSpec(
            "trainer",
            (Topic.HARD_SAMPLES, Topic.FEEDBACK),
            poll_ms=POLL_MS,
            max_records=2000,
            producer={"acks": "all", "enable_idempotence": False},
        )
        super().__init__(settings, kafka, metrics, spec)
        if not lanes:
            raise ValueError("a trainer needs at least one lane")
        self.lanes = list(lanes)
        self.by_task = {lane.task: lane for lane in self.lanes}
        self.tasks = list(settings.tasks)
        topics = settings.topics
        self.hard_topic = topics.name(Topic.HARD_SAMPLES)
        self.updates_topic = topics.name(Topic.MODEL_UPDATES)
        self.dead_topic = topics.name(Topic.DEAD_LETTERS)
        self.started = time.time()
        self._round: tuple[Lane, asyncio.Task[RoundResult | None]] | None = None
        self._next = 0  # the lane whose turn it is to be checked first (round robin)

    async def start(self) -> None:
        """Re-announce what serves (a round may have died before announcing it), then decide
        the threshold for it."""
        await self._announce(await asyncio.to_thread(self._serving_updates))
        for lane in self.lanes:
            # A configured target is known before the first decision (which needs gold and
            # audits); one derived from the reviewer's accuracy appears with that decision.
            if lane.controller is not None and lane.controller.target is not None:
                self.metrics.target_accuracy(lane.controller.target, lane.task or DEFAULT_TASK)
            await self._control(lane, "start")

    async def handle(self, messages: list[ConsumerRecord[Any, Any]]) -> None:
        """Store a polled batch and dead-letter what is unusable, acknowledged before the
        template commits it; enough new audits let a controller correct its threshold."""
        rejected = await asyncio.to_thread(self._store, messages)
        await self._dead_letter(rejected)
        for lane in self.lanes:
            if await asyncio.to_thread(self._audits_due, lane):
                await self._control(lane, "audit")

    async def tick(self) -> None:
        """Announce a finished round; start the next one when due (one at a time)."""
        if self._round is not None and self._round[1].done():
            await self._finish(*self._round)
            self._round = None
        if self._round is None:
            due = self._due()
            if due is not None:
                lane, trigger = due
                task = asyncio.create_task(asyncio.to_thread(lane.runner.run, trigger))
                self._round = (lane, task)

    async def finish(self) -> None:
        if self._round is not None:
            log.warning("stopping: waiting for the round in hand to finish")
            await self._finish(*self._round)
            self._round = None

    async def close(self) -> None:
        if self._round is not None and not self._round[1].done():
            self._round[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._round[1]

    def _audits_due(self, lane: Lane) -> bool:
        """Enough new audits at the serving threshold to let them correct it."""
        controller = lane.controller
        if controller is None or controller.current is None:
            return False
        judged = controller.audits_since_decision()
        return judged - lane.audits_at_decision >= self.settings.controller.audit_min

    async def _control(self, lane: Lane, why: str) -> None:
        """Decide the threshold for the lane's serving jury and announce it if it changed."""
        controller = lane.controller
        if controller is None:
            return
        try:
            result = await asyncio.to_thread(controller.decide)
        except Exception:
            log.exception("threshold controller failed; the serving threshold stays")
            return
        if result is None:
            return
        lane.audits_at_decision = await asyncio.to_thread(controller.audits_since_decision)
        decision = result.decision
        task = lane.task or DEFAULT_TASK
        self.metrics.threshold_chosen(decision.threshold, decision.target_accuracy, task)
        if why != "start" and lane.announced == (decision.threshold, result.versions):
            return
        audit = result.audit
        update = ThresholdUpdate(
            policy=controller.policy,
            threshold=decision.threshold,
            versions=result.versions,
            seq=time.time(),
            reason=f"{why}: {decision.reason}",
            target_accuracy=round(decision.target_accuracy, 4),
            expected_accuracy=round(decision.expected_accuracy, 4),
            expected_escalation=round(decision.expected_escalation, 4),
            reviewer_accuracy=round(result.reviewer_accuracy, 4),
            audit=None if audit is None else {"agreed": audit.agreed, "total": audit.total},
            **({} if lane.task is None else {"task": lane.task}),
        )
        await send_updates(self.producer, self.updates_topic, [update])
        lane.announced = (decision.threshold, result.versions)
        log.warning(
            "announced threshold %.2f%s (%s)",
            decision.threshold,
            "" if lane.task is None else f" for task {lane.task}",
            update.reason,
        )

    def _due(self) -> tuple[Lane, str] | None:
        """The next lane whose round is due, and why; lanes take turns, so a task whose
        samples pour in cannot keep another from its rounds."""
        now = time.time()
        trainer = self.settings.trainer
        for i in range(len(self.lanes)):
            k = (self._next + i) % len(self.lanes)
            lane = self.lanes[k]
            if now < lane.not_before:
                continue
            last = lane.store.last_round_started() or self.started
            trigger = round_due(
                lane.store.pending_hard_samples(),
                trainer.every_samples,
                now - last,
                trainer.every_minutes,
            )
            if trigger is not None:
                self._next = (k + 1) % len(self.lanes)
                return lane, trigger
        return None

    def _lane(self, task: str | None, what: str) -> Lane | Invalid:
        routed = task_of(task, self.tasks, what)
        return routed if isinstance(routed, Invalid) else self.by_task[routed]

    def _store(
        self, messages: list[ConsumerRecord[Any, Any]]
    ) -> list[tuple[ConsumerRecord[Any, Any], str]]:
        """Write a polled batch to the stores of its tasks (in a thread: SQLite blocks);
        returns the records that are not usable, each with the reason."""
        hard: dict[str | None, list[HardSample]] = {}
        rejected = []
        share = self.settings.trainer.feedback_holdout
        for msg in messages:
            if msg.topic == self.hard_topic:
                sample = HardSample.parse(msg.value, msg.key)
                if isinstance(sample, Invalid):
                    rejected.append((msg, f"not a hard sample: {sample.reason}"))
                    continue
                lane = self._lane(sample.task, f"hard sample {sample.id}")
                if isinstance(lane, Invalid):
                    rejected.append((msg, lane.reason))
                else:
                    hard.setdefault(lane.task, []).append(sample)
                continue
            gold = Feedback.parse(msg.value, msg.key)
            if isinstance(gold, Invalid):
                rejected.append((msg, f"not a feedback record: {gold.reason}"))
                continue
            lane = self._lane(gold.task, f"feedback {gold.id}")
            if isinstance(lane, Invalid):
                rejected.append((msg, lane.reason))
            else:
                lane.store.add_gold(gold.id, gold.label, gold.text, holdout_share=share)
        for task, samples in hard.items():
            store = self.by_task[task].store
            store.add_hard_samples([h.example for h in samples])
            # An audit measures the jury of its task: it feeds that task's controller.
            store.add_audits([a for h in samples if (a := h.audit) is not None])
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
        registry = self.lanes[0].runner.registry
        jurors = dict.fromkeys(name for lane in self.lanes for name in lane.runner.jurors())
        return [
            model_update(registry, name, version)
            for name in jurors
            if (version := registry.serving_version(name)) is not None
        ]

    async def _announce(self, updates: list[ModelUpdate]) -> None:
        if updates:
            await send_updates(self.producer, self.updates_topic, updates)
            log.warning("announced %s", {u.name: u.version for u in updates})

    async def _finish(self, lane: Lane, task: asyncio.Task[RoundResult | None]) -> None:
        try:
            result = await task
        except Exception:
            log.exception("training round crashed; its samples stay new for the next round")
            lane.not_before = time.time() + RETRY_AFTER_CRASH_S
            return
        if result is None:
            return
        for candidate in result.candidates:
            self.metrics.round_finished(candidate.juror, candidate.outcome, candidate.seconds)
        registry = lane.runner.registry
        updates = await asyncio.to_thread(
            lambda: [model_update(registry, c.juror, str(c.version)) for c in result.promoted]
        )
        await self._announce(updates)
        promoted = {u.name for u in updates}
        # Every task that serves a promoted juror (a shared multi-head juror serves several)
        # now has a jury its threshold was not calibrated for.
        for other in self.lanes:
            if promoted & set(other.runner.jurors()):
                await self._control(other, lane.why(f"round {result.round}"))


def _lane_data(settings: Settings, task: str | None, setting: str, split: str) -> LabeledSet | None:
    """``trainer.<setting>`` (``seed_data``, ``gold_data``), or a task's own
    ``tasks.<task>.<setting>``, held to the task's labels; None when not set."""
    if task is None:
        source = getattr(settings.trainer, setting)
        return load_dataset(source, split) if source else None
    spec = settings.tasks[task]
    source = getattr(spec, setting)
    return load_task_dataset(source, split, task, setting, spec.labels) if source else None


def build_lane(settings: Settings, registry: Registry, task: str | None = None) -> Lane:
    """A task's lane (None: the one task of ``trainer``): the store (seed set imported once),
    the round runner with its held-out gold set, and the threshold controller."""
    trainer = settings.trainer
    if task is not None:
        jurors = list(settings.tasks[task].jurors)
        trainer = trainer.model_copy(update={"jurors": jurors})
    store = TrainingStore(settings.data_dir / store_file(task))
    seed = _lane_data(settings, task, "seed_data", trainer.seed_split)
    if seed is not None:
        added = store.add_seed(seed.sample(trainer.seed_size, seed=trainer.seed_sample))
        if added:
            where = "" if task is None else f" of task {task}"
            log.warning("imported %d seed examples for replay%s", added, where)
    gold: list[tuple[str, str]] = []
    held = _lane_data(settings, task, "gold_data", trainer.gold_split)
    if held is not None:
        held = held.sample(trainer.gold_size)
        gold = list(zip(held.texts, held.gold(), strict=True))
    work = settings.data_dir / "trainer-work"
    runner = RoundRunner(store, registry, trainer, gold, work, task=task)
    controller = None
    if settings.controller.enabled:
        controller = ThresholdController(
            settings, registry, store, runner.gold, runner.jurors(), task
        )
    return Lane(task, store, runner, controller)


def build_lanes(settings: Settings) -> list[Lane]:
    """One lane per task of ``settings.tasks``, in their order, or the one of ``trainer``."""
    registry = Registry(settings.registry_url)
    trainer = settings.trainer
    unused = [f"trainer.{n}" for n in ("jurors", "seed_data", "gold_data") if getattr(trainer, n)]
    if settings.tasks and unused:
        log.warning(
            "%s unused with several tasks: set them per task (tasks.<name>.jurors, "
            "tasks.<name>.seed_data, tasks.<name>.gold_data)",
            ", ".join(unused),
        )
    for task, spec in settings.tasks.items():
        # Else the task's threshold controller fails at every decision, and its rounds skip
        # the juror, while the worker serves it: refused here, where the trainer starts.
        unknown = [name for name in spec.jurors if registry.serving_version(name) is None]
        if unknown:
            raise SettingsError(
                f"task {task}: jurors {unknown} have no serving version in the registry "
                f"{registry.url}, and the trainer refines and calibrates registry jurors only: "
                "publish them there (`jurystream models bootstrap`; `jurystream models list` "
                f"shows what it holds), or remove them from tasks.{task}.jurors"
            )
    tasks: list[str | None] = [*settings.tasks] or [None]
    return [build_lane(settings, registry, task) for task in tasks]


@contextlib.asynccontextmanager
async def trainer(settings: Settings, kafka: Kafka, metrics: TrainerMetrics) -> AsyncIterator[Role]:
    """The trainer with its lanes: a store, a round runner and a controller per task."""
    lanes = await asyncio.to_thread(build_lanes, settings)
    jurors = list(dict.fromkeys(name for lane in lanes for name in lane.runner.jurors()))
    metrics.declare_jurors(jurors)
    log.warning(
        "trainer: jurors %s, a round every %d hard samples or %.0f min, registry %s",
        {lane.task or "": lane.runner.jurors() for lane in lanes} if settings.tasks else jurors,
        settings.trainer.every_samples,
        settings.trainer.every_minutes,
        settings.registry_url,
    )
    yield TrainerRole(settings, kafka, lanes, metrics)


def run_trainer(settings: Settings) -> int:
    """The ``trainer`` command: lower priority, capped threads, run until SIGTERM/SIGINT."""
    os.nice(settings.trainer.nice)
    return run_role(settings, TrainerMetrics, trainer)
