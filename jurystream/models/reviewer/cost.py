"""Prices and token arithmetic (pure).

Prices are USD per 1M tokens per model, from ``ReviewerSettings.prices``. A model without a
price is refused when the backend is built: spending money that the budget cannot count would
make the budget a lie.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class PriceError(ValueError):
    """The price table has no (valid) entry for the model."""


@dataclass(frozen=True, slots=True)
class Price:
    input_per_m: float
    output_per_m: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for one call."""
        return (input_tokens * self.input_per_m + output_tokens * self.output_per_m) / 1_000_000


def price_for(prices: Mapping[str, Mapping[str, float]], model: str) -> Price:
    entry = prices.get(model)
    if entry is None:
        known = ", ".join(sorted(prices)) or "none"
        raise PriceError(
            f"no price for model {model!r} (known: {known}); add "
            f"reviewer.prices.{model} = {{input = ..., output = ...}} in USD per 1M tokens"
        )
    try:
        price = Price(float(entry["input"]), float(entry["output"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise PriceError(f"price of {model!r} needs numeric 'input' and 'output'") from exc
    if price.input_per_m < 0 or price.output_per_m < 0:
        raise PriceError(f"price of {model!r} is negative")
    return price


# Conservative: real tokenizers give about 4 characters per token for English; counting 2
# keeps budget reservations above what a call actually costs for almost any text.
CHARS_PER_TOKEN_UPPER = 2.0
CHARS_PER_TOKEN_TYPICAL = 4.0


def estimate_tokens(chars: int, chars_per_token: float = CHARS_PER_TOKEN_TYPICAL) -> int:
    """Token count estimated from a character count (used when a response has no usage)."""
    return max(1, math.ceil(chars / chars_per_token)) if chars > 0 else 0


def prompt_tokens(messages: Sequence[Mapping[str, str]], per_message: int = 0) -> int:
    """Input tokens of a chat request, estimated as the test server bills them; real APIs
    add a few tokens of framing ``per_message``."""
    return estimate_tokens(sum(len(m["content"]) for m in messages)) + per_message * len(messages)


@dataclass(frozen=True, slots=True)
class CallTokens:
    """Tokens of one reviewer call: the prompt and the expected answer."""

    input: int
    output: int

    @classmethod
    def of(
        cls, messages: Sequence[Mapping[str, str]], answer: str, per_message: int = 0
    ) -> CallTokens:
        return cls(prompt_tokens(messages, per_message), estimate_tokens(len(answer)))

    def cost(self, price: Price | None = None) -> float:
        """USD under ``price``; without one, tokens (input and output weigh the same)."""
        if price is None:
            return float(self.input + self.output)
        return price.cost(self.input, self.output)


def multitask_cost_ratio(
    multi: CallTokens, singles: Sequence[CallTokens], price: Price | None = None
) -> float:
    """What one multi-task call costs for a post, as a share of one single-task call per
    escalated task (``singles``): USD under ``price``, else tokens."""
    baseline = sum(call.cost(price) for call in singles)
    if baseline <= 0:
        raise ValueError("the single-task calls cost nothing to compare with")
    return multi.cost(price) / baseline
