"""The one metrics registry (Prometheus, names prefixed ``jurystream_``).

Every role creates one ``Metrics`` and serves it on its own port; when a role runs as several
processes, Prometheus scrapes each and the dashboard sums over instances, so no shared state is
needed between processes. That rule shapes what is exported:

- everything that must add up across processes is a counter (messages, votes, reviewer calls,
  tokens, USD, feedback verdicts); rates, escalation share, agreement share, exact accuracy and
  the counterfactual cost are computed from counters in PromQL (see deploy/grafana and
  deploy/prometheus), never averaged from per-process ratios;
- per-process rolling figures that cannot be summed (rolling macro-F1, PSI drift) are gauges
  that come with the window size they were computed on, so dashboards can weight them;
- per-partition gauges (consumer lag) are replaced as a whole on every report, so a process
  that lost a partition in a rebalance stops reporting it and sums do not count it twice.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from jurystream.exporters.health import Health
from jurystream.models.audit import AuditEstimate

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TRAINING_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600)

# Outcomes created at zero when a role starts, so rate() and "no dead letters" read as 0,
# not as a missing series.
ROLE_OUTCOMES: dict[str, tuple[str, ...]] = {
    "worker": ("labeled", "escalated", "audited", "unreviewed", "dead_lettered"),
    "reviewer": ("reviewed", "audit_reviewed", "parked", "dead_lettered"),
    "trainer": ("dead_lettered",),
}

REVIEWER_CALL_OUTCOMES = ("ok", "retry", "invalid", "error")
TRAINING_OUTCOMES = ("promoted", "rejected", "failed")


class Metrics:
    def __init__(self, role: str, registry: CollectorRegistry | None = None) -> None:
        self.role = role
        self.registry = registry or CollectorRegistry()
        self.health = Health()  # /livez and /readyz, served next to /metrics
        r = self.registry
        self.role_info = Gauge(
            "jurystream_role_info", "1 per running process of a role", ["role"], registry=r
        )
        self.role_info.labels(role).set(1)

        # --- streaming core (worker) ---
        self.messages = Counter(
            "jurystream_messages_total",
            "Messages by role and outcome (labeled, escalated, audited, unreviewed, "
            "dead_lettered, reviewed, audit_reviewed, parked)",
            ["role", "outcome"],
            registry=r,
        )
        for outcome in ROLE_OUTCOMES.get(role, ()):
            self.messages.labels(role, outcome)
        self.stage_latency = Histogram(
            "jurystream_stage_latency_seconds",
            "Latency per stage (batch_wait, inference, produce, end_to_end, review)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "jurystream_batch_size", "Posts per micro-batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.juror_votes = Counter(
            "jurystream_juror_votes_total",
            "Votes cast per juror and label",
            ["juror", "label"],
            registry=r,
        )
        self.juror_agreement = Counter(
            "jurystream_juror_agreement_total",
            "Votes per juror that agreed with the jury's final label",
            ["juror"],
            registry=r,
        )
        self.model_version = Gauge(
            "jurystream_model_version_info",
            "1 for the model version each juror serves",
            ["juror", "version"],
            registry=r,
        )

        # --- reviewer: calls, tokens, dollars, budget ---
        self.reviewer_calls = Counter(
            "jurystream_reviewer_calls_total",
            "Reviewer backend calls by backend and outcome (ok, retry, invalid, error)",
            ["backend", "outcome"],
            registry=r,
        )
        self.reviewer_tokens = Counter(
            "jurystream_reviewer_tokens_total",
            "Tokens billed by reviewer backends, by kind (input, output)",
            ["backend", "kind"],
            registry=r,
        )
        self.reviewer_cost = Counter(
            "jurystream_reviewer_cost_usd_total",
            "USD spent on reviewer calls (measured tokens x configured prices)",
            ["backend"],
            registry=r,
        )
        self.reviewer_budget_remaining = Gauge(
            "jurystream_reviewer_budget_remaining_usd",
            "USD left in the current budget window of this process (hour, day)",
            ["window"],
            registry=r,
        )
        self.reviewer_budget_exhausted = Gauge(
            "jurystream_reviewer_budget_exhausted",
            "1 while review cases wait for the next budget window, else 0",
            registry=r,
        )
        self.review_cases = Gauge(
            "jurystream_review_cases",
            "Review cases this process holds now: in_flight (all) and parked (waiting to retry)",
            ["state"],
            registry=r,
        )
        if role == "reviewer":  # 0, not "no data", before the first case
            for state in ("in_flight", "parked"):
                self.review_cases.labels(state).set(0)

        # --- threshold controller and audit (worker, trainer, reviewer, monitor) ---
        self.jury_threshold = Gauge(
            "jurystream_jury_threshold",
            "Confidence threshold the jury serves (worker) or the controller chose (trainer)",
            registry=r,
        )
        self.target_accuracy = Gauge(
            "jurystream_target_accuracy",
            "Accuracy of accepted labels the threshold controller holds (trainer)",
            registry=r,
        )
        self.audits = Counter(
            "jurystream_audits_total",
            "Audit cases reviewed, by whether the reviewer agreed with the jury's label",
            ["result"],
            registry=r,
        )
        self.audit_accuracy = Gauge(
            "jurystream_audit_accuracy",
            "Accuracy of the jury's accepted labels estimated by audits over the monitor's "
            "window, per jury label and 'all', with its 95% interval (bound=estimate|low|high)",
            ["label", "bound"],
            registry=r,
        )
        self.audit_window = Gauge(
            "jurystream_audit_window",
            "Audits the audit accuracy was estimated from, per jury label and 'all'",
            ["label"],
            registry=r,
        )
        if role == "reviewer":
            for result in ("agree", "disagree"):
                self.audits.labels(result)

        # --- online quality against gold feedback (monitor) ---
        self.feedback = Counter(
            "jurystream_feedback_total",
            "Labels joined with gold feedback, by label source and result (correct, wrong)",
            ["source", "result"],
            registry=r,
        )
        self.juror_feedback = Counter(
            "jurystream_juror_feedback_total",
            "Juror votes joined with gold feedback, by juror and result (correct, wrong)",
            ["juror", "result"],
            registry=r,
        )
        self.feedback_unmatched = Counter(
            "jurystream_feedback_unmatched_total",
            "Records the monitor dropped (invalid; expired before their join partner arrived)",
            ["topic", "reason"],
            registry=r,
        )
        self.online_accuracy = Gauge(
            "jurystream_online_accuracy",
            "Rolling accuracy against feedback per label source, over the window",
            ["source"],
            registry=r,
        )
        self.online_macro_f1 = Gauge(
            "jurystream_online_macro_f1",
            "Rolling macro-F1 against feedback per label source, over the window",
            ["source"],
            registry=r,
        )
        self.online_window = Gauge(
            "jurystream_online_window_samples",
            "Joined samples in the rolling window per label source (weights for averaging)",
            ["source"],
            registry=r,
        )
        self.juror_accuracy = Gauge(
            "jurystream_juror_online_accuracy",
            "Rolling accuracy of each juror's vote against feedback",
            ["juror"],
            registry=r,
        )
        self.juror_macro_f1 = Gauge(
            "jurystream_juror_online_macro_f1",
            "Rolling macro-F1 of each juror's vote against feedback",
            ["juror"],
            registry=r,
        )
        self.juror_window = Gauge(
            "jurystream_juror_online_window_samples",
            "Joined samples in each juror's rolling window (weights for averaging)",
            ["juror"],
            registry=r,
        )

        # --- label distribution and drift (monitor) ---
        self.labels_out = Counter(
            "jurystream_labels_total",
            "Final labels written to the labels topic, by source and label",
            ["source", "label"],
            registry=r,
        )
        self.label_drift = Gauge(
            "jurystream_label_drift_psi",
            "PSI of the recent label distribution against the reference "
            "(training: configured training distribution; first_window: this process's start)",
            ["reference"],
            registry=r,
        )
        self.drift_window = Gauge(
            "jurystream_label_drift_window_samples",
            "Labels in the drift window of this process",
            registry=r,
        )

        # --- continual learning ---
        self.hard_samples = Counter(
            "jurystream_hard_samples_total",
            "Hard samples written for training, by label source",
            ["label_source"],
            registry=r,
        )
        self.model_updates = Counter(
            "jurystream_model_updates_total",
            "New juror versions announced on the model-updates topic",
            ["juror"],
            registry=r,
        )
        self.model_swaps = Counter(
            "jurystream_model_swaps_total",
            "Announced juror versions a worker swapped in or refused (corrupt, unloadable)",
            ["juror", "outcome"],
            registry=r,
        )
        self.training_runs = Counter(
            "jurystream_training_runs_total",
            "Fine-tuning rounds by juror and outcome (promoted, rejected, failed)",
            ["juror", "outcome"],
            registry=r,
        )
        self.training_duration = Histogram(
            "jurystream_training_duration_seconds",
            "Wall time of a fine-tuning round (train, evaluate, export)",
            buckets=TRAINING_BUCKETS,
            registry=r,
        )

        # --- Kafka ---
        self.consumer_lag = Gauge(
            "jurystream_consumer_lag",
            "Messages behind the partition's high watermark, per consumer group and partition",
            ["group", "topic", "partition"],
            registry=r,
        )
        self._lag_keys: dict[str, set[tuple[str, str]]] = {}

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Expose /metrics, /livez and /readyz over HTTP; port 0 means no endpoint."""
        if port:
            server = make_server(
                host,
                port,
                self.wsgi_app(),
                ThreadingWSGIServer,
                handler_class=_QuietHandler,
            )
            threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()

    def wsgi_app(self) -> Callable[..., Any]:
        metrics_app = make_wsgi_app(self.registry)
        checks = {"/livez": self.health.live, "/readyz": self.health.ready}

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            check = checks.get(environ.get("PATH_INFO", ""))
            if check is None:
                return metrics_app(environ, start_response)
            ok, why = check()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [why.encode() + b"\n"]

        return app

    def observe_reviewer_call(
        self,
        backend: str,
        outcome: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        """One call to a reviewer backend, with what it billed (failed calls may bill too).

        Counting tokens and dollars per call (rather than per case) is what lets the dashboard
        price the counterfactual "every message to the reviewer" from the measured mean.
        """
        if outcome not in REVIEWER_CALL_OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {REVIEWER_CALL_OUTCOMES}")
        if input_tokens < 0 or output_tokens < 0 or cost_usd < 0:
            raise ValueError("tokens and cost must be non-negative")
        self.reviewer_calls.labels(backend, outcome).inc()
        self.reviewer_tokens.labels(backend, "input").inc(input_tokens)
        self.reviewer_tokens.labels(backend, "output").inc(output_tokens)
        self.reviewer_cost.labels(backend).inc(cost_usd)

    def set_budget(self, remaining_usd: Mapping[str, float], exhausted: bool) -> None:
        """The budget windows' remaining USD (by window name) and whether cases are waiting."""
        for window, remaining in remaining_usd.items():
            self.reviewer_budget_remaining.labels(window).set(max(0.0, remaining))
        self.reviewer_budget_exhausted.set(1 if exhausted else 0)

    def declare_jurors(self, jurors: Iterable[str]) -> None:
        """Create the trainer's per-juror series at zero when it starts.

        A trainer that has not finished a round yet then reads "0 rounds" on the dashboard
        instead of "no data", and increase() counts the first round.
        """
        for juror in jurors:
            for outcome in TRAINING_OUTCOMES:
                self.training_runs.labels(juror, outcome)

    def observe_training_run(self, juror: str, outcome: str, duration_s: float) -> None:
        """One fine-tuning round of ``juror``: promoted, rejected (by the gate) or failed."""
        if outcome not in TRAINING_OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {TRAINING_OUTCOMES}")
        self.training_runs.labels(juror, outcome).inc()
        self.training_duration.observe(duration_s)

    def set_source_quality(
        self, source: str, accuracy: float, macro_f1: float, samples: int
    ) -> None:
        """Publish the rolling window of one label source (jury, reviewer, ...)."""
        _publish(
            (self.online_accuracy, self.online_macro_f1, self.online_window),
            source,
            accuracy,
            macro_f1,
            samples,
        )

    def set_juror_quality(self, juror: str, accuracy: float, macro_f1: float, samples: int) -> None:
        """Publish the rolling window of one juror's votes."""
        _publish(
            (self.juror_accuracy, self.juror_macro_f1, self.juror_window),
            juror,
            accuracy,
            macro_f1,
            samples,
        )

    def set_audit(self, estimates: Mapping[str, AuditEstimate]) -> None:
        """Publish the audit's estimates (monitor); a label with no audit yet has no series."""
        for label, est in estimates.items():
            if est.total:
                for bound, value in (
                    ("estimate", est.accuracy),
                    ("low", est.low),
                    ("high", est.high),
                ):
                    self.audit_accuracy.labels(label, bound).set(value)
            self.audit_window.labels(label).set(est.total)

    def set_consumer_lags(self, group: str, lags: Mapping[tuple[str, int], int]) -> None:
        """Replace this process's lag report for ``group`` by ``{(topic, partition): lag}``.

        Partitions this process no longer owns are removed, so after a rebalance the new owner
        is the only one reporting them.
        """
        keys = {(topic, str(partition)) for topic, partition in lags}
        for topic, part in self._lag_keys.get(group, set()) - keys:
            self.consumer_lag.remove(group, topic, part)
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(group, topic, str(partition)).set(max(0, lag))
        self._lag_keys[group] = keys


def _publish(
    gauges: tuple[Gauge, Gauge, Gauge], key: str, accuracy: float, macro_f1: float, samples: int
) -> None:
    """Set one window's gauges; an empty window (NaN) stays unpublished rather than reading 0."""
    if math.isnan(accuracy) or math.isnan(macro_f1):
        return
    for gauge, value in zip(gauges, (accuracy, macro_f1, samples), strict=True):
        gauge.labels(key).set(value)


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape or probe."""

    def log_message(self, format: str, *args: Any) -> None:
        pass
