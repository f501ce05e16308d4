"""Prices and token arithmetic (pure).

Prices are USD per 1M tokens per model, from ``ReviewerSettings.prices``. A model without a
price is refused when the backend is built: spending money that the budget cannot count would
make the budget a lie.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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
