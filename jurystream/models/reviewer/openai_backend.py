"""The LLM reviewer: any OpenAI-compatible endpoint through the official ``AsyncOpenAI`` client.

Robustness lives here rather than in the client: the client runs with ``max_retries=0`` and this
backend retries 429, 5xx, timeouts and connection errors itself, with exponential backoff and
full jitter, never sooner than the server's ``Retry-After`` (or ``retry-after-ms``). That way
every attempt passes the budget and is counted in the metrics. Calls are bounded by a semaphore
(``concurrency``). The API key is read from the environment variable named in the settings and
handed to the client only; it is never put in a message, a log line or an exception.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI

from jurystream.config import ReviewerSettings
from jurystream.models.reviewer import prompt
from jurystream.models.reviewer.base import Case, Failure, Outcome, Verdict
from jurystream.models.reviewer.budget import Budget
from jurystream.models.reviewer.cost import (
    CHARS_PER_TOKEN_UPPER,
    Price,
    estimate_tokens,
    price_for,
)
from jurystream.models.reviewer.hooks import NO_HOOKS, ReviewHooks
from jurystream.models.reviewer.parsing import AnswerError, parse_answer
from jurystream.models.reviewer.spend import Peers

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 600.0

# OpenAI's reasoning models: o1, o3, o4-mini … and the gpt-5 family (an "openai/" style prefix
# from a router is allowed).
_REASONING = re.compile(r"(?:^|/)(?:o\d+(?:$|[-.])|gpt-5)")


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` rejects ``max_tokens`` and any temperature but the default."""
    return _REASONING.search(model.lower()) is not None


def request_shape(settings: ReviewerSettings) -> dict[str, Any]:
    """The token limit and temperature parameters to send, as the settings resolve them."""
    reasoning = is_reasoning_model(settings.model)
    param = settings.token_limit_param
    if param == "auto":
        param = "max_completion_tokens" if reasoning else "max_tokens"
    out: dict[str, Any] = {
        param: settings.reasoning_output_tokens if reasoning else settings.max_output_tokens
    }
    temperature = settings.temperature
    if temperature == "auto":
        temperature = "omit" if reasoning else 0.0
    if temperature != "omit":
        out["temperature"] = temperature
    return out


class ReviewerConfigError(ValueError):
    """The reviewer cannot start with these settings (the message says which one to set)."""


class _Transient(Exception):
    """An attempt that may succeed if repeated (429, 5xx, timeout, connection error)."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class _Reply:
    content: str | None
    cost_usd: float


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, or ``Retry-After`` as seconds or
    an HTTP date. None when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    if "retry-after-ms" in lowered:
        try:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(
    attempt: int,
    base_s: float,
    max_s: float,
    retry_after_s: float | None,
    rng: random.Random,
) -> float:
    """Full-jitter exponential backoff, but never less than what the server asked for."""
    delay = rng.uniform(0.0, min(max_s, base_s * 2**attempt))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
    return delay


class OpenAIBackend:
    """The ``openai`` tier. ``name`` is what labels report, e.g. ``reviewer:openai:gpt-4o-mini``."""

    def __init__(
        self,
        settings: ReviewerSettings,
        labels: Sequence[str],
        *,
        demonstrations: Callable[[str], Sequence[prompt.Demonstration]] | None = None,
        hooks: ReviewHooks = NO_HOOKS,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        peers: Peers | None = None,
    ) -> None:
        if not labels:
            raise ReviewerConfigError(
                "the openai reviewer needs the label set: set reviewer.label_descriptions "
                "(label -> description)"
            )
        key = os.environ.get(settings.api_key_env)
        if not key:
            raise ReviewerConfigError(
                f"the openai reviewer reads its API key from ${settings.api_key_env}, which is "
                "not set (choose another variable with reviewer.api_key_env)"
            )
        self.settings = settings
        self.labels = tuple(labels)
        self.name = f"reviewer:openai:{settings.model}"
        self.price: Price = price_for(settings.prices, settings.model)
        self.budget = Budget.from_limits(
            settings.budget_per_hour_usd,
            settings.budget_per_day_usd,
            settings.budget_hour_window_s,
            settings.budget_day_window_s,
        )
        self._peers = peers
        if peers is not None:  # one budget for every reviewer replica (spend.py)
            self.budget.others = peers.others
            self.budget.resume(peers.mine(), clock())
        self._client = AsyncOpenAI(
            api_key=key,
            base_url=settings.base_url,
            timeout=settings.timeout_s,
            max_retries=0,
        )
        self._demonstrations = demonstrations
        self._hooks = hooks
        self._clock = clock
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._system = prompt.system_message(
            settings.task, self.labels, settings.label_descriptions
        )
        self._shape = request_shape(settings)
        self._output_tokens = next(
            v for k, v in self._shape.items() if k in ("max_tokens", "max_completion_tokens")
        )
        self._response_format: dict[str, Any] | None = {
            "json_schema": prompt.answer_schema(self.labels),
            "json_object": {"type": "json_object"},
            "text": None,
        }[settings.response_format]

    def __repr__(self) -> str:  # the client's repr is not ours to trust with the key
        return f"OpenAIBackend(model={self.settings.model!r}, base_url={self.settings.base_url!r})"

    def messages(self, case: Case) -> list[dict[str, str]]:
        demos = self._demonstrations(case.text) if self._demonstrations else ()
        return [
            {"role": "system", "content": self._system},
            {"role": "user", "content": prompt.user_message(case, demos)},
        ]

    async def review(self, case: Case) -> Outcome:
        msgs = self.messages(case)
        transient = invalid = 0
        spent = 0.0
        while True:
            try:
                reply = await self._attempt(msgs)
            except _Transient as exc:
                if transient >= self.settings.max_retries:
                    self._hooks.called(self.name, "error")
                    return Failure(self.name, f"{exc.reason} (after {transient + 1} attempts)")
                self._hooks.called(self.name, "retry")
                delay = backoff_delay(
                    transient,
                    self.settings.backoff_base_s,
                    self.settings.backoff_max_s,
                    exc.retry_after_s,
                    self._rng,
                )
                transient += 1
                log.info("case %s: %s; retrying in %.2fs", case.id, exc.reason, delay)
                await asyncio.sleep(delay)
                continue
            except openai.APIStatusError as exc:
                # 400/401/403/404/422: repeating the same request cannot help; the case is
                # parked until someone fixes the endpoint, model or key.
                self._hooks.called(self.name, "error")
                reason = f"HTTP {exc.status_code} from the endpoint"
                if exc.status_code == 400:  # says which parameter to change; 401/403 may echo
                    # part of the key, so only a bad request's message is kept
                    reason += f": {str(exc.message)[:300]}"
                    if "max_tokens" in reason or "temperature" in reason:
                        reason += " (see reviewer.token_limit_param and reviewer.temperature)"
                return Failure(self.name, reason)
            spent += reply.cost_usd
            try:
                answer = parse_answer(reply.content, self.labels)
            except AnswerError as exc:
                self._hooks.called(self.name, "invalid")
                if invalid >= self.settings.invalid_answer_retries:
                    return Failure(self.name, f"invalid answer after {invalid + 1} tries: {exc}")
                invalid += 1
                continue
            self._hooks.called(self.name, "ok")
            confidence = 1.0 if answer.confidence is None else answer.confidence
            return Verdict(answer.label, confidence, self.name, spent)

    async def _reserve(self, amount: float) -> None:
        """Wait until the budget has room for ``amount``; the case waits, it is not dropped."""
        while (wait := self.budget.try_reserve(amount, self._clock())) > 0:
            self._publish_budget(exhausted=True)
            log.warning("reviewer budget exhausted; next call in %.1fs", wait)
            await asyncio.sleep(wait + 0.01)
        self._publish_budget(exhausted=False)
        await self._share()

    async def _share(self) -> None:
        """Tell the other replicas what this one has used; awaited on a reservation, so they
        count it before the call it pays for starts."""
        if self._peers is not None:
            await self._peers.publish(self.budget.reports(self._clock()))

    def _publish_budget(self, exhausted: bool) -> None:
        names = [
            name
            for name, limit in (
                ("hour", self.settings.budget_per_hour_usd),
                ("day", self.settings.budget_per_day_usd),
            )
            if limit is not None
        ]
        remaining = dict(zip(names, self.budget.remaining(self._clock()), strict=True))
        self._hooks.budget(remaining, exhausted)

    async def _attempt(self, msgs: list[dict[str, str]]) -> _Reply:
        chars = sum(len(m["content"]) for m in msgs)
        reserved = self.price.cost(
            estimate_tokens(chars, CHARS_PER_TOKEN_UPPER), self._output_tokens
        )
        async with self._slots:
            await self._reserve(reserved)
            cost = 0.0
            try:
                kwargs: dict[str, Any] = {
                    "model": self.settings.model,
                    "messages": msgs,
                    **self._shape,
                }
                if self._response_format is not None:
                    kwargs["response_format"] = self._response_format
                try:
                    response = await self._client.chat.completions.create(**kwargs)
                except openai.RateLimitError as exc:
                    raise _Transient(
                        "rate limited (429)", retry_after_seconds(exc.response.headers)
                    ) from None
                except openai.APIStatusError as exc:
                    if exc.status_code >= 500 or exc.status_code in (408, 409):
                        raise _Transient(
                            f"server error ({exc.status_code})",
                            retry_after_seconds(exc.response.headers),
                        ) from None
                    raise
                except openai.APITimeoutError:
                    raise _Transient(f"timeout after {self.settings.timeout_s}s") from None
                except openai.APIConnectionError as exc:
                    raise _Transient(f"connection error: {type(exc.__cause__).__name__}") from None
                except (openai.APIResponseValidationError, ValueError):
                    # A 200 whose body is not the JSON the API promises (the client raises
                    # JSONDecodeError): a broken proxy or endpoint, worth asking again.
                    raise _Transient("malformed response body") from None
                choices = getattr(response, "choices", None)
                if not choices:
                    raise _Transient("response without choices")
                usage = getattr(response, "usage", None)
                if usage is not None:
                    input_tokens, output_tokens = usage.prompt_tokens, usage.completion_tokens
                else:
                    # No usage block: bill an estimate so the budget still counts the call.
                    content_len = len(choices[0].message.content or "")
                    input_tokens, output_tokens = (
                        estimate_tokens(chars),
                        estimate_tokens(content_len),
                    )
                    log.warning("response without usage; billing an estimate")
                cost = self.price.cost(input_tokens, output_tokens)
                self._hooks.billed(self.name, input_tokens, output_tokens, cost)
                return _Reply(choices[0].message.content, cost)
            finally:
                self.budget.settle(reserved, cost, self._clock())
                await self._share()

    async def close(self) -> None:
        await self._client.close()
