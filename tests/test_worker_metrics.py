"""What the worker counts for a batch, in-process: real jurors, the real labeling worker, no
broker (its output topics only acknowledge). One task reports ``task="default"``; several
tasks report each task's votes, labels, escalations and threshold, and each post once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jurystream.config import JurySettings, Settings, Topic
from jurystream.exporters.metrics import DEFAULT_TASK, WorkerMetrics
from jurystream.models.rules.voting import Decision
from jurystream.models.serving.juror import load_juror
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.tasks import TaskJuries
from jurystream.stream.worker import LabelingWorker, Served
from tests.test_labeling import Msg, post

TEXTS = [
    "you are a fool and an idiot",
    "lovely morning walk by the sea",
    "what a great day, not",
    "hmm",
    "I hate this so much, worst ever",
    "thanks for the kind words",
]


@dataclass(frozen=True)
class Event:
    message: Msg


class Acknowledging:
    """An output topic whose broker acknowledges every send at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, key: bytes, value: bytes) -> asyncio.Future[None]:
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def sample(m: WorkerMetrics, name: str, **labels: str) -> float:
    return float(m.registry.get_sample_value(name, labels) or 0.0)


@pytest.fixture
def run_batch(tmp_path: Path) -> Iterator[Any]:
    """Label one batch of TEXTS with ``jury``; returns the worker's metrics."""
    workers: list[LabelingWorker] = []

    def run(jury: Served, tasks: Sequence[str] = ()) -> WorkerMetrics:
        settings = Settings(
            data_dir=tmp_path, jury=JurySettings(inference_threads=1, audit_rate=0.0)
        )
        metrics = WorkerMetrics(tasks=tasks)
        outputs: Any = {
            t: Acknowledging() for t in (Topic.LABELS, Topic.REVIEW, Topic.DEAD_LETTERS)
        }
        worker = LabelingWorker(settings, jury, metrics, outputs)
        workers.append(worker)
        events = [Event(post(f"p{i}", text, offset=i)) for i, text in enumerate(TEXTS)]
        asyncio.run(worker.process(events))
        return metrics

    yield run
    for worker in workers:
        worker.close()


def votes_and_agreement(decisions: Sequence[Decision]) -> tuple[int, int]:
    votes = sum(len(d.votes) for d in decisions)
    agreed = sum(v.label == d.label for d in decisions for v in d.votes)
    return votes, agreed


def test_one_task_is_counted_as_the_default_task(
    sklearn_jurors: list[Path], run_batch: Any
) -> None:
    jury = Jury(tuple(load_juror(p) for p in sklearn_jurors), "majority", 0.6)
    decisions = jury.decide(TEXTS)
    metrics = run_batch(jury)
    decided = "jurystream_task_decisions_total"
    escalated = sum(d.escalated for d in decisions)
    assert sample(metrics, decided, task=DEFAULT_TASK, outcome="escalated") == escalated
    assert sample(metrics, decided, task=DEFAULT_TASK, outcome="accepted") == len(TEXTS) - escalated
    votes, agreed = votes_and_agreement(decisions)
    counted = sum(
        sample(metrics, "jurystream_juror_votes_total", task=DEFAULT_TASK, juror=j, label=lab)
        for j in jury.versions
        for lab in jury.labels
    )
    assert counted == votes
    agreement = sum(
        sample(metrics, "jurystream_juror_agreement_total", task=DEFAULT_TASK, juror=j)
        for j in jury.versions
    )
    assert agreement == agreed
    assert sample(metrics, "jurystream_jury_threshold", task=DEFAULT_TASK) == 0.6
    labels = sum(
        sample(metrics, "jurystream_labels_total", task=DEFAULT_TASK, source="jury", label=lab)
        for lab in jury.labels
    )
    assert labels == len(TEXTS) - escalated


def test_several_tasks_count_each_tasks_decision_and_each_post_once(
    sklearn_jurors: list[Path], run_batch: Any
) -> None:
    jurors = tuple(load_juror(p) for p in sklearn_jurors)
    # A lenient task the jury settles on every post, a strict one it escalates on most.
    juries = TaskJuries(
        {
            "lenient": Jury(jurors, "majority", 0.0),
            "strict": Jury(jurors[:2], "unanimous", 0.99),
        }
    )
    decisions = juries.decide(TEXTS)
    by_task = {t: [d[t] for d in decisions] for t in juries.tasks}
    escalated = {t: sum(d.escalated for d in ds) for t, ds in by_task.items()}
    assert escalated["lenient"] == 0 < escalated["strict"]  # what the test is about
    posts_escalated = sum(any(d.escalated for d in post.values()) for post in decisions)
    metrics = run_batch(juries, juries.tasks)

    decided = "jurystream_task_decisions_total"
    for task, count in escalated.items():
        assert sample(metrics, decided, task=task, outcome="escalated") == count, task
        assert sample(metrics, decided, task=task, outcome="accepted") == len(TEXTS) - count
        votes, agreed = votes_and_agreement(by_task[task])
        jury = juries.juries[task]
        per_juror = [(j, lab) for j in jury.versions for lab in jury.labels]
        counted = sum(
            sample(metrics, "jurystream_juror_votes_total", task=task, juror=j, label=lab)
            for j, lab in per_juror
        )
        assert counted == votes, task
        agreement = sum(
            sample(metrics, "jurystream_juror_agreement_total", task=task, juror=j)
            for j in jury.versions
        )
        assert agreement == agreed, task
        assert sample(metrics, "jurystream_jury_threshold", task=task) == jury.threshold
        # Labels the worker wrote: every task of the posts no task escalated.
        written = sum(
            sample(metrics, "jurystream_labels_total", task=task, source="jury", label=lab)
            for lab in jury.labels
        )
        assert written == len(TEXTS) - posts_escalated, task
    # Posts, not tasks: a post escalated on one task is one escalated message.
    messages = "jurystream_messages_total"
    assert sample(metrics, messages, role="worker", outcome="escalated") == posts_escalated
    assert (
        sample(metrics, messages, role="worker", outcome="labeled") == len(TEXTS) - posts_escalated
    )
    # Nothing is reported for a task the deployment does not have.
    assert sample(metrics, decided, task=DEFAULT_TASK, outcome="accepted") == 0
    assert (
        metrics.registry.get_sample_value("jurystream_jury_threshold", {"task": DEFAULT_TASK})
        is None
    )
