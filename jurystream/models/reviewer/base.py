"""The backend interface and the outcomes every reviewer tier returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: config imports this package, numpy is not needed
    from jurystream.config import TaskSettings
    from jurystream.models.rules.voting import Vote


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What the reviewer knows of one task of a multi-task deployment: what to ask, the label
    set (the answer's enum) and what each label means."""

    name: str
    instruction: str
    labels: tuple[str, ...]
    descriptions: Mapping[str, str] = field(default_factory=dict, hash=False)


def task_specs(tasks: Mapping[str, TaskSettings]) -> dict[str, TaskSpec]:
    """The reviewer's view of ``Settings.tasks``, in the settings' order (which is also the
    order tasks appear in a multi-task prompt)."""
    return {
        name: TaskSpec(name, task.prompt(name), tuple(task.labels), dict(task.descriptions))
        for name, task in tasks.items()
    }


@dataclass(frozen=True, slots=True)
class TaskQuestion:
    """One task of a post that the jury could not settle, with the jury's votes on it."""

    task: str
    votes: tuple[Vote, ...] = ()


@dataclass(frozen=True, slots=True)
class Case:
    """What a reviewer tier is asked about: the post and the jury's votes on it. The stream
    builds it from a review record (``stream.records.ReviewCase.case``); ``meta`` may carry
    the gold label the oracle tier answers with (``{task: label}`` for a multi-task case).

    ``tasks`` empty: a single-task case (the label set of ``reviewer.label_descriptions``,
    votes in ``votes``). Otherwise the tasks the jury escalated, each with its own votes, all
    asked at once: one call per post, not per task."""

    id: str
    text: str
    votes: tuple[Vote, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[TaskQuestion, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskVerdict:
    """The decided label of one task of a multi-task case."""

    label: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decided label. ``source`` names who decided, e.g. ``reviewer:openai:gpt-4o-mini``.

    For a multi-task case ``tasks`` holds one entry per asked task, and ``label`` and
    ``confidence`` are those of the case's first asked task, so code that knows one label
    only still reads a real one. ``cost_usd`` is the whole case's."""

    label: str
    confidence: float
    source: str
    cost_usd: float = 0.0
    # Not hashed (a dict): a verdict stays hashable as it was before it had tasks.
    tasks: Mapping[str, TaskVerdict] = field(default_factory=dict, hash=False)

    @classmethod
    def of_tasks(
        cls, case: Case, answers: Mapping[str, TaskVerdict], source: str, cost_usd: float = 0.0
    ) -> Verdict:
        """The verdict of a multi-task case, its tasks in the case's order."""
        tasks = {q.task: answers[q.task] for q in case.tasks}
        first = tasks[case.tasks[0].task]
        return cls(first.label, first.confidence, source, cost_usd, tasks)


@dataclass(frozen=True, slots=True)
class Forward:
    """A tier that is not sure enough passes the case to the next, more expensive tier."""

    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """Nothing decided. ``permanent`` failures (e.g. the oracle has no gold label for the case)
    can never succeed and are dead-lettered; the others are parked and asked again later."""

    source: str
    reason: str
    permanent: bool = False


Outcome = Verdict | Forward | Failure


class UnknownTaskError(ValueError):
    """A case asks about a task the reviewer was not given (no ``[tasks.<name>]`` section)."""


def asked_specs(case: Case, specs: Mapping[str, TaskSpec]) -> tuple[TaskSpec, ...]:
    """The specs of the tasks ``case`` asks, in the settings' order (so the system message of
    a given set of tasks is always the same text). Raises :class:`UnknownTaskError`."""
    asked = [q.task for q in case.tasks]
    unknown = [t for t in asked if t not in specs]
    if unknown:
        raise UnknownTaskError(
            f"case asks tasks {unknown} the reviewer does not know (known: {list(specs)}); "
            "add a [tasks.<name>] section for each"
        )
    if len(set(asked)) != len(asked):
        raise UnknownTaskError(f"case asks a task twice: {asked}")
    return tuple(spec for name, spec in specs.items() if name in asked)


@runtime_checkable
class Backend(Protocol):
    """One tier of the chain. ``name`` is what the label's ``source`` reports."""

    name: str

    async def review(self, case: Case) -> Outcome: ...
