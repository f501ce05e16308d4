"""An OpenAI-compatible chat-completions server for tests, the demo and benchmarks.

It serves ``POST /v1/chat/completions`` on a loopback port from a background thread, so sync
tests, async tests and subprocesses can all talk to it over real HTTP with the real client.
Answers are scripted: a function from the request to a :class:`Reply`, e.g.
:func:`answers_by_text` (the label per post text, read from the prompt's POST block; or per
text ``{task: label}``, of which a multi-task request gets exactly the tasks it asks) or
:func:`answers_by_substring`. Faults are injected either as a queue of forced replies (429 with
Retry-After, 500, slow responses, malformed bodies, off-label answers, missing usage) or as an
outage during which every request gets 503. Every request is recorded with the usage it was
billed, so tests can check prompts and costs. There is deliberately no mode that answers from
gold labels: the prompt never carries them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from jurystream.models.reviewer.cost import estimate_tokens
from jurystream.models.reviewer.prompt import extract_post, extract_tasks
from jurystream.stream.lifecycle import Service


@dataclass(frozen=True)
class Reply:
    """One scripted response. ``content`` is the assistant message; ``raw_body`` replaces the
    whole HTTP body (for malformed responses); ``usage=False`` leaves usage out."""

    content: str | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    usage: bool = True
    raw_body: str | None = None


def label_reply(label: str, confidence: float = 0.9) -> Reply:
    return Reply(json.dumps({"label": label, "confidence": confidence}))


def tasks_reply(labels: Mapping[str, str], confidence: float = 0.9) -> Reply:
    """A multi-task answer: ``{task: {"label": ..., "confidence": ...}}``."""
    return Reply(
        json.dumps({t: {"label": label, "confidence": confidence} for t, label in labels.items()})
    )


def rate_limited(retry_after_s: float = 1.0) -> Reply:
    return Reply(status=429, headers={"Retry-After": f"{retry_after_s:g}"})


def server_error(status: int = 500) -> Reply:
    return Reply(status=status)


@dataclass(frozen=True)
class Recorded:
    """A request as received, when, what status it got and the usage billed (if any)."""

    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def system(self) -> str:
        return str(self.body["messages"][0]["content"])

    @property
    def user(self) -> str:
        return str(self.body["messages"][-1]["content"])


Answer = Callable[[dict[str, Any]], Reply | str]


def _user_content(body: Mapping[str, Any]) -> str:
    return "".join(
        str(m.get("content") or "") for m in body.get("messages", []) if m.get("role") == "user"
    )


def asked_tasks(body: Mapping[str, Any]) -> list[str] | None:
    """The tasks a multi-task request asks: the properties of its answer schema, or (without
    one: json_object or text endpoints) the task list of its system message. None: a
    single-task request."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        properties = fmt["json_schema"]["schema"]["properties"]
        return None if set(properties) == {"label", "confidence"} else list(properties)
    system = "".join(
        str(m.get("content") or "") for m in body.get("messages", []) if m.get("role") == "system"
    )
    return extract_tasks(system)


def _no_answer(why: str) -> Reply:
    return Reply(status=400, raw_body=json.dumps({"error": {"message": why}}))


def answers_by_text(
    labels: Mapping[str, str | Mapping[str, str]], confidence: float = 0.9
) -> Answer:
    """Answer the label scripted for the post text in the prompt's POST block. A text scripted
    as ``{task: label}`` answers multi-task requests with exactly the asked tasks (a 400 if one
    of them has no scripted label)."""

    def answer(body: dict[str, Any]) -> Reply:
        text = extract_post(_user_content(body))
        if text not in labels:
            return _no_answer("no scripted answer")
        scripted, tasks = labels[text], asked_tasks(body)
        if tasks is None:
            if not isinstance(scripted, str):
                return _no_answer("a multi-task answer is scripted for a single-task request")
            return label_reply(scripted, confidence)
        if isinstance(scripted, str):
            return _no_answer("a single-task answer is scripted for a multi-task request")
        missing = [t for t in tasks if t not in scripted]
        if missing:
            return _no_answer(f"no scripted answer for tasks {missing}")
        return tasks_reply({t: scripted[t] for t in tasks}, confidence)

    return answer


def answers_by_substring(mapping: Mapping[str, str], confidence: float = 0.9) -> Answer:
    """Answer the label of the first key found in the user message."""

    def answer(body: dict[str, Any]) -> Reply:
        user = _user_content(body)
        for needle, label in mapping.items():
            if needle in user:
                return label_reply(label, confidence)
        return Reply(status=400, raw_body='{"error": {"message": "no scripted answer"}}')

    return answer


def _invalid_request(message: str, param: str, code: str) -> Reply:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return Reply(status=400, raw_body=json.dumps({"error": error}))


def reasoning_model_refusal(body: Mapping[str, Any]) -> Reply | None:
    """The 400 a reasoning model answers to a chat-model request, or None if it accepts it."""
    if "max_tokens" in body:
        return _invalid_request(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    temperature = body.get("temperature", 1)
    if temperature != 1:
        return _invalid_request(
            f"Unsupported value: 'temperature' does not support {temperature} with this model. "
            "Only the default (1) value is supported.",
            "temperature",
            "unsupported_value",
        )
    return None


class OpenAIServer(Service):
    """The server; ``start()`` returns the base URL to give the client (``…/v1``)."""

    def __init__(
        self,
        answer: Answer | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        strict: bool = False,
    ) -> None:
        self.answer = answer
        # Strict: refuse what OpenAI's reasoning models (o-series, gpt-5) refuse, with the
        # API's own status, error shape and wording.
        self.strict = strict
        self.host = host
        self.port = port
        self.requests: list[Recorded] = []
        self._forced: deque[Reply] = deque()
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests served at once (checks client concurrency)
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # --- scripting ------------------------------------------------------------------------------

    def inject(self, *replies: Reply) -> None:
        """The next requests get these replies, in order, whatever they ask."""
        with self._lock:
            self._forced.extend(replies)

    def outage(self, seconds: float) -> None:
        """Every request gets 503 for the next ``seconds``."""
        with self._lock:
            self._down_until = time.monotonic() + seconds

    def reset(self) -> None:
        with self._lock:
            self._forced.clear()
            self._down_until = 0.0
            self.requests.clear()

    def billed(self) -> list[Recorded]:
        """Requests that returned a usage block (what a provider would charge)."""
        with self._lock:
            return [r for r in self.requests if r.prompt_tokens or r.completion_tokens]

    # --- HTTP -----------------------------------------------------------------------------------

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if time.monotonic() < self._down_until:
                return Reply(status=503, raw_body='{"error": {"message": "down for maintenance"}}')
            if self._forced:
                return self._forced.popleft()
        if self.answer is None:
            return Reply(status=400, raw_body='{"error": {"message": "no answer scripted"}}')
        reply = self.answer(body)
        return Reply(reply) if isinstance(reply, str) else reply

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        arrived = time.time()
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"error": {"message": "body is not JSON"}}, status=400)
        refusal = reasoning_model_refusal(body) if self.strict else None
        reply = refusal or self._next_reply(body)
        prompt_tokens = completion_tokens = 0
        if reply.raw_body is not None or reply.status != 200:
            text = reply.raw_body if reply.raw_body is not None else '{"error": {"message": "x"}}'
            response = web.Response(
                text=text,
                status=reply.status,
                headers=dict(reply.headers),
                content_type="application/json",
            )
        else:
            payload: dict[str, Any] = {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(arrived),
                "model": body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.content},
                        "finish_reason": "stop",
                    }
                ],
            }
            if reply.usage:
                chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
                prompt_tokens = estimate_tokens(chars)
                completion_tokens = estimate_tokens(len(reply.content or ""))
                payload["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                }
            response = web.json_response(payload, headers=dict(reply.headers))
        # Recorded on arrival, with the usage the response will report, so that tests see a
        # slow request even while (or after) the client times out on it.
        recorded = Recorded(
            body, dict(request.headers), arrived, reply.status, prompt_tokens, completion_tokens
        )
        with self._lock:
            self.requests.append(recorded)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)
        finally:
            with self._lock:
                self.in_flight -= 1
        return response

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> str:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start_site())
            except BaseException as exc:  # reported to the caller of start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._stop_site())
            loop.close()

        self._thread = threading.Thread(target=serve, name="openai-test-server", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if failure:
            raise RuntimeError(f"test OpenAI server did not start: {failure[0]!r}")
        return self.base_url

    async def _start_site(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)  # the port the OS picked for port 0
        if not sockets:
            raise RuntimeError("aiohttp site has no listening socket")
        self.port = int(sockets[0].getsockname()[1])

    async def _stop_site(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._loop = None
        self._thread = None


def main() -> None:
    """``python -m jurystream.testing.openai_server --answers FILE``: serve scripted labels
    (a JSON object mapping post text to label, or to ``{task: label}`` for multi-task
    deployments) until interrupted, for the demo and benchmarks."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--answers", required=True, help="JSON file: {post text: label or {task: label}}"
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--strict", action="store_true", help="refuse what reasoning models refuse")
    args = parser.parse_args()
    with open(args.answers, encoding="utf-8") as fh:
        labels = json.load(fh)
    server = OpenAIServer(answers_by_text(labels), port=args.port, strict=args.strict)
    print(server.start(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
