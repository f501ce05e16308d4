"""The one metrics registry (Prometheus, names prefixed ``jurystream_``).

Every role creates one ``Metrics`` and serves it on its own port; when a role runs as several
processes, Prometheus scrapes each and the dashboard sums over instances, so no shared state is
needed between processes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, role: str, registry: CollectorRegistry | None = None) -> None:
        self.role = role
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "jurystream_messages_total",
            "Messages by role and outcome (labeled, escalated, dead_lettered, reviewed, parked)",
            ["role", "outcome"],
            registry=r,
        )
        self.stage_latency = Histogram(
            "jurystream_stage_latency_seconds",
            "Latency per stage (inference, produce, end_to_end, review)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "jurystream_batch_size", "Posts per micro-batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.juror_votes = Counter(
            "jurystream_juror_votes_total", "Votes cast per juror and label", ["juror", "label"],
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

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Expose /metrics over HTTP; port 0 means no endpoint."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
