"""Where each scored post goes: a label, a review, or both (an audit). Pure, no broker.

- accepted by the jury → a label; a hashed ``audit_rate`` share of these also goes to review
  as an ``audit`` case (the label stands, the review measures it);
- escalated → a review case, unless the review budget is spent: then the most informative
  escalations of the batch are reviewed (``selection.select_informative``) and the rest get
  the jury's best guess as a label flagged ``unreviewed``.

With several tasks (``route_tasks``) a post is escalated when any task is: it costs one review
(one call asks for all its unsettled tasks), and its least confident unsettled task says how
informative it is. An audit asks for every task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from jurystream.models.rules.audit import is_audited
from jurystream.models.rules.selection import ReviewAllowance, select_informative, words
from jurystream.models.rules.voting import Decision
from jurystream.stream.records import Post

ReviewKind = Literal["escalation", "audit"]


@dataclass(frozen=True)
class Route:
    post: Post
    decision: Decision
    label: bool  # a label record now (the jury's)
    review: ReviewKind | None  # a review case, and of which kind
    unreviewed: bool = False  # escalated, but the review budget did not cover it


def route(
    posts: Sequence[Post],
    decisions: Sequence[Decision],
    audit_rate: float,
    allowance: ReviewAllowance | None = None,
) -> list[Route]:
    """One route per post, in order. ``allowance`` (if any) is charged for escalations."""
    if len(posts) != len(decisions):
        raise ValueError(f"{len(posts)} posts but {len(decisions)} decisions")
    escalated = [i for i, d in enumerate(decisions) if d.escalated]
    reviewed = set(escalated)
    if allowance is not None:
        allowance.earn(len(posts))
        granted = allowance.grant(len(escalated))
        if granted < len(escalated):
            picked = select_informative(
                [1.0 - decisions[i].confidence for i in escalated],
                [words(posts[i].text) for i in escalated],
                granted,
            )
            reviewed = {escalated[j] for j in picked}
    routes = []
    for i, (post, decision) in enumerate(zip(posts, decisions, strict=True)):
        if not decision.escalated:
            audit: ReviewKind | None = "audit" if is_audited(post.id, audit_rate) else None
            routes.append(Route(post, decision, label=True, review=audit))
        elif i in reviewed:
            routes.append(Route(post, decision, label=False, review="escalation"))
        else:
            routes.append(Route(post, decision, label=True, review=None, unreviewed=True))
    return routes


def summary(decisions: Mapping[str, Decision]) -> Decision:
    """One post's tasks as one decision for routing: escalated if any task is, as confident as
    its least confident escalated task (or task, when none is)."""
    escalated = [d for d in decisions.values() if d.escalated]
    weakest = min(escalated or decisions.values(), key=lambda d: d.confidence)
    return Decision("", weakest.confidence, (), bool(escalated))


def route_tasks(
    posts: Sequence[Post],
    decisions: Sequence[Mapping[str, Decision]],
    audit_rate: float,
    allowance: ReviewAllowance | None = None,
) -> list[Route]:
    """``route`` for posts decided on several tasks: one review per post at most."""
    return route(posts, [summary(d) for d in decisions], audit_rate, allowance)
