"""What to send to review when the review budget cannot cover every escalation.

LLMaAA's selection: the reviews a budget pays for go to the most informative escalations
first: uncertain (the jury's confidence is low) and diverse (not near-duplicates of what is
already being reviewed: a raid of copy-pasted posts should cost one review, not fifty). The
rest keep the jury's best guess, flagged as unreviewed, so nothing waits for a review that will
never be paid for.

The budget is a share of posts (``jury.review_budget``), kept as a token bucket per worker:
every post read earns that share of a review, every review spends one, and unspent credit is
capped so a quiet hour cannot be spent in one burst.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> frozenset[str]:
    """The word set a diversity comparison uses (lower-cased; cheap and language-agnostic)."""
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def select_informative(
    uncertainty: Sequence[float], texts: Sequence[frozenset[str]], k: int
) -> list[int]:
    """Indices of ``k`` items by greedy uncertainty × (1 − similarity to those chosen).

    Ties go to the earlier item, so the choice is deterministic for a replayed batch.
    """
    if len(uncertainty) != len(texts):
        raise ValueError(f"{len(uncertainty)} uncertainties for {len(texts)} texts")
    chosen: list[int] = []
    left = list(range(len(uncertainty)))
    while left and len(chosen) < k:

        def score(i: int) -> float:
            overlap = max((jaccard(texts[i], texts[j]) for j in chosen), default=0.0)
            return uncertainty[i] * (1.0 - overlap)

        best = max(left, key=lambda i: (score(i), -i))
        chosen.append(best)
        left.remove(best)
    return sorted(chosen)


@dataclass
class ReviewAllowance:
    """Review credit of one worker: ``rate`` reviews earned per post, at most ``burst`` held."""

    rate: float
    burst: float = 20.0
    credit: float = 1.0  # start able to review the first hard post

    def earn(self, posts: int) -> None:
        self.credit = min(self.burst, self.credit + self.rate * posts)

    def grant(self, wanted: int) -> int:
        """How many of ``wanted`` reviews the credit pays for now (and spend it)."""
        granted = min(wanted, int(self.credit))
        self.credit -= granted
        return granted
