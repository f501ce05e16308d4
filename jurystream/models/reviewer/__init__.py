"""The reviewer chain: backends that decide the cases the jury escalated.

Every backend answers ``await review(case)`` with a :class:`Verdict`, a :class:`Forward`
(a cheap tier that is unsure passes the case on) or a :class:`Failure` (nothing decided; the
stream role parks the case and asks again later, it never invents a label). A multi-task case
(``Case.tasks``) gets one verdict with a :class:`TaskVerdict` per asked task.
"""

from jurystream.models.reviewer.base import (
    Backend,
    Case,
    Failure,
    Forward,
    Outcome,
    TaskQuestion,
    TaskSpec,
    TaskVerdict,
    Verdict,
    task_specs,
)

__all__ = [
    "Backend",
    "Case",
    "Failure",
    "Forward",
    "Outcome",
    "TaskQuestion",
    "TaskSpec",
    "TaskVerdict",
    "Verdict",
    "task_specs",
]
