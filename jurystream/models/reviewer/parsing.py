"""The strict answer parser (pure).

The reviewer must answer one label of the label set, as ``{"label": ..., "confidence": ...}``
(or, for endpoints without JSON output, the bare label alone). Anything else, including a label
in other casing or a label that is not in the set, is an :class:`AnswerError`: the caller asks
again and then parks the case. No answer is ever mapped to a default label.

A multi-task answer is a JSON object with exactly one ``{"label", "confidence"}`` object per
asked task; one missing or off-label task makes the whole answer an :class:`AnswerError` (asked
again, then parked), never a partial verdict.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


class AnswerError(ValueError):
    """The reviewer's answer is not one label of the label set."""


@dataclass(frozen=True, slots=True)
class Answer:
    label: str
    confidence: float | None


def _unfenced(content: str | None) -> str:
    if content is None or not content.strip():
        raise AnswerError("empty answer")
    text = content.strip()
    fenced = _FENCE.match(text)
    return fenced.group(1).strip() if fenced else text


def _object(text: str, content: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnswerError(f"answer is neither JSON nor a label: {content[:80]!r}") from exc
    if not isinstance(data, dict):
        raise AnswerError(f"answer is a JSON {type(data).__name__}, not an object")
    return data


def _labeled(data: Mapping[str, Any], labels: Sequence[str], where: str = "answer") -> Answer:
    label = data.get("label")
    if not isinstance(label, str):
        raise AnswerError(f"{where} has no string 'label'")
    if label not in labels:
        raise AnswerError(f"{where} label {label[:80]!r} is not one of {list(labels)}")
    confidence = data.get("confidence")
    if confidence is None:
        return Answer(label, None)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise AnswerError(f"{where} 'confidence' is not a number")
    if not math.isfinite(confidence) or not 0.0 <= confidence <= 1.0:
        raise AnswerError(f"{where} 'confidence' {confidence} is outside [0, 1]")
    return Answer(label, float(confidence))


def parse_answer(content: str | None, labels: Sequence[str]) -> Answer:
    text = _unfenced(content)
    if text in labels:
        return Answer(text, None)
    return _labeled(_object(text, content or ""), labels)


def parse_multitask_answer(
    content: str | None, labels: Mapping[str, Sequence[str]]
) -> dict[str, Answer]:
    """The answer per asked task (``labels``: task -> its label set). Every asked task must be
    there with a label of its set, and no other key: an answer about other tasks means the
    model misread the question."""
    text = _unfenced(content)
    data = _object(text, content or "")
    missing = [task for task in labels if task not in data]
    if missing:
        raise AnswerError(f"answer has no entry for tasks {missing}")
    extra = [key[:40] for key in data if key not in labels]
    if extra:
        raise AnswerError(f"answer has entries for tasks not asked: {extra}")
    answers: dict[str, Answer] = {}
    for task, task_labels in labels.items():
        entry = data[task]
        if not isinstance(entry, dict):
            raise AnswerError(f"answer for task {task!r} is not an object")
        answers[task] = _labeled(entry, task_labels, f"answer for task {task!r}")
    return answers
