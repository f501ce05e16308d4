"""Metrics per role: which families each role exports, what each method moves, the endpoint."""

from __future__ import annotations

import math
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jurystream.exporters.metrics import (
    DEFAULT_TASK,
    ROLE_METRICS,
    MonitorMetrics,
    ReviewerMetrics,
    RoleMetrics,
    TrainerMetrics,
    WorkerMetrics,
)
from jurystream.exporters.metrics.families import PER_TASK
from jurystream.models.rules.audit import AuditEstimate
from jurystream.stream.broker import free_port

# The families each role exports (the dashboard, alerts, demo and benches read these names).
EXPORTS = {
    "worker": {
        "jurystream_role_info",
        "jurystream_consumer_lag",
        "jurystream_messages",
        "jurystream_stage_latency_seconds",
        "jurystream_batch_size",
        "jurystream_juror_votes",
        "jurystream_juror_agreement",
        "jurystream_model_version_info",
        "jurystream_model_swaps",
        "jurystream_jury_threshold",
        "jurystream_labels",
        "jurystream_task_decisions",
    },
    "reviewer": {
        "jurystream_role_info",
        "jurystream_consumer_lag",
        "jurystream_messages",
        "jurystream_stage_latency_seconds",
        "jurystream_review_cases",
        "jurystream_audits",
        "jurystream_hard_samples",
        "jurystream_labels",
        "jurystream_reviewer_calls",
        "jurystream_reviewer_tokens",
        "jurystream_reviewer_cost_usd",
        "jurystream_reviewer_budget_remaining_usd",
        "jurystream_reviewer_budget_exhausted",
    },
    "trainer": {
        "jurystream_role_info",
        "jurystream_consumer_lag",
        "jurystream_messages",
        "jurystream_jury_threshold",
        "jurystream_target_accuracy",
        "jurystream_training_runs",
        "jurystream_training_duration_seconds",
    },
    "monitor": {
        "jurystream_role_info",
        "jurystream_consumer_lag",
        "jurystream_feedback",
        "jurystream_juror_feedback",
        "jurystream_feedback_unmatched",
        "jurystream_online_accuracy",
        "jurystream_online_macro_f1",
        "jurystream_online_window_samples",
        "jurystream_juror_online_accuracy",
        "jurystream_juror_online_macro_f1",
        "jurystream_juror_online_window_samples",
        "jurystream_audit_accuracy",
        "jurystream_audit_window",
        "jurystream_label_drift_psi",
        "jurystream_label_drift_window_samples",
        "jurystream_model_updates",
    },
}


def sample(m: RoleMetrics, name: str, **labels: str) -> float | None:
    """A sample's value; a per-task family's is read for ``DEFAULT_TASK`` unless ``task``
    says otherwise."""
    if name in PER_TASK:
        labels = {"task": DEFAULT_TASK, **labels}
    value = m.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def messages(m: RoleMetrics, outcome: str) -> float | None:
    return sample(m, "jurystream_messages_total", role=m.role, outcome=outcome)


def test_each_role_exports_only_its_families() -> None:
    assert set(ROLE_METRICS) == set(EXPORTS)
    for role, cls in ROLE_METRICS.items():
        m = cls()
        assert m.role == role
        assert {f.name for f in m.registry.collect()} == EXPORTS[role], role
        assert sample(m, "jurystream_role_info", role=role) == 1.0


def test_a_family_shared_by_roles_is_the_same_in_each_and_documented() -> None:
    seen: dict[str, tuple[str, str]] = {}
    for cls in ROLE_METRICS.values():
        for family in cls().registry.collect():
            assert family.name.startswith("jurystream_"), family.name
            assert family.documentation, family.name
            kind = (family.type, family.documentation)
            assert seen.setdefault(family.name, kind) == kind, family.name


def test_series_read_as_rates_or_none_yet_start_at_zero() -> None:
    worker = WorkerMetrics()
    for outcome in ("labeled", "escalated", "audited", "unreviewed", "dead_lettered"):
        assert messages(worker, outcome) == 0.0
    assert messages(worker, "parked") is None  # another role's outcome is not invented
    reviewer = ReviewerMetrics()
    for outcome in ("reviewed", "audit_reviewed", "parked", "dead_lettered"):
        assert messages(reviewer, outcome) == 0.0
    for state in ("in_flight", "parked"):
        assert sample(reviewer, "jurystream_review_cases", state=state) == 0.0
    assert sample(reviewer, "jurystream_audits_total", result="disagree") == 0.0
    assert messages(TrainerMetrics(), "dead_lettered") == 0.0
    monitor = MonitorMetrics()
    for topic, reason in [
        ("labels", "expired"),
        ("feedback", "invalid"),
        ("hard_samples", "invalid"),
    ]:
        assert (
            sample(monitor, "jurystream_feedback_unmatched_total", topic=topic, reason=reason) == 0
        )


def test_worker_methods_move_their_series() -> None:
    m = WorkerMetrics()
    m.batch_received(3)
    for wait in (0.01, 0.02, 0.03):
        m.waited_for_batch(wait)
    m.scored(0.2)
    m.voted("a", "pos", agreed=True)
    m.voted("b", "neg", agreed=False)
    m.sent_to_review("escalation")
    m.sent_to_review("audit")
    m.labeled("pos", 0.5)  # the audited post is labeled too
    m.labeled("neg", 0.7, unreviewed=True)
    m.produced(0.004)
    m.dead_lettered()
    for outcome, count in [
        ("escalated", 1),
        ("audited", 1),
        ("labeled", 1),
        ("unreviewed", 1),
        ("dead_lettered", 1),
    ]:
        assert messages(m, outcome) == count, outcome
    assert sample(m, "jurystream_labels_total", source="jury", label="pos") == 1
    assert sample(m, "jurystream_labels_total", source="jury", label="neg") == 1
    assert sample(m, "jurystream_batch_size_sum") == 3
    latency = "jurystream_stage_latency_seconds_count"
    assert sample(m, latency, stage="batch_wait") == 3
    assert sample(m, latency, stage="inference") == 1
    assert sample(m, latency, stage="end_to_end") == 2
    assert sample(m, "jurystream_stage_latency_seconds_sum", stage="end_to_end") == pytest.approx(
        1.2
    )
    assert sample(m, latency, stage="produce") == 1
    assert sample(m, "jurystream_juror_votes_total", juror="b", label="neg") == 1
    assert sample(m, "jurystream_juror_agreement_total", juror="a") == 1
    assert sample(m, "jurystream_juror_agreement_total", juror="b") is None
    with pytest.raises(KeyError):
        m.sent_to_review("gossip")


def test_worker_publishes_what_it_serves_and_counts_swaps() -> None:
    m = WorkerMetrics()
    m.threshold_served(0.7)
    m.versions_served({"a": "1", "b": "3"})
    assert sample(m, "jurystream_model_swaps_total", juror="a", outcome="refused") == 0
    m.swapped("a")
    m.swap_refused("b")
    m.versions_served({"a": "2", "b": "3"})
    m.threshold_served(0.8)
    assert sample(m, "jurystream_jury_threshold") == 0.8
    assert sample(m, "jurystream_model_version_info", juror="a", version="2") == 1
    assert sample(m, "jurystream_model_version_info", juror="a", version="1") is None
    assert sample(m, "jurystream_model_swaps_total", juror="a", outcome="swapped") == 1
    assert sample(m, "jurystream_model_swaps_total", juror="b", outcome="refused") == 1


def test_reviewer_cases_verdicts_and_audits() -> None:
    m = ReviewerMetrics()
    m.cases_in_flight(4)
    m.case_parked()
    m.case_parked()
    m.park_ended()
    m.case_answered(1.5)
    m.reviewed("reviewer:openai:x", "pos")
    m.audit_reviewed(agreed=True)
    m.audit_reviewed(agreed=False)
    m.hard_sample_written("reviewer:openai:x")
    m.dead_lettered()
    assert sample(m, "jurystream_review_cases", state="in_flight") == 4
    assert sample(m, "jurystream_review_cases", state="parked") == 1
    assert messages(m, "parked") == 2
    assert messages(m, "reviewed") == 1
    assert messages(m, "audit_reviewed") == 2
    assert messages(m, "dead_lettered") == 1
    assert sample(m, "jurystream_labels_total", source="reviewer:openai:x", label="pos") == 1
    assert sample(m, "jurystream_audits_total", result="agree") == 1
    assert sample(m, "jurystream_audits_total", result="disagree") == 1
    assert sample(m, "jurystream_hard_samples_total", label_source="reviewer:openai:x") == 1
    assert sample(m, "jurystream_stage_latency_seconds_sum", stage="review") == 1.5


def test_reviewer_hooks_count_calls_tokens_and_dollars() -> None:
    m = ReviewerMetrics()
    m.called("openai", "ok")
    m.billed("openai", 120, 5, 0.002)
    m.called("openai", "invalid")
    m.billed("openai", 100, 7, 0.001)
    assert sample(m, "jurystream_reviewer_calls_total", backend="openai", outcome="ok") == 1
    assert sample(m, "jurystream_reviewer_tokens_total", backend="openai", kind="input") == 220
    assert sample(m, "jurystream_reviewer_tokens_total", backend="openai", kind="output") == 12
    cost = sample(m, "jurystream_reviewer_cost_usd_total", backend="openai")
    assert cost == pytest.approx(0.003)
    with pytest.raises(ValueError):
        m.called("openai", "maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        m.billed("openai", 1, 1, -1.0)


def test_budget_gauges() -> None:
    m = ReviewerMetrics()
    m.budget({"hour": 0.5, "day": -0.1}, exhausted=False)
    assert sample(m, "jurystream_reviewer_budget_remaining_usd", window="hour") == 0.5
    assert sample(m, "jurystream_reviewer_budget_remaining_usd", window="day") == 0.0
    assert sample(m, "jurystream_reviewer_budget_exhausted") == 0.0
    m.budget({"hour": 0.0}, exhausted=True)
    assert sample(m, "jurystream_reviewer_budget_exhausted") == 1.0


def test_trainer_rounds_threshold_and_dead_letters() -> None:
    m = TrainerMetrics()
    m.declare_jurors(["minilm"])
    assert sample(m, "jurystream_training_runs_total", juror="minilm", outcome="rejected") == 0
    m.round_finished("minilm", "promoted", 42.0)
    m.threshold_chosen(0.66, 0.95)
    m.dead_lettered()
    assert sample(m, "jurystream_training_runs_total", juror="minilm", outcome="promoted") == 1
    assert sample(m, "jurystream_training_duration_seconds_sum") == 42.0
    assert sample(m, "jurystream_jury_threshold") == 0.66
    assert sample(m, "jurystream_target_accuracy", task="default") == 0.95
    m.threshold_chosen(0.8, 0.9, task="hate")  # a task's own target beside the others
    assert sample(m, "jurystream_target_accuracy", task="hate") == 0.9
    assert sample(m, "jurystream_target_accuracy", task="default") == 0.95
    assert messages(m, "dead_lettered") == 1
    with pytest.raises(ValueError):
        m.round_finished("minilm", "great", 1.0)


def test_monitor_join_counts() -> None:
    m = MonitorMetrics()
    m.judged("jury", correct=True)
    m.judged("jury", correct=False)
    m.juror_judged("a", correct=True)
    m.record_invalid("labels")
    m.join_expired("feedback")
    m.juror_seen("a")
    assert sample(m, "jurystream_model_updates_total", juror="a") == 0
    m.model_announced("a")
    assert sample(m, "jurystream_feedback_total", source="jury", result="correct") == 1
    assert sample(m, "jurystream_feedback_total", source="jury", result="wrong") == 1
    assert sample(m, "jurystream_juror_feedback_total", juror="a", result="correct") == 1
    unmatched = "jurystream_feedback_unmatched_total"
    assert sample(m, unmatched, topic="labels", reason="invalid") == 1
    assert sample(m, unmatched, topic="feedback", reason="expired") == 1
    assert sample(m, "jurystream_model_updates_total", juror="a") == 1


def test_quality_gauges_skip_empty_windows() -> None:
    m = MonitorMetrics()
    m.source_quality("jury", math.nan, math.nan, 0)
    assert sample(m, "jurystream_online_accuracy", source="jury") is None
    m.source_quality("jury", 0.9, 0.8, 50)
    m.juror_quality("tfidf", 0.7, 0.6, 40)
    assert sample(m, "jurystream_online_accuracy", source="jury") == 0.9
    assert sample(m, "jurystream_online_macro_f1", source="jury") == 0.8
    assert sample(m, "jurystream_online_window_samples", source="jury") == 50
    assert sample(m, "jurystream_juror_online_macro_f1", juror="tfidf") == 0.6
    assert sample(m, "jurystream_juror_online_window_samples", juror="tfidf") == 40


def test_audit_and_drift_gauges() -> None:
    m = MonitorMetrics()
    m.audit_estimates(
        {"all": AuditEstimate(9, 10, 0.9, 0.6, 0.98), "pos": AuditEstimate(0, 0, 0.0, 0.0, 1.0)}
    )
    assert sample(m, "jurystream_audit_accuracy", label="all", bound="low") == 0.6
    assert sample(m, "jurystream_audit_window", label="all") == 10
    assert sample(m, "jurystream_audit_accuracy", label="pos", bound="estimate") is None
    assert sample(m, "jurystream_audit_window", label="pos") == 0
    m.drift_window(400)
    m.label_drift("training", 0.3)
    assert sample(m, "jurystream_label_drift_window_samples") == 400
    assert sample(m, "jurystream_label_drift_psi", reference="training") == 0.3


def test_consumer_lag_report_replaces_partitions_lost_in_a_rebalance() -> None:
    m = MonitorMetrics()
    m.report_lag("g", {("posts", 0): 5, ("posts", 1): 7})
    m.report_lag("other", {("labels", 0): 1})
    m.report_lag("g", {("posts", 1): -3})
    assert sample(m, "jurystream_consumer_lag", group="g", topic="posts", partition="0") is None
    assert sample(m, "jurystream_consumer_lag", group="g", topic="posts", partition="1") == 0
    assert sample(m, "jurystream_consumer_lag", group="other", topic="labels", partition="0") == 1


def test_two_processes_have_independent_registries() -> None:
    a, b = WorkerMetrics(), WorkerMetrics()
    a.labeled("pos", 0.1)
    assert messages(a, "labeled") == 1
    assert messages(b, "labeled") == 0


def test_serve_exposes_the_registry_over_http() -> None:
    m = WorkerMetrics()
    m.labeled("pos", 0.1)
    m.labeled("pos", 0.1)
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
    assert not any(name.startswith("jurystream_reviewer_") for name, _ in values)


# --- tasks ---

# What a deployment with several tasks (Settings.tasks) measures per task (dashboard: $task).
PER_TASK_FAMILIES = {
    "jurystream_labels_total",
    "jurystream_jury_threshold",
    "jurystream_target_accuracy",
    "jurystream_juror_votes_total",
    "jurystream_juror_agreement_total",
    "jurystream_task_decisions_total",
    "jurystream_audits_total",
    "jurystream_hard_samples_total",
    "jurystream_feedback_total",
    "jurystream_juror_feedback_total",
    "jurystream_online_accuracy",
    "jurystream_online_macro_f1",
    "jurystream_online_window_samples",
    "jurystream_juror_online_accuracy",
    "jurystream_juror_online_macro_f1",
    "jurystream_juror_online_window_samples",
    "jurystream_audit_accuracy",
    "jurystream_audit_window",
    "jurystream_label_drift_psi",
    "jurystream_label_drift_window_samples",
}


def task_values(m: RoleMetrics) -> dict[str, set[str]]:
    """Per series name, the task label values of its series (``_created`` left out)."""
    out: dict[str, set[str]] = {}
    for family in m.registry.collect():
        for s in family.samples:
            if "task" in s.labels and not s.name.endswith("_created"):
                out.setdefault(s.name, set()).add(s.labels["task"])
    return out


def test_what_the_jury_decides_is_labeled_by_task_and_the_rest_is_not() -> None:
    assert PER_TASK == PER_TASK_FAMILIES
    for cls in ROLE_METRICS.values():
        for family in cls().registry.collect():
            for s in family.samples:
                per_task = {family.name, f"{family.name}_total"} & PER_TASK != set()
                assert ("task" in s.labels) == per_task, s


def test_a_single_task_deployment_reports_the_default_task() -> None:
    worker = WorkerMetrics()
    # Its per-task escalation series exist from the start, for the one task only.
    assert task_values(worker) == {"jurystream_task_decisions_total": {"default"}}
    worker.voted("a", "pos", agreed=True)
    worker.labeled("pos", 0.1)
    worker.sent_to_review("escalation")
    worker.threshold_served(0.7)
    worker.sent_to_review("audit")  # the audited post's task is counted with its label
    decided = "jurystream_task_decisions_total"
    assert sample(worker, decided, task="default", outcome="accepted") == 1
    assert sample(worker, decided, task="default", outcome="escalated") == 1
    assert sample(worker, "jurystream_jury_threshold", task="default") == 0.7
    assert set().union(*task_values(worker).values()) == {"default"}
    reviewer = ReviewerMetrics()
    reviewer.reviewed("reviewer:x", "pos")
    assert (
        sample(
            reviewer, "jurystream_labels_total", task="default", source="reviewer:x", label="pos"
        )
        == 1
    )


def test_the_worker_counts_each_task_of_a_post_and_the_post_once() -> None:
    m = WorkerMetrics(tasks=["offensive", "hate", "irony"])
    decided = "jurystream_task_decisions_total"
    assert task_values(m) == {decided: {"offensive", "hate", "irony"}}  # no "default"
    assert sample(m, decided, task="irony", outcome="escalated") == 0
    # post a: every task settled, hate's label unreviewed (the budget was spent)
    m.labeled_tasks({"offensive": "yes", "hate": "yes", "irony": "no"}, 0.2, {"hate"})
    # post b: escalated on hate and irony, offensive settled
    m.sent_to_review("escalation", asked=["hate", "irony"], settled=["offensive"])
    m.voted("j0", "yes", agreed=True, task="hate")
    m.voted("j0", "no", agreed=False, task="irony")
    m.threshold_served(0.6, "hate")
    assert messages(m, "unreviewed") == 1 and messages(m, "labeled") == 0
    assert messages(m, "escalated") == 1
    assert sample(m, "jurystream_stage_latency_seconds_count", stage="end_to_end") == 1
    for task, outcome, count in [
        ("offensive", "accepted", 2),
        ("hate", "unreviewed", 1),
        ("hate", "escalated", 1),
        ("hate", "accepted", 0),
        ("irony", "accepted", 1),
        ("irony", "escalated", 1),
    ]:
        assert sample(m, decided, task=task, outcome=outcome) == count, (task, outcome)
    labels = "jurystream_labels_total"
    assert sample(m, labels, task="irony", source="jury", label="no") == 1
    assert sample(m, labels, task="hate", source="jury", label="yes") == 1
    assert sample(m, labels, source="jury", label="yes") is None  # nothing as "default"
    assert sample(m, "jurystream_juror_votes_total", task="irony", juror="j0", label="no") == 1
    assert sample(m, "jurystream_juror_agreement_total", task="hate", juror="j0") == 1
    assert sample(m, "jurystream_juror_agreement_total", task="irony", juror="j0") is None
    assert sample(m, "jurystream_jury_threshold", task="hate") == 0.6


def test_reviewer_trainer_and_monitor_label_their_figures_by_task() -> None:
    reviewer = ReviewerMetrics(tasks=["offensive", "hate"])
    assert sample(reviewer, "jurystream_audits_total", task="hate", result="agree") == 0
    assert sample(reviewer, "jurystream_audits_total", result="agree") is None
    reviewer.audit_reviewed(agreed=False, task="hate")
    reviewer.hard_sample_written("reviewer:x", task="hate")
    assert sample(reviewer, "jurystream_audits_total", task="hate", result="disagree") == 1
    hard = "jurystream_hard_samples_total"
    assert sample(reviewer, hard, task="hate", label_source="reviewer:x") == 1
    trainer = TrainerMetrics()
    trainer.threshold_chosen(0.66, 0.95)
    assert sample(trainer, "jurystream_jury_threshold", task="default") == 0.66
    monitor = MonitorMetrics(tasks=["offensive", "hate"])
    monitor.judged("jury", correct=True, task="hate")
    monitor.juror_judged("a", correct=False, task="hate")
    monitor.source_quality("jury", 0.9, 0.8, 50, task="hate")
    monitor.juror_quality("a", 0.7, 0.6, 40, task="offensive")
    monitor.audit_estimates({"all": AuditEstimate(9, 10, 0.9, 0.6, 0.98)}, task="hate")
    monitor.drift_window(30, task="hate")
    monitor.label_drift("first_window", 0.2, task="hate")
    assert (
        sample(monitor, "jurystream_feedback_total", task="hate", source="jury", result="correct")
        == 1
    )
    assert (
        sample(monitor, "jurystream_juror_feedback_total", task="hate", juror="a", result="wrong")
        == 1
    )
    assert sample(monitor, "jurystream_online_accuracy", task="hate", source="jury") == 0.9
    assert (
        sample(monitor, "jurystream_juror_online_window_samples", task="offensive", juror="a") == 40
    )
    assert (
        sample(monitor, "jurystream_audit_accuracy", task="hate", label="all", bound="low") == 0.6
    )
    assert sample(monitor, "jurystream_label_drift_window_samples", task="hate") == 30
    assert (
        sample(monitor, "jurystream_label_drift_psi", task="hate", reference="first_window") == 0.2
    )
    assert set().union(*task_values(monitor).values()) == {"offensive", "hate"}
