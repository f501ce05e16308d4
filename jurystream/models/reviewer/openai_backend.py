"""The LLM reviewer: any OpenAI-compatible endpoint through the official ``AsyncOpenAI`` client.

Robustness lives here rather than in the client: the client runs with ``max_retries=0`` and this
backend retries 429, 5xx, timeouts and connection errors itself, with exponential backoff and
full jitter, never sooner than the server's ``Retry-After`` (or ``retry-after-ms``). That way
every attempt passes the budget and is counted in the metrics. Calls are bounded by a semaphore
(``concurrency``). The API key is read from the environment variable named in the settings and
handed to the client only; it is never put in a message, a log line or an exception.

A multi-task case (``Case.tasks``) is one request for all its asked tasks: the multi-task
messages and schema of ``prompt``, demonstrations from each task's own gold pool, and a token
limit that grows by ``max_output_tokens`` per task beyond the first.
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
from jurystream.models.reviewer.base import (
    Case,
    Failure,
    Outcome,
    TaskSpec,
    TaskVerdict,
    UnknownTaskError,
    Verdict,
    asked_specs,
)
from jurystream.models.reviewer.budget import Budget
from jurystream.models.reviewer.cost import (
    CHARS_PER_TOKEN_UPPER,
    Price,
    estimate_tokens,
    price_for,
)
from jurystream.models.reviewer.hooks import NO_HOOKS, ReviewHooks
from jurystream.models.reviewer.parsing import (
    Answer,
    AnswerError,
    parse_answer,
    parse_multitask_answer,
)
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


def _confidence(answer: Answer) -> float:
    """An answer without a confidence (a bare label) is taken as sure."""
    return 1.0 if answer.confidence is None else answer.confidence


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


Demonstrations = Callable[[str], Sequence[prompt.Demonstration]]


@dataclass(frozen=True, slots=True)
class _Request:
    """What one case sends (the same on every attempt) and how its answer is read."""

    messages: list[dict[str, str]]
    response_format: dict[str, Any] | None
    shape: dict[str, Any]
    output_tokens: int
    labels: Mapping[str, Sequence[str]]  # task -> label set; empty for a single-task case


class OpenAIBackend:
    """The ``openai`` tier. ``name`` is what labels report, e.g. ``reviewer:openai:gpt-4o-mini``.

    ``labels``: the single-task label set; ``tasks``: the task specs of a multi-task deployment
    (``base.task_specs(settings.tasks)``) with ``task_demonstrations`` per task. One of the two
    must be given. ``multitask_k``: at most this many demonstrations per task in a multi-task
    call (None: all the task's k-NN gives, ``reviewer.knn_k``); demonstrations are most of a
    prompt, so this is what sets the multi-task call's cost (BENCHMARKS.md)."""

    def __init__(
        self,
        settings: ReviewerSettings,
        labels: Sequence[str],
        *,
        demonstrations: Demonstrations | None = None,
        tasks: Mapping[str, TaskSpec] | None = None,
        task_demonstrations: Mapping[str, Demonstrations] | None = None,
        multitask_k: int | None = None,
        hooks: ReviewHooks = NO_HOOKS,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        peers: Peers | None = None,
    ) -> None:
        if not labels and not tasks:
            raise ReviewerConfigError(
                "the openai reviewer needs the label set: set reviewer.label_descriptions "
                "(label -> description), or [tasks.<name>] sections with their labels"
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
        self.tasks: dict[str, TaskSpec] = dict(tasks or {})
        self._task_demonstrations = dict(task_demonstrations or {})
        self._multitask_k = multitask_k
        self._systems: dict[tuple[str, ...], str] = {}  # per set of asked tasks, built once
        self._hooks = hooks
        self._clock = clock
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._system = prompt.system_message(
            settings.task, self.labels, settings.label_descriptions
        )
        self._shape = request_shape(settings)
        self._limit_param, self._output_tokens = next(
            (k, v) for k, v in self._shape.items() if k in ("max_tokens", "max_completion_tokens")
        )
        self._response_format = self._format(prompt.answer_schema(self.labels))

    def __repr__(self) -> str:  # the client's repr is not ours to trust with the key
        return f"OpenAIBackend(model={self.settings.model!r}, base_url={self.settings.base_url!r})"

    def _format(self, schema: dict[str, Any]) -> dict[str, Any] | None:
        return {
            "json_schema": schema,
            "json_object": {"type": "json_object"},
            "text": None,
        }[self.settings.response_format]

    def messages(self, case: Case) -> list[dict[str, str]]:
        if case.tasks:
            return self._request(case).messages
        demos = self._demonstrations(case.text) if self._demonstrations else ()
        return [
            {"role": "system", "content": self._system},
            {"role": "user", "content": prompt.user_message(case, demos)},
        ]

    def _request(self, case: Case) -> _Request:
        """Raises :class:`UnknownTaskError` for a task without a spec."""
        if not case.tasks:
            if not self.labels:
                raise UnknownTaskError(
                    "a single-task case, but the reviewer has no single-task label set "
                    "(reviewer.label_descriptions); the case should name its tasks"
                )
            return _Request(
                self.messages(case), self._response_format, self._shape, self._output_tokens, {}
            )
        specs = asked_specs(case, self.tasks)
        key = tuple(spec.name for spec in specs)
        system = self._systems.get(key)
        if system is None:
            system = self._systems[key] = prompt.multitask_system_message(specs)
        demos = {
            spec.name: self._task_demonstrations[spec.name](case.text)[: self._multitask_k]
            for spec in specs
            if spec.name in self._task_demonstrations
        }
        # Each further task answers one more {label, confidence} object.
        output_tokens = self._output_tokens + (len(specs) - 1) * self.settings.max_output_tokens
        return _Request(
            [
                {"role": "system", "content": system},
                {"role": "user", "content": prompt.multitask_user_message(case, specs, demos)},
            ],
            self._format(prompt.multitask_answer_schema(specs)),
            {**self._shape, self._limit_param: output_tokens},
            output_tokens,
            {spec.name: spec.labels for spec in specs},
        )

    def _verdict(self, case: Case, request: _Request, content: str | None, spent: float) -> Verdict:
        """Raises :class:`AnswerError` when the answer is not one label per asked task."""
        if not request.labels:
            answer = parse_answer(content, self.labels)
            return Verdict(answer.label, _confidence(answer), self.name, spent)
        answers = parse_multitask_answer(content, request.labels)
        return Verdict.of_tasks(
            case,
            {t: TaskVerdict(a.label, _confidence(a)) for t, a in answers.items()},
            self.name,
            spent,
        )

    async def review(self, case: Case) -> Outcome:
        try:
            request = self._request(case)
        except UnknownTaskError as exc:  # asking again cannot help: dead-lettered
            self._hooks.called(self.name, "error")
            return Failure(self.name, str(exc), permanent=True)
        transient = invalid = 0
        spent = 0.0
        while True:
            try:
                reply = await self._attempt(request)
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
                verdict = self._verdict(case, request, reply.content, spent)
            except AnswerError as exc:
                self._hooks.called(self.name, "invalid")
                if invalid >= self.settings.invalid_answer_retries:
                    return Failure(self.name, f"invalid answer after {invalid + 1} tries: {exc}")
                invalid += 1
                continue
            self._hooks.called(self.name, "ok")
            return verdict

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

    async def _attempt(self, request: _Request) -> _Reply:
        msgs = request.messages
        chars = sum(len(m["content"]) for m in msgs)
        reserved = self.price.cost(
            estimate_tokens(chars, CHARS_PER_TOKEN_UPPER), request.output_tokens
        )
        async with self._slots:
            await self._reserve(reserved)
            cost = 0.0
            try:
                kwargs: dict[str, Any] = {
                    "model": self.settings.model,
                    "messages": msgs,
                    **request.shape,
                }
                if request.response_format is not None:
                    kwargs["response_format"] = request.response_format
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
