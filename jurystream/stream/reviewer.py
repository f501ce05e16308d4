"""The reviewer role: review → reviewer chain → labels + hard-samples.

A plain aiokafka consumer with manual commits, not a faust agent: the one guarantee that matters
here is "no offset is committed before its label is written", and the role template that runs
this handler (``role.py``) makes it explicit.

Cases are answered concurrently and finish out of order: a case the chain cannot answer yet
(endpoint down, rate limited past the retries, budget spent, off-label answers) is *parked* —
retried in place with capped exponential backoff — while the cases behind it keep flowing.
Per partition, the committed position only passes a case once it and every case before it
have their outputs acknowledged (``offsets.OffsetTracker``), so an outage delays labels and
never drops them, and a crash replays whatever was not committed; labels are keyed by message
id, so a replay overwrites downstream. Cases that can never be answered (malformed records, an
oracle case without gold, a case that keeps failing while others are answered) go to
dead-letters with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from aiokafka import ConsumerRecord

from jurystream.config import Settings, Topic
from jurystream.exporters.metrics import DEFAULT_TASK, ReviewerMetrics
from jurystream.models.reviewer.base import Failure, Verdict
from jurystream.models.reviewer.chain import Chain, build_chain
from jurystream.stream.quarantine import AttemptLedger
from jurystream.stream.records import (
    DeadLetter,
    HardSample,
    Invalid,
    LabelRecord,
    ReviewCase,
    TaskResult,
)
from jurystream.stream.role import Role, RoleSpec, run_role
from jurystream.stream.security import Kafka
from jurystream.stream.spend import SharedSpend

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0  # on SIGTERM, let the cases in hand finish this long before replaying
PARK_BACKOFF_BASE_S = 0.5


class ReviewerRole(Role):
    """Answers each case concurrently (``RoleSpec.concurrency``); the template commits."""

    metrics: ReviewerMetrics

    def __init__(
        self, settings: Settings, kafka: Kafka, chain: Chain, metrics: ReviewerMetrics
    ) -> None:
        spec = RoleSpec(
            "reviewer",
            (Topic.REVIEW,),
            concurrency=settings.reviewer.in_flight_limit,
            grace_s=SHUTDOWN_GRACE_S,
            # A parked case may wait for hours; that must not make us leave the group.
            consumer={"max_poll_interval_ms": 24 * 3600 * 1000},
            producer={"acks": "all", "linger_ms": 2, "enable_idempotence": False},
        )
        super().__init__(settings, kafka, metrics, spec)
        self.chain = chain
        topics = settings.topics
        self.labels_topic = topics.name(Topic.LABELS)
        self.hard_topic = topics.name(Topic.HARD_SAMPLES)
        self.dead_topic = topics.name(Topic.DEAD_LETTERS)
        self._answered = 0  # verdicts so far: tells a case nobody can answer from an outage
        self.ledger = AttemptLedger(settings.data_dir / "attempts" / self.group_id)

    async def handle(self, messages: list[ConsumerRecord[Any, Any]]) -> None:
        """Answer a case; returns once every output of it is acknowledged by the broker."""
        for msg in messages:
            await asyncio.gather(*await self._handle(msg))

    async def tick(self) -> None:
        self.metrics.cases_in_flight(self.in_flight)

    async def close(self) -> None:
        self.metrics.cases_in_flight(0)

    async def _handle(self, msg: ConsumerRecord[Any, Any]) -> list[Awaitable[Any]]:
        case = ReviewCase.parse(msg.value, msg.key)
        if isinstance(case, Invalid):
            return [await self._dead_letter(msg, f"not a review case: {case.reason}", None)]
        attempt = contested = 0
        answered_before = self._answered
        while True:
            started = time.perf_counter()
            outcome = await self._ask(msg, case)
            if isinstance(outcome, Verdict):
                self._answered += 1
                self.metrics.case_answered(time.perf_counter() - started)
                return await self._write(case, outcome)
            assert isinstance(outcome, Failure)
            if outcome.permanent:
                return [await self._dead_letter(msg, outcome.reason, case.id)]
            # Failed again while other cases were answered: the endpoint works, this case does not.
            contested += self._answered > answered_before
            answered_before = self._answered
            if contested >= self.settings.reviewer.max_case_failures:
                reason = (
                    f"{outcome.source}: {outcome.reason}; failed {contested} times while other "
                    "cases were answered (fix the cause, then replay it from dead-letters)"
                )
                return [await self._dead_letter(msg, reason, case.id)]
            self.metrics.case_parked()
            delay = min(self.settings.reviewer.park_backoff_max_s, PARK_BACKOFF_BASE_S * 2**attempt)
            attempt += 1
            log.warning(
                "case %s parked (%s: %s); retry %d in %.1fs",
                case.id,
                outcome.source,
                outcome.reason,
                attempt,
                delay,
            )
            try:
                await asyncio.sleep(delay)
            finally:  # also when the case is dropped in a rebalance or at shutdown
                self.metrics.park_ended()

    async def _ask(self, msg: ConsumerRecord[Any, Any], case: ReviewCase) -> Verdict | Failure:
        """The chain's outcome. An exception (a bug this case triggers) still crashes the role,
        but is counted on disk first: after ``max_attempts`` the case is quarantined instead of
        crashing the role on every replay."""
        try:
            return await self.chain.review(case.case())
        except Exception as exc:
            ref = (msg.topic, msg.partition, msg.offset)
            self.ledger.begin([ref])
            (attempts,) = self.ledger.attempts([ref])
            if attempts < self.settings.max_attempts:
                raise
            self.ledger.forget([ref])
            reason = (
                f"quarantined: reviewing it raised {type(exc).__name__}: {exc} ({attempts} "
                "times); fix the cause, then replay it from dead-letters"
            )
            log.error("case %s %s", case.id, reason, exc_info=True)
            return Failure("reviewer", reason, permanent=True)

    async def _write(self, case: ReviewCase, verdict: Verdict) -> list[Awaitable[Any]]:
        """The hard sample, and for an escalation the label (an audit's label stands)."""
        if case.asked:
            return await self._write_tasks(case, verdict)
        key = case.id.encode("utf-8")
        sample = HardSample.of(case, verdict)
        sent = [await self.producer.send(self.hard_topic, sample.to_bytes(), key=key)]
        task = DEFAULT_TASK
        self.metrics.hard_sample_written(verdict.source, task)
        if case.kind == "audit":
            agreed = verdict.label == case.jury_label
            self.metrics.audit_reviewed(agreed, task)
            return sent
        now_ms = time.time() * 1000
        latency_ms = max(0.0, now_ms - case.received_ms) if case.received_ms else 0.0
        label = LabelRecord.from_review(case, verdict, latency_ms)
        sent.append(await self.producer.send(self.labels_topic, label.to_bytes(), key=key))
        self.metrics.reviewed(verdict.source, verdict.label, task)
        return sent

    async def _write_tasks(self, case: ReviewCase, verdict: Verdict) -> list[Awaitable[Any]]:
        """A multi-task case: one hard sample per asked task, and for an escalation the post's
        whole label record, the jury's settled tasks kept as they were."""
        reviewed = {
            task: TaskResult.of_review(case.asked[task], v.label, v.confidence, verdict.source)
            for task, v in verdict.tasks.items()
        }
        sent = []
        for task, result in reviewed.items():
            sample = HardSample.of_task(case, task, result)
            sent.append(
                await self.producer.send(self.hard_topic, sample.to_bytes(), key=sample.key)
            )
            self.metrics.hard_sample_written(verdict.source, task)
            if case.kind == "audit":
                self.metrics.audit_reviewed(result.label == case.asked[task].label, task)
        if case.kind == "audit":
            return sent
        merged = {**case.settled, **reviewed}
        ordered = [t for t in self.settings.tasks if t in merged]  # the settings' task order
        results = {t: merged[t] for t in [*ordered, *(t for t in merged if t not in ordered)]}
        now_ms = time.time() * 1000
        latency_ms = max(0.0, now_ms - case.received_ms) if case.received_ms else 0.0
        label = LabelRecord.of_tasks(
            case.id,
            results,
            case.model_versions,
            latency_ms,
            cost_usd=round(verdict.cost_usd, 8),
        )
        key = case.id.encode("utf-8")
        sent.append(await self.producer.send(self.labels_topic, label.to_bytes(), key=key))
        self.metrics.reviewed_tasks({t: (r.source, r.label) for t, r in results.items()})
        return sent

    async def _dead_letter(
        self, msg: ConsumerRecord[Any, Any], error: str, case_id: str | None
    ) -> Awaitable[Any]:
        letter = DeadLetter.of_message(msg, error, "review", case_id)
        self.metrics.dead_lettered()
        log.warning("dead letter %s: %s", letter.key.decode(), error)
        return await self.producer.send(self.dead_topic, letter.to_bytes(), key=letter.key)


@contextlib.asynccontextmanager
async def reviewer(
    settings: Settings, kafka: Kafka, metrics: ReviewerMetrics
) -> AsyncIterator[Role]:
    """The reviewer with its chain (and the spend it shares with other replicas), closed after."""
    review = settings.reviewer
    spend: SharedSpend | None = None
    if "openai" in review.chain and (
        review.budget_per_hour_usd is not None or review.budget_per_day_usd is not None
    ):
        spend = SharedSpend(settings, kafka)  # the budget holds for all replicas together
    try:
        if spend is not None:
            await spend.start()
        chain = build_chain(review, metrics, spend, settings.tasks)
        log.warning("reviewer: chain %s", [tier.name for tier in chain.tiers])
        try:
            yield ReviewerRole(settings, kafka, chain, metrics)
        finally:
            await chain.close()
    finally:
        if spend is not None:
            await spend.close()


def run_reviewer(settings: Settings) -> int:
    """The ``reviewer`` command: run until SIGTERM/SIGINT."""
    return run_role(settings, ReviewerMetrics, reviewer)
