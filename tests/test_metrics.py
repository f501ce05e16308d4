"""The metrics registry: names, zero-initialised series, helpers, and the HTTP endpoint."""

from __future__ import annotations

import math
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jurystream.exporters.metrics import Metrics
from jurystream.stream.broker import free_port


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    value = m.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def test_every_metric_is_prefixed_and_documented() -> None:
    m = Metrics("worker")
    families = list(m.registry.collect())
    assert len(families) > 20
    for family in families:
        assert family.name.startswith("jurystream_"), family.name
        assert family.documentation, family.name


def test_role_outcomes_exist_at_zero_so_rates_read_zero_not_missing() -> None:
    m = Metrics("worker")
    for outcome in ("labeled", "escalated", "dead_lettered"):
        assert sample(m, "jurystream_messages_total", role="worker", outcome=outcome) == 0.0
    assert sample(m, "jurystream_role_info", role="worker") == 1.0
    # Another role's outcomes are not invented for the worker.
    assert sample(m, "jurystream_messages_total", role="worker", outcome="parked") is None


def test_reviewer_call_counts_tokens_and_dollars() -> None:
    m = Metrics("reviewer")
    m.observe_reviewer_call("openai", "ok", input_tokens=120, output_tokens=5, cost_usd=0.002)
    m.observe_reviewer_call("openai", "invalid", input_tokens=100, output_tokens=7, cost_usd=0.001)
    assert sample(m, "jurystream_reviewer_calls_total", backend="openai", outcome="ok") == 1
    assert sample(m, "jurystream_reviewer_tokens_total", backend="openai", kind="input") == 220
    assert sample(m, "jurystream_reviewer_tokens_total", backend="openai", kind="output") == 12
    cost = sample(m, "jurystream_reviewer_cost_usd_total", backend="openai")
    assert cost == pytest.approx(0.003)
    with pytest.raises(ValueError):
        m.observe_reviewer_call("openai", "maybe")
    with pytest.raises(ValueError):
        m.observe_reviewer_call("openai", "ok", cost_usd=-1)


def test_budget_gauges() -> None:
    m = Metrics("reviewer")
    m.set_budget({"hour": 0.5, "day": -0.1}, exhausted=False)
    assert sample(m, "jurystream_reviewer_budget_remaining_usd", window="hour") == 0.5
    assert sample(m, "jurystream_reviewer_budget_remaining_usd", window="day") == 0.0
    assert sample(m, "jurystream_reviewer_budget_exhausted") == 0.0
    m.set_budget({"hour": 0.0}, exhausted=True)
    assert sample(m, "jurystream_reviewer_budget_exhausted") == 1.0


def test_quality_gauges_skip_empty_windows() -> None:
    m = Metrics("monitor")
    m.set_source_quality("jury", math.nan, math.nan, 0)
    assert sample(m, "jurystream_online_accuracy", source="jury") is None
    m.set_source_quality("jury", 0.9, 0.8, 50)
    m.set_juror_quality("tfidf", 0.7, 0.6, 40)
    assert sample(m, "jurystream_online_accuracy", source="jury") == 0.9
    assert sample(m, "jurystream_online_macro_f1", source="jury") == 0.8
    assert sample(m, "jurystream_online_window_samples", source="jury") == 50
    assert sample(m, "jurystream_juror_online_macro_f1", juror="tfidf") == 0.6
    assert sample(m, "jurystream_juror_online_window_samples", juror="tfidf") == 40


def test_consumer_lag_report_replaces_partitions_lost_in_a_rebalance() -> None:
    m = Metrics("monitor")
    m.set_consumer_lags("g", {("posts", 0): 5, ("posts", 1): 7})
    m.set_consumer_lags("other", {("labels", 0): 1})
    m.set_consumer_lags("g", {("posts", 1): -3})
    assert sample(m, "jurystream_consumer_lag", group="g", topic="posts", partition="0") is None
    assert sample(m, "jurystream_consumer_lag", group="g", topic="posts", partition="1") == 0
    assert sample(m, "jurystream_consumer_lag", group="other", topic="labels", partition="0") == 1


def test_training_run() -> None:
    m = Metrics("trainer")
    m.declare_jurors(["minilm"])
    assert sample(m, "jurystream_training_runs_total", juror="minilm", outcome="rejected") == 0
    m.observe_training_run("minilm", "promoted", 42.0)
    assert sample(m, "jurystream_training_runs_total", juror="minilm", outcome="promoted") == 1
    assert sample(m, "jurystream_training_duration_seconds_count") == 1
    with pytest.raises(ValueError):
        m.observe_training_run("minilm", "great", 1.0)


def test_two_processes_have_independent_registries() -> None:
    a, b = Metrics("worker"), Metrics("worker")
    a.messages.labels("worker", "labeled").inc(3)
    assert sample(b, "jurystream_messages_total", role="worker", outcome="labeled") == 0


def test_serve_exposes_the_registry_over_http() -> None:
    m = Metrics("worker")
    m.messages.labels("worker", "labeled").inc(2)
    port = free_port()
    m.serve(port, host="127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    key = ("jurystream_messages_total", (("outcome", "labeled"), ("role", "worker")))
    assert values[key] == 2.0
