"""Multi-task review through every tier: the openai backend over real HTTP against the test
server (one request per post for all its escalated tasks), the oracle and simulated reviewers
per task, the local tier forwarding, and a chain built from ``[tasks.<name>]`` settings."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from jurystream.bench.review_cost import TWEETEVAL_TASKS
from jurystream.config import ReviewerSettings, TaskSettings
from jurystream.exporters.metrics import ReviewerMetrics
from jurystream.models.reviewer.base import (
    Case,
    Failure,
    Forward,
    TaskQuestion,
    TaskVerdict,
    Verdict,
)
from jurystream.models.reviewer.chain import build_chain
from jurystream.models.reviewer.cost import prompt_tokens
from jurystream.models.reviewer.hooks import NO_HOOKS, ReviewHooks
from jurystream.models.reviewer.local import LocalBackend
from jurystream.models.reviewer.openai_backend import Demonstrations, OpenAIBackend
from jurystream.models.reviewer.oracle import OracleBackend, SimulatedBackend
from jurystream.models.reviewer.prompt import Demonstration, extract_post
from jurystream.models.rules.voting import Vote
from jurystream.models.serving.juror import load_juror
from jurystream.models.training.datasets import tweeteval_dir
from jurystream.testing.openai_server import (
    OpenAIServer,
    Reply,
    answers_by_text,
    asked_tasks,
    tasks_reply,
)

KEY_ENV = "JURYSTREAM_TEST_OPENAI_KEY"
PRICES = {"test-model": {"input": 1.0, "output": 4.0}}
SPECS = dict(TWEETEVAL_TASKS)
NAME = "reviewer:openai:test-model"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")


def _settings(server: OpenAIServer, **overrides: object) -> ReviewerSettings:
    base: dict[str, object] = {
        "chain": ["openai"],
        "base_url": server.base_url,
        "model": "test-model",
        "api_key_env": KEY_ENV,
        "prices": PRICES,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.2,
        "timeout_s": 2.0,
        "max_retries": 2,
        "invalid_answer_retries": 2,
    }
    base.update(overrides)
    return ReviewerSettings.model_validate(base)


def _case(i: int, *tasks: str, gold: Mapping[str, str] | None = None) -> Case:
    return Case(
        str(i),
        f"post number {i}",
        meta={"gold": dict(gold)} if gold is not None else {},
        tasks=tuple(TaskQuestion(t, (Vote("tfidf", SPECS[t].labels[0], 0.55),)) for t in tasks),
    )


def _demos(task: str) -> Demonstrations:
    return lambda text: [
        Demonstration(f"{task} example {i}", SPECS[task].labels[1]) for i in range(4)
    ]


def _backend(
    server: OpenAIServer,
    settings: ReviewerSettings | None = None,
    hooks: ReviewHooks = NO_HOOKS,
    task_demonstrations: Mapping[str, Demonstrations] | None = None,
    multitask_k: int | None = None,
) -> OpenAIBackend:
    """A backend of the four TweetEval tasks and no single-task label set."""
    return OpenAIBackend(
        settings or _settings(server),
        (),
        tasks=SPECS,
        task_demonstrations=task_demonstrations,
        multitask_k=multitask_k,
        hooks=hooks,
    )


def _metric(metrics: ReviewerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- openai -----------------------------------------------------------------------------------


async def test_one_request_per_post_answers_every_asked_task(openai_server: OpenAIServer) -> None:
    script = {
        "post number 1": {"offensive": "offensive", "hate": "not-hate", "emotion": "anger"},
        "post number 2": {
            "irony": "irony",
            "emotion": "joy",
            "hate": "hate",
            "offensive": "offensive",
        },
    }
    openai_server.answer = answers_by_text(script)
    metrics = ReviewerMetrics()
    backend = _backend(
        openai_server,
        hooks=metrics,
        task_demonstrations={t: _demos(t) for t in SPECS},
    )
    cases = [_case(1, "emotion", "offensive"), _case(2, "hate", "irony", "offensive", "emotion")]
    try:
        verdicts = await asyncio.gather(*(backend.review(c) for c in cases))
    finally:
        await backend.close()

    assert len(openai_server.requests) == 2  # one per post, not one per task
    first, second = verdicts
    assert isinstance(first, Verdict) and isinstance(second, Verdict)
    assert first.tasks == {
        "emotion": TaskVerdict("anger", 0.9),
        "offensive": TaskVerdict("offensive", 0.9),
    }
    assert (first.label, first.source) == ("anger", NAME)  # the first asked task
    assert {t: v.label for t, v in second.tasks.items()} == {
        "hate": "hate",
        "irony": "irony",
        "offensive": "offensive",
        "emotion": "joy",
    }
    assert second.label == "hate"

    by_post = {extract_post(r.user): r for r in openai_server.requests}
    request = by_post["post number 1"]
    schema = request.body["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == ["offensive", "emotion"]  # the settings' order
    assert schema["properties"]["emotion"]["properties"]["label"]["enum"] == list(
        SPECS["emotion"].labels
    )
    assert "hate" not in request.system and "irony" not in request.system
    assert '"offensive example 0"' in request.user and '"emotion example 3"' in request.user
    assert "hate example" not in request.user
    # The answer of two tasks gets one more answer's worth of output tokens.
    assert request.body["max_tokens"] == 2 * 64
    assert by_post["post number 2"].body["max_tokens"] == 4 * 64
    # Billed from usage, like one task: the prompt's estimated tokens at the model's price.
    assert request.prompt_tokens == prompt_tokens(request.body["messages"])
    billed = sum(r.prompt_tokens * 1.0 + r.completion_tokens * 4.0 for r in openai_server.requests)
    assert sum(v.cost_usd for v in verdicts) == pytest.approx(billed / 1e6)
    assert _metric(metrics, "jurystream_reviewer_calls_total", backend=NAME, outcome="ok") == 2


async def test_an_off_label_task_is_asked_again(openai_server: OpenAIServer) -> None:
    openai_server.answer = answers_by_text({"post number 1": {"hate": "hate", "irony": "irony"}})
    openai_server.inject(
        tasks_reply({"hate": "hate", "irony": "sarcasm"}),  # one task off its label set
        tasks_reply({"hate": "hate"}),  # one task missing
    )
    metrics = ReviewerMetrics()
    backend = _backend(openai_server, hooks=metrics)
    try:
        verdict = await backend.review(_case(1, "hate", "irony"))
    finally:
        await backend.close()
    assert isinstance(verdict, Verdict), verdict
    assert {t: v.label for t, v in verdict.tasks.items()} == {"hate": "hate", "irony": "irony"}
    assert len(openai_server.requests) == 3
    assert _metric(metrics, "jurystream_reviewer_calls_total", backend=NAME, outcome="invalid") == 2
    billed = sum(r.prompt_tokens * 1.0 + r.completion_tokens * 4.0 for r in openai_server.requests)
    assert verdict.cost_usd == pytest.approx(billed / 1e6)  # the invalid answers are paid too


async def test_answers_off_label_every_time_park_the_case(openai_server: OpenAIServer) -> None:
    openai_server.answer = lambda body: tasks_reply({"hate": "hate", "irony": "maybe"})
    backend = _backend(openai_server)
    try:
        outcome = await backend.review(_case(1, "hate", "irony"))
    finally:
        await backend.close()
    assert isinstance(outcome, Failure) and not outcome.permanent
    assert "invalid answer" in outcome.reason and "irony" in outcome.reason
    assert len(openai_server.requests) == 3


async def test_faults_are_survived_for_multitask_cases(openai_server: OpenAIServer) -> None:
    openai_server.answer = answers_by_text(
        {"post number 1": {"hate": "not-hate", "irony": "irony"}}
    )
    openai_server.inject(Reply(status=429, headers={"Retry-After": "0.1"}), Reply(status=500))
    backend = _backend(openai_server)
    try:
        verdict = await backend.review(_case(1, "irony", "hate"))
    finally:
        await backend.close()
    assert isinstance(verdict, Verdict) and verdict.label == "irony"
    assert [r.status for r in openai_server.requests] == [429, 500, 200]


@pytest.mark.parametrize("response_format", ["json_object", "text"])
async def test_endpoints_without_a_schema_get_the_tasks_from_the_prompt(
    openai_server: OpenAIServer, response_format: str
) -> None:
    openai_server.answer = answers_by_text(
        {"post number 1": {"offensive": "offensive", "hate": "hate", "irony": "irony"}}
    )
    backend = _backend(
        openai_server, settings=_settings(openai_server, response_format=response_format)
    )
    try:
        verdict = await backend.review(_case(1, "irony", "offensive"))
    finally:
        await backend.close()
    (request,) = openai_server.requests
    assert asked_tasks(request.body) == ["offensive", "irony"]
    assert isinstance(verdict, Verdict)
    assert {t: v.label for t, v in verdict.tasks.items()} == {
        "irony": "irony",
        "offensive": "offensive",
    }


async def test_multitask_k_caps_the_demonstrations_per_task(openai_server: OpenAIServer) -> None:
    openai_server.answer = lambda body: tasks_reply(
        {t: SPECS[t].labels[0] for t in asked_tasks(body) or ()}
    )
    backend = _backend(
        openai_server, task_demonstrations={t: _demos(t) for t in SPECS}, multitask_k=1
    )
    try:
        verdict = await backend.review(_case(1, "hate", "irony"))
    finally:
        await backend.close()
    assert isinstance(verdict, Verdict)
    user = openai_server.requests[0].user
    assert '"hate example 0"' in user and '"irony example 0"' in user
    assert "example 1" not in user


async def test_unknown_tasks_and_single_task_cases_still_work(openai_server: OpenAIServer) -> None:
    openai_server.answer = answers_by_text({"post number 1": "offensive"})
    backend = OpenAIBackend(
        _settings(openai_server, label_descriptions={"not-offensive": "", "offensive": ""}),
        ["not-offensive", "offensive"],
        tasks=SPECS,
    )
    unknown = Case("2", "post number 2", tasks=(TaskQuestion("sarcasm"),))
    try:
        single = await backend.review(Case("1", "post number 1"))
        failure = await backend.review(unknown)
    finally:
        await backend.close()
    assert single == Verdict("offensive", 0.9, NAME, single.cost_usd)
    assert single.tasks == {}
    assert isinstance(failure, Failure) and failure.permanent and "sarcasm" in failure.reason
    assert len(openai_server.requests) == 1  # nothing was asked about the unknown task


async def test_the_test_server_answers_exactly_the_asked_tasks(openai_server: OpenAIServer) -> None:
    openai_server.answer = answers_by_text({"post number 1": {"hate": "hate", "irony": "irony"}})
    backend = _backend(openai_server, settings=_settings(openai_server, max_retries=0))
    try:
        missing = await backend.review(_case(1, "hate", "offensive"))  # no scripted offensive
        asked = await backend.review(_case(1, "irony"))
    finally:
        await backend.close()
    assert isinstance(missing, Failure) and "HTTP 400" in missing.reason
    # The parser refuses entries for tasks not asked: hate in the answer would fail this.
    assert isinstance(asked, Verdict) and asked.tasks == {"irony": TaskVerdict("irony", 0.9)}


# --- oracle, simulated, local -----------------------------------------------------------------


async def test_oracle_answers_each_asked_task_from_its_gold() -> None:
    oracle = OracleBackend(tasks=SPECS)
    gold = {"offensive": "offensive", "hate": "not-hate", "irony": "irony"}
    verdict = await oracle.review(_case(1, "irony", "hate", gold=gold))
    assert verdict == Verdict(
        "irony",
        1.0,
        "oracle",
        tasks={"irony": TaskVerdict("irony", 1.0), "hate": TaskVerdict("not-hate", 1.0)},
    )
    for bad in (
        _case(2, "irony", "emotion", gold=gold),  # no gold for emotion
        _case(3, "hate", gold={"hate": "very-hateful"}),  # not a hate label
        _case(4, "hate", gold=None),
    ):
        failure = await oracle.review(bad)
        assert isinstance(failure, Failure) and failure.permanent
        assert repr(bad.tasks[-1].task) in failure.reason


async def test_simulated_reviewer_errs_within_each_tasks_label_set() -> None:
    gold = {"emotion": "joy", "hate": "hate"}
    perfect = SimulatedBackend((), accuracy=1.0, tasks=SPECS)
    wrong = SimulatedBackend((), accuracy=0.0, tasks=SPECS)
    right = await perfect.review(_case(1, "emotion", "hate", gold=gold))
    assert isinstance(right, Verdict)
    assert {t: v.label for t, v in right.tasks.items()} == gold
    for i in range(20):
        verdict = await wrong.review(_case(i, "emotion", "hate", gold=gold))
        assert isinstance(verdict, Verdict)
        assert verdict.tasks["emotion"].label in {"anger", "optimism", "sadness"}
        assert verdict.tasks["hate"].label == "not-hate"
        assert verdict.source == "simulated:0.00"
    replay = await wrong.review(_case(3, "emotion", "hate", gold=gold))
    assert replay == await wrong.review(_case(3, "emotion", "hate", gold=gold))
    failure = await perfect.review(
        Case("9", "x", meta={"gold": gold}, tasks=(TaskQuestion("nsfw"),))
    )
    assert isinstance(failure, Failure) and failure.permanent and "nsfw" in failure.reason


async def test_local_tier_forwards_multitask_cases(sklearn_jurors: list[Path]) -> None:
    local = LocalBackend(load_juror(sklearn_jurors[0]), threshold=0.0)  # sure of everything
    try:
        single = await local.review(Case("1", "you clown"))
        forward = await local.review(_case(2, "hate", "irony"))
    finally:
        local.close()
    assert isinstance(single, Verdict)
    assert isinstance(forward, Forward) and "hate" in forward.reason


async def test_chain_from_task_settings_asks_once_with_each_tasks_gold_pool(
    sklearn_jurors: list[Path], openai_server: OpenAIServer
) -> None:
    for task in ("offensive", "hate"):
        assert tweeteval_dir(DATA, task).is_dir(), f"no TweetEval {task}: set JURYSTREAM_DATA_ROOT"
    tasks = {
        name: TaskSettings(
            labels=list(SPECS[name].labels),
            descriptions=dict(SPECS[name].descriptions),
            instruction=SPECS[name].instruction,
            jurors=["tfidf"],
            gold_pool=tweeteval_dir(DATA, name),
        )
        for name in ("offensive", "hate")
    }
    openai_server.answer = lambda body: tasks_reply(
        {t: SPECS[t].labels[1] for t in asked_tasks(body) or ()}
    )
    settings = _settings(
        openai_server,
        chain=["local", "openai"],
        local_model=str(sklearn_jurors[0]),
        local_threshold=0.0,
        knn_k=3,
        gold_pool_size=100,
    )
    settings = settings.model_copy(update={"multitask_knn_k": 2})
    chain = build_chain(settings, tasks=tasks)  # knn_k=3: 2 per task
    try:
        verdict = await chain.review(_case(1, "hate", "offensive"))
    finally:
        await chain.close()
    assert isinstance(verdict, Verdict) and verdict.source == NAME  # the local tier forwarded
    assert {t: v.label for t, v in verdict.tasks.items()} == {
        "hate": "hate",
        "offensive": "offensive",
    }
    (request,) = openai_server.requests
    offensive, hate = request.user.index('Task "offensive":'), request.user.index('Task "hate":')
    # Two demonstrations per task, each labeled from its own task's gold pool.
    for block, task in ((request.user[offensive:hate], "offensive"), (request.user[hate:], "hate")):
        labels = re.findall(r'^\d+\. ".*" -> "([^"]+)"$', block, flags=re.MULTILINE)
        assert len(labels) == 2 and set(labels) <= set(SPECS[task].labels)
