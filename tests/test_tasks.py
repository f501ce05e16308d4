"""Several tasks on one post: one jury per task, shared jurors scored once, one fate per post."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from jurystream.config import Topic
from jurystream.models.rules.selection import ReviewAllowance
from jurystream.models.rules.voting import Decision, Vote
from jurystream.models.serving.juror import Juror, load_juror
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.tasks import TaskJuries, for_task
from jurystream.stream.labeling import Stamp, label_tasks_batch, read_batch
from jurystream.stream.records import HardSample, LabelRecord, ReviewCase, TaskResult
from tests.test_labeling import NOW, fates, post

TASKS = ("offensive", "hate", "irony")
STAMP = Stamp({"j0": "1"}, 0.7, "host:1", {"offensive": 0.7, "hate": 0.6, "irony": 0.5})


class Counting:
    """A real juror that counts the texts it scores."""

    def __init__(self, juror: Juror) -> None:
        self.juror, self.name, self.version = juror, juror.name, juror.version
        self.labels, self.cost, self.calls = juror.labels, juror.cost, 0

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return self.juror.predict_proba(texts)


class TwoHeads:
    """A multi-head juror over two real jurors, one head each; counts its passes."""

    def __init__(self, heads: dict[str, Juror]) -> None:
        self.name, self.version, self.cost = "mh", "1", 1.0
        self._heads = heads
        self.heads = {task: j.labels for task, j in heads.items()}
        self.labels = next(iter(self.heads.values()))
        self.passes = 0

    def predict_heads(
        self, texts: Sequence[str], map_chunks: object = map
    ) -> dict[str, np.ndarray]:
        self.passes += 1
        return {task: j.predict_proba(texts) for task, j in self._heads.items()}

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_heads(texts)[next(iter(self.heads))]

    def head(self, task: str) -> HeadView:
        return HeadView(self, task)


class HeadView:
    def __init__(self, parent: TwoHeads, task: str) -> None:
        self.parent, self.task = parent, task
        self.name, self.version, self.cost = parent.name, parent.version, parent.cost
        self.labels = parent.heads[task]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.parent.predict_heads(texts)[self.task]


TEXTS = ["you are a fool and an idiot", "lovely morning walk", "what a great day, not", "hmm"]


def test_a_juror_shared_by_tasks_is_scored_once_and_each_task_decides_as_alone(
    sklearn_jurors: list[Path],
) -> None:
    a, b, c = (load_juror(p) for p in sklearn_jurors)
    shared = Counting(a)
    heads = TwoHeads({"hate": b, "irony": c})
    juries = TaskJuries(
        {
            "offensive": Jury((shared, b), "majority", 0.6),
            "hate": Jury((shared, for_task(heads, "hate")), "weighted", 0.7),
            "irony": Jury((for_task(heads, "irony"), c), "unanimous", 0.8),
        }
    )
    decisions = juries.decide(TEXTS)
    assert shared.calls == 1 and heads.passes == 1  # one pass each for the whole batch
    assert [list(d) for d in decisions] == [["offensive", "hate", "irony"]] * len(TEXTS)
    for task, jury in juries.juries.items():
        assert [d[task] for d in decisions] == jury.decide(TEXTS)  # as if served alone


def test_a_multi_head_juror_swaps_into_every_task_or_is_refused(
    sklearn_jurors: list[Path],
) -> None:
    a, b, _ = (load_juror(p) for p in sklearn_jurors)
    old = TwoHeads({"hate": a, "irony": a})
    juries = TaskJuries(
        {t: Jury((for_task(old, t), b), "majority", 0.6) for t in ("hate", "irony")}
    )
    new = TwoHeads({"hate": b, "irony": b})
    new.version = "2"
    swapped = juries.with_juror(new)
    assert swapped.versions == {"mh": "2", b.name: b.version}
    swapped.decide(TEXTS)
    assert new.passes == 1 and old.passes == 0
    missing = TwoHeads({"hate": b})
    with pytest.raises(ValueError, match="no head for task 'irony'"):
        juries.with_juror(missing)


def scored(*escalated_tasks: str) -> dict[str, Decision]:
    out = {}
    for task in TASKS:
        esc = task in escalated_tasks
        conf = 0.55 if esc else 0.95
        votes = (Vote("j0", f"{task}-yes", conf),)
        out[task] = Decision(f"{task}-yes", conf, votes, esc, "split vote" if esc else None)
    return out


def test_a_post_settled_on_every_task_gets_one_label_with_every_result() -> None:
    read = read_batch([post("a")], 64_000, 4000)
    batch = label_tasks_batch(read, [scored()], STAMP, NOW, audit_rate=0.0)
    (out,) = batch.outputs
    assert (out.topic, out.outcome) == (Topic.LABELS, "labeled")
    record = LabelRecord.parse(out.record.to_bytes(), out.key)
    assert isinstance(record, LabelRecord)
    assert list(record.tasks) == list(TASKS)
    assert record.label == "offensive-yes" and record.source == "jury"
    assert {t: r.threshold for t, r in record.tasks.items()} == STAMP.thresholds
    assert all(r.source == "jury" and r.reason is None for r in record.tasks.values())


def test_a_post_unsettled_on_some_tasks_asks_only_for_those_in_one_case() -> None:
    read = read_batch([post("a"), post("b", offset=1)], 64_000, 4000)
    batch = label_tasks_batch(read, [scored("hate", "irony"), scored()], STAMP, NOW, audit_rate=0.0)
    assert fates(batch.outputs) == Counter({"a": 1, "b": 1})  # one fate each
    case_out = next(o for o in batch.outputs if o.key == b"a")
    assert (case_out.topic, case_out.outcome) == (Topic.REVIEW, "escalated")
    case = ReviewCase.parse(case_out.record.to_bytes(), case_out.key)
    assert isinstance(case, ReviewCase)
    assert list(case.asked) == ["hate", "irony"] and list(case.settled) == ["offensive"]
    assert case.asked["hate"].reason == "split vote"
    assert case.settled["offensive"].label == "offensive-yes"
    assert "hate: split vote" in (case.reason or "")


def test_audits_ask_every_task_and_keep_the_label() -> None:
    read = read_batch([post("a")], 64_000, 4000)
    batch = label_tasks_batch(read, [scored()], STAMP, NOW, audit_rate=1.0)
    topics = sorted((o.topic, o.outcome) for o in batch.outputs)
    assert topics == [(Topic.LABELS, "labeled"), (Topic.REVIEW, "audited")]
    case = next(o.record for o in batch.outputs if isinstance(o.record, ReviewCase))
    assert list(case.asked) == list(TASKS) and not case.settled


def test_a_spent_budget_labels_unsettled_tasks_unreviewed_one_review_per_post() -> None:
    read = read_batch([post("a"), post("b", offset=1)], 64_000, 4000)
    allowance = ReviewAllowance(0.5, burst=1)  # one review for these two posts
    decisions = [scored("hate"), scored("hate", "irony", "offensive")]
    batch = label_tasks_batch(read, decisions, STAMP, NOW, 0.0, allowance)
    assert Counter(o.outcome for o in batch.outputs) == Counter({"escalated": 1, "unreviewed": 1})
    label = next(o.record for o in batch.outputs if isinstance(o.record, LabelRecord))
    flagged = {t for t, r in label.tasks.items() if r.unreviewed}
    escalated = {"a": {"hate"}, "b": set(TASKS)}[label.id]
    assert flagged == escalated and label.unreviewed is True


def test_review_completes_the_record_and_writes_a_sample_per_task() -> None:
    read = read_batch([post("a")], 64_000, 4000)
    (out,) = label_tasks_batch(read, [scored("hate")], STAMP, NOW, 0.0).outputs
    case = out.record
    assert isinstance(case, ReviewCase)
    reviewed = TaskResult.of_review(case.asked["hate"], "not-hate", 0.9, "reviewer:x")
    sample = HardSample.of_task(case, "hate", reviewed)
    parsed = HardSample.parse(sample.to_bytes(), sample.key)
    assert isinstance(parsed, HardSample)
    assert (parsed.task, parsed.label, parsed.jury_label) == ("hate", "not-hate", "hate-yes")
    assert sample.key == b"a#hate"


def test_single_task_records_do_not_grow_task_fields() -> None:
    record = LabelRecord(id="a", label="x", source="jury")
    assert "tasks" not in json.loads(record.to_bytes())
    malformed = json.dumps({"id": "a", "label": "x", "source": "jury", "tasks": {"t": 1}})
    assert not isinstance(LabelRecord.parse(malformed.encode()), LabelRecord)
