"""The strict answer parser (pure).

The reviewer must answer one label of the label set, as ``{"label": ..., "confidence": ...}``
(or, for endpoints without JSON output, the bare label alone). Anything else, including a label
in other casing or a label that is not in the set, is an :class:`AnswerError`: the caller asks
again and then parks the case. No answer is ever mapped to a default label.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


class AnswerError(ValueError):
    """The reviewer's answer is not one label of the label set."""


@dataclass(frozen=True, slots=True)
class Answer:
    label: str
    confidence: float | None


def parse_answer(content: str | None, labels: Sequence[str]) -> Answer:
    if content is None or not content.strip():
        raise AnswerError("empty answer")
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if text in labels:
        return Answer(text, None)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnswerError(f"answer is neither JSON nor a label: {content[:80]!r}") from exc
    if not isinstance(data, dict):
        raise AnswerError(f"answer is a JSON {type(data).__name__}, not an object")
    label = data.get("label")
    if not isinstance(label, str):
        raise AnswerError("answer has no string 'label'")
    if label not in labels:
        raise AnswerError(f"answer label {label[:80]!r} is not one of {list(labels)}")
    confidence = data.get("confidence")
    if confidence is None:
        return Answer(label, None)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise AnswerError("answer 'confidence' is not a number")
    if not math.isfinite(confidence) or not 0.0 <= confidence <= 1.0:
        raise AnswerError(f"answer 'confidence' {confidence} is outside [0, 1]")
    return Answer(label, float(confidence))
