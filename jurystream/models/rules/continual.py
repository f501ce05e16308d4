"""The rules of continual learning, as pure functions: when, on what, with which weights, and
whether the result may serve.

- **When** (``round_due``): a round every β new hard samples, or every T minutes if at least one
  new sample arrived; a timer alone never retrains on nothing.
- **On what** (``replay_sample``): the new hard samples plus a replay sample of earlier data (the
  seed set and the hard samples of earlier rounds), so a juror refined on today's hard cases
  does not forget what it knew (AutoAnnotator's staged fine-tuning).
- **Weights** (``example_weight``, ``reliability``): gold labels (seed set, feedback) weigh 1;
  a reviewer's label weighs its measured reliability times its confidence. Reliability is the
  posterior mean of a Beta prior updated with how often that reviewer agreed with gold
  feedback on the same messages, so it starts at the configured prior, converges to the
  measured agreement and stays strictly below 1: gold always counts most (LLMaAA's noisy-label
  weighting, with a measured rather than learned weight).
- **Gate** (``gate``): a candidate worse than the serving version on held-out gold by more than
  the tolerance is rejected.

Kept free of I/O so each rule is unit-tested on its own; the training round applies them
(``rounds.py``).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

GOLD_WEIGHT = 1.0
Origin = Literal["seed", "hard", "audit", "gold"]
REVIEWED_ORIGINS = ("hard", "audit")  # labels a reviewer gave (escalations and audits)
GOLD_ORIGINS = ("seed", "gold")  # labels people (or the ground truth) gave


@dataclass(frozen=True)
class Example:
    """One training example as the store keeps it.

    ``origin`` says where it came from (seed set, a reviewed hard sample, a reviewed audit
    sample — a random accepted post —, gold feedback that carried its text); ``source`` is who
    labeled it (the hard sample's ``label_source``, e.g. ``oracle`` or
    ``reviewer:openai:gpt-4o-mini``); ``confidence`` is the labeler's own.
    """

    id: str
    text: str
    label: str
    origin: Origin
    source: str
    confidence: float = 1.0


def round_due(
    new_samples: int, every_samples: int, seconds_since_last: float, every_minutes: float
) -> str | None:
    """Why a round should start now ("samples" or "timer"), or None if it should not."""
    if new_samples >= every_samples:
        return "samples"
    if new_samples > 0 and seconds_since_last >= every_minutes * 60:
        return "timer"
    return None


def replay_sample(
    earlier: Sequence[Example], new_count: int, ratio: float, seed: int
) -> list[Example]:
    """``ratio`` × ``new_count`` earlier examples (all of them if fewer), stratified by label.

    Stratified so the replay keeps the label mix of what the juror learned before, even when
    the hard samples of a round are all of one label.
    """
    want = min(len(earlier), round(new_count * ratio))
    if want <= 0:
        return []
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {}
    for example in earlier:
        by_label.setdefault(example.label, []).append(example)
    chosen: list[Example] = []
    for label in sorted(by_label):
        pool = by_label[label]
        chosen.extend(rng.sample(pool, min(len(pool), want * len(pool) // len(earlier))))
    picked = {id(e) for e in chosen}
    rest = [e for e in earlier if id(e) not in picked]
    chosen.extend(rng.sample(rest, want - len(chosen)))
    return chosen


def reliability(agree: int, total: int, prior: float, strength: float) -> float:
    """Posterior mean accuracy of a labeler: Beta(prior·strength, (1−prior)·strength) + data."""
    if not 0 <= agree <= total:
        raise ValueError(f"agree={agree} must be within 0..total={total}")
    return (agree + prior * strength) / (total + strength)


def reliabilities(
    agreement: Mapping[str, tuple[int, int]], prior: float, strength: float
) -> dict[str, float]:
    """Reliability per label source from ``{source: (agreed with gold, judged)}``."""
    return {
        source: reliability(agree, total, prior, strength)
        for source, (agree, total) in agreement.items()
    }


def example_weight(
    example: Example, reliability_of: Mapping[str, float], default_reliability: float
) -> float:
    """Gold labels weigh ``GOLD_WEIGHT``; a reviewer's, reliability × its own confidence."""
    if example.origin in GOLD_ORIGINS:
        return GOLD_WEIGHT
    trust = reliability_of.get(example.source, default_reliability)
    confidence = min(1.0, max(0.0, example.confidence))
    return GOLD_WEIGHT * trust * confidence


def held_out(example_id: str, share: float) -> bool:
    """Whether a gold record belongs to the held-out gate set (stable across restarts)."""
    digest = hashlib.sha256(example_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass(frozen=True)
class TrainingSet:
    """Texts, label ids and per-example weights, with an account of what went in."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    weights: tuple[float, ...]
    summary: dict[str, Any] = field(default_factory=dict)


def training_set(
    examples: Iterable[Example],
    label_names: Sequence[str],
    gold_labels: Mapping[str, str],
    reliability_of: Mapping[str, float],
    default_reliability: float,
) -> TrainingSet:
    """Deduplicate by (origin, id), apply gold overrides, map labels to ids, weigh.

    A hard sample whose message also got gold feedback is trained on the gold label with gold
    weight: the person outranks the reviewer. Examples with a label outside ``label_names``
    are left out and counted (a reviewer or feed with another label set must not crash a round).
    """
    index = {name: i for i, name in enumerate(label_names)}
    seen: set[tuple[str, str]] = set()
    texts: list[str] = []
    labels: list[int] = []
    weights: list[float] = []
    origins: Counter[str] = Counter()
    unknown: Counter[str] = Counter()  # label names outside ``label_names``: matched by name
    skipped = overridden = 0
    for example in examples:
        if (example.origin, example.id) in seen:
            continue
        seen.add((example.origin, example.id))
        gold = gold_labels.get(example.id) if example.origin in REVIEWED_ORIGINS else None
        if gold is not None:
            overridden += gold != example.label
            example = Example(example.id, example.text, gold, "gold", "gold")
        if example.label not in index:
            skipped += 1
            unknown[example.label] += 1
            continue
        texts.append(example.text)
        labels.append(index[example.label])
        weights.append(example_weight(example, reliability_of, default_reliability))
        origins[example.origin] += 1
    summary = {
        "examples": len(texts),
        "by_origin": dict(sorted(origins.items())),
        "label_counts": {name: labels.count(i) for i, name in enumerate(label_names)},
        "skipped_unknown_label": skipped,
        "unknown_labels": dict(sorted(unknown.items())),
        "gold_overrides": overridden,
        "mean_weight": round(sum(weights) / len(weights), 4) if weights else None,
    }
    return TrainingSet(tuple(texts), tuple(labels), tuple(weights), summary)


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate may replace the serving version, and the numbers behind it."""

    accepted: bool
    metric: str
    candidate: float
    serving: float
    tolerance: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "metric": self.metric,
            "candidate": self.candidate,
            "serving": self.serving,
            "tolerance": self.tolerance,
            "reason": self.reason,
        }


def gate(
    candidate: Mapping[str, Any],
    serving: Mapping[str, Any],
    tolerance: float,
    metric: str = "accuracy",
) -> GateDecision:
    """Reject a candidate whose ``metric`` on held-out gold is below serving − tolerance.

    A candidate without a number (NaN, missing) is rejected: an unmeasured model never serves.
    """
    cand = float(candidate.get(metric, math.nan))
    serv = float(serving.get(metric, math.nan))
    if math.isnan(cand):
        return GateDecision(False, metric, cand, serv, tolerance, f"candidate has no {metric}")
    if math.isnan(serv):
        return GateDecision(True, metric, cand, serv, tolerance, f"serving has no {metric}")
    delta = cand - serv
    if delta < -tolerance:
        reason = (
            f"{metric} {cand:.4f} is {-delta:.4f} below serving {serv:.4f} (tolerance {tolerance})"
        )
        return GateDecision(False, metric, cand, serv, tolerance, reason)
    reason = f"{metric} {cand:.4f} vs serving {serv:.4f} ({delta:+.4f}, tolerance {tolerance})"
    return GateDecision(True, metric, cand, serv, tolerance, reason)
