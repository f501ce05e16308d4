"""One reviewer budget for the deployment: reviewer processes share it through the spend topic.

Two real reviewer processes on the embedded broker and the OpenAI-compatible test server, with
a budget that would allow twice the spend if each process kept its own: together they stay
within it (plus at most one call in flight per process, concurrency 1), and a reviewer started
after both stopped does not get a fresh window.
"""

from __future__ import annotations

import asyncio
import json
import time

from jurystream.config import BrokerSettings, Settings, Topic, TopicSettings
from jurystream.models.reviewer.cost import Price
from jurystream.stream.broker import ensure_topics
from jurystream.stream.client import produce
from jurystream.stream.processes import RoleGroup, RoleProcess
from jurystream.testing.openai_server import OpenAIServer, label_reply

KEY_ENV = "JURYSTREAM_TEST_REVIEWER_KEY"
MODEL = "test-model"
PRICE = {"input": 200.0, "output": 200.0}  # USD per 1M tokens: a call costs about $0.1
BUDGET_USD = 1.0
LABELS = {"not-offensive": "anything else", "offensive": "insults"}


def _case(i: int) -> bytes:
    return json.dumps(
        {
            "id": f"m{i}",
            "text": f"post number {i}, which the jury could not agree on",
            "jury_label": "offensive",
            "jury_confidence": 0.5,
            "votes": [{"juror": "a", "label": "offensive", "confidence": 0.5}],
            "reason": "low confidence",
            "model_versions": {"a": "v1"},
            "received_ms": time.time() * 1000,
            "meta": {},
        }
    ).encode()


def _spent(server: OpenAIServer) -> list[float]:
    price = Price(PRICE["input"], PRICE["output"])
    return [price.cost(r.prompt_tokens, r.completion_tokens) for r in server.billed()]


def _settle(
    server: OpenAIServer, roles: RoleGroup, running: list[RoleProcess], quiet_s: float
) -> None:
    """Wait until every running reviewer says the budget is spent and no request came for
    ``quiet_s``."""
    timeout_s = 90.0
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(server.requests)
        if count != last:
            last, since = count, time.monotonic()
        exhausted = all("budget exhausted" in role.log() for role in running)
        if exhausted and time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"the reviewers never ran out of budget\n{roles.logs()}")


def test_reviewer_replicas_share_one_budget_across_restarts(
    roles: RoleGroup, openai_server: OpenAIServer
) -> None:
    openai_server.answer = lambda body: label_reply("offensive")
    env = {
        KEY_ENV: "sk-test",
        "JURYSTREAM_TOPICS__PARTITIONS": "3",
        "JURYSTREAM_REVIEWER__CHAIN": '["openai"]',
        "JURYSTREAM_REVIEWER__BASE_URL": openai_server.base_url,
        "JURYSTREAM_REVIEWER__MODEL": MODEL,
        "JURYSTREAM_REVIEWER__API_KEY_ENV": KEY_ENV,
        "JURYSTREAM_REVIEWER__PRICES": json.dumps({MODEL: PRICE}),
        "JURYSTREAM_REVIEWER__LABEL_DESCRIPTIONS": json.dumps(LABELS),
        "JURYSTREAM_REVIEWER__CONCURRENCY": "1",
        "JURYSTREAM_REVIEWER__BUDGET_PER_HOUR_USD": str(BUDGET_USD),
        # One window for the whole test (it ends in 2033): no boundary can fall inside it.
        "JURYSTREAM_REVIEWER__BUDGET_HOUR_WINDOW_S": "1000000000",
    }
    settings = Settings(
        broker=BrokerSettings(bootstrap=roles.bootstrap),
        topics=TopicSettings(prefix=roles.prefix, partitions=3),
    )
    asyncio.run(ensure_topics(roles.bootstrap, settings.topics.all_names(), 3))
    n = 90
    items = [(f"m{i}".encode(), _case(i)) for i in range(n)]
    asyncio.run(produce(roles.bootstrap, settings.topics.name(Topic.REVIEW), items))

    first = [roles.start("reviewer", env=env) for _ in range(3)]
    _settle(openai_server, roles, first, quiet_s=3.0)
    costs = _spent(openai_server)
    print(f"{len(costs)} calls, ${sum(costs):.3f}, most ${max(costs):.3f}")
    assert costs, roles.logs()
    per_call = max(costs)
    assert n * min(costs) > 3 * BUDGET_USD, "the cases must cost more than 3 budgets"
    # Each process on its own budget would spend about 3 × BUDGET_USD.
    assert sum(costs) <= BUDGET_USD + 3 * per_call, (sum(costs), len(costs), roles.logs())
    assert sum(costs) >= BUDGET_USD - 3 * per_call  # the budget was used, not just refused
    assert all(role.alive for role in first), roles.logs()

    for role in first:
        role.stop()
    calls = len(openai_server.requests)
    again = roles.start("reviewer", env=env)  # a new replica: its predecessors' spend counts
    _settle(openai_server, roles, [again], quiet_s=3.0)
    assert len(openai_server.requests) == calls, roles.logs()
