"""Every metric family a role may export: names, labels and help text, written as data.

Names and labels are a public contract: the Grafana dashboard (``exporters/dashboard.py``), the
alert rules (``deploy/prometheus``), the demo's live view and the benches read them. Each role
picks the families it exports from here (``exporters/metrics/<role>.py``), so a family two roles
share is declared once and cannot drift apart between them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# The ``task`` label of a single-task deployment (empty ``Settings.tasks``). Per-task families
# always carry the label, with this value when there is one task, rather than dropping it:
# a series then keeps its identity when a deployment adds tasks, the dashboard's ``task``
# variable has a value to list and select, and a ``task=~"$task"`` matcher never drops a
# single-task series (Prometheus reads an empty label value as a missing label).
DEFAULT_TASK = "default"
TASK = "task"


def task_names(configured: Iterable[str]) -> tuple[str, ...]:
    """The ``task`` label values of a deployment: its configured tasks, else the default."""
    return tuple(configured) or (DEFAULT_TASK,)


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TRAINING_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600)


@dataclass(frozen=True, slots=True)
class CounterFamily:
    name: str
    doc: str
    labels: tuple[str, ...] = ()

    def create(self, registry: CollectorRegistry) -> Counter:
        return Counter(self.name, self.doc, self.labels, registry=registry)


@dataclass(frozen=True, slots=True)
class GaugeFamily:
    name: str
    doc: str
    labels: tuple[str, ...] = ()

    def create(self, registry: CollectorRegistry) -> Gauge:
        return Gauge(self.name, self.doc, self.labels, registry=registry)


@dataclass(frozen=True, slots=True)
class HistogramFamily:
    name: str
    doc: str
    buckets: tuple[float, ...]
    labels: tuple[str, ...] = ()

    def create(self, registry: CollectorRegistry) -> Histogram:
        return Histogram(self.name, self.doc, self.labels, buckets=self.buckets, registry=registry)


# --- every role ---
ROLE_INFO = GaugeFamily("jurystream_role_info", "1 per running process of a role", ("role",))
CONSUMER_LAG = GaugeFamily(
    "jurystream_consumer_lag",
    "Messages behind the partition's high watermark, per consumer group and partition",
    ("group", "topic", "partition"),
)

# --- shared by some roles ---
MESSAGES = CounterFamily(
    "jurystream_messages_total",
    "Messages by role and outcome (labeled, escalated, audited, unreviewed, "
    "dead_lettered, reviewed, audit_reviewed, parked)",
    ("role", "outcome"),
)
STAGE_LATENCY = HistogramFamily(
    "jurystream_stage_latency_seconds",
    "Latency per stage (batch_wait, inference, produce, end_to_end, review)",
    LATENCY_BUCKETS,
    ("stage",),
)
LABELS_OUT = CounterFamily(
    "jurystream_labels_total",
    "Final labels written to the labels topic, per task, by source and label",
    (TASK, "source", "label"),
)
JURY_THRESHOLD = GaugeFamily(
    "jurystream_jury_threshold",
    "Confidence threshold each task's jury serves (worker) or the controller chose (trainer)",
    (TASK,),
)

# --- worker ---
BATCH_SIZE = HistogramFamily("jurystream_batch_size", "Posts per micro-batch", BATCH_BUCKETS)
JUROR_VOTES = CounterFamily(
    "jurystream_juror_votes_total",
    "Votes cast per task, juror and label",
    (TASK, "juror", "label"),
)
JUROR_AGREEMENT = CounterFamily(
    "jurystream_juror_agreement_total",
    "Votes per task and juror that agreed with the task jury's final label",
    (TASK, "juror"),
)
# Per task, not per post: a post escalated on 2 of its 4 tasks counts ``escalated`` for those
# two and ``accepted`` for the others (``jurystream_messages_total`` counts the post once).
TASK_DECISIONS = CounterFamily(
    "jurystream_task_decisions_total",
    "The jury's decisions per task: accepted (its label stands), escalated (sent to the "
    "reviewer), unreviewed (escalated, but the review budget did not cover it)",
    (TASK, "outcome"),
)
MODEL_VERSION = GaugeFamily(
    "jurystream_model_version_info",
    "1 for the model version each juror serves",
    ("juror", "version"),
)
MODEL_SWAPS = CounterFamily(
    "jurystream_model_swaps_total",
    "Announced juror versions a worker swapped in or refused (corrupt, unloadable)",
    ("juror", "outcome"),
)

# --- reviewer: calls, tokens, dollars, budget, cases ---
REVIEWER_CALLS = CounterFamily(
    "jurystream_reviewer_calls_total",
    "Reviewer backend calls by backend and outcome (ok, retry, invalid, error)",
    ("backend", "outcome"),
)
REVIEWER_TOKENS = CounterFamily(
    "jurystream_reviewer_tokens_total",
    "Tokens billed by reviewer backends, by kind (input, output)",
    ("backend", "kind"),
)
REVIEWER_COST = CounterFamily(
    "jurystream_reviewer_cost_usd_total",
    "USD spent on reviewer calls (measured tokens x configured prices)",
    ("backend",),
)
BUDGET_REMAINING = GaugeFamily(
    "jurystream_reviewer_budget_remaining_usd",
    "USD left in the current budget window of this process (hour, day)",
    ("window",),
)
BUDGET_EXHAUSTED = GaugeFamily(
    "jurystream_reviewer_budget_exhausted",
    "1 while review cases wait for the next budget window, else 0",
)
REVIEW_CASES = GaugeFamily(
    "jurystream_review_cases",
    "Review cases this process holds now: in_flight (all) and parked (waiting to retry)",
    ("state",),
)
AUDITS = CounterFamily(
    "jurystream_audits_total",
    "Audit cases reviewed per task, by whether the reviewer agreed with the jury's label",
    (TASK, "result"),
)
HARD_SAMPLES = CounterFamily(
    "jurystream_hard_samples_total",
    "Hard samples written for training, per task and label source",
    (TASK, "label_source"),
)

# --- trainer: threshold controller and fine-tuning rounds ---
TARGET_ACCURACY = GaugeFamily(
    "jurystream_target_accuracy",
    "Accuracy of accepted labels the threshold controller holds, per task (trainer)",
    (TASK,),
)
TRAINING_RUNS = CounterFamily(
    "jurystream_training_runs_total",
    "Fine-tuning rounds by juror and outcome (promoted, rejected, failed)",
    ("juror", "outcome"),
)
TRAINING_DURATION = HistogramFamily(
    "jurystream_training_duration_seconds",
    "Wall time of a fine-tuning round (train, evaluate, export)",
    TRAINING_BUCKETS,
)

# --- monitor: online quality against gold feedback, audits, drift, announced versions ---
FEEDBACK = CounterFamily(
    "jurystream_feedback_total",
    "Labels joined with gold feedback, per task, by label source and result (correct, wrong)",
    (TASK, "source", "result"),
)
JUROR_FEEDBACK = CounterFamily(
    "jurystream_juror_feedback_total",
    "Juror votes joined with gold feedback, per task, by juror and result (correct, wrong)",
    (TASK, "juror", "result"),
)
FEEDBACK_UNMATCHED = CounterFamily(
    "jurystream_feedback_unmatched_total",
    "Records the monitor dropped (invalid; expired before their join partner arrived)",
    ("topic", "reason"),
)
ONLINE_ACCURACY = GaugeFamily(
    "jurystream_online_accuracy",
    "Rolling accuracy against feedback per task and label source, over the window",
    (TASK, "source"),
)
ONLINE_MACRO_F1 = GaugeFamily(
    "jurystream_online_macro_f1",
    "Rolling macro-F1 against feedback per task and label source, over the window",
    (TASK, "source"),
)
ONLINE_WINDOW = GaugeFamily(
    "jurystream_online_window_samples",
    "Joined samples in the rolling window per task and label source (weights for averaging)",
    (TASK, "source"),
)
JUROR_ACCURACY = GaugeFamily(
    "jurystream_juror_online_accuracy",
    "Rolling accuracy of each juror's vote on each task against feedback",
    (TASK, "juror"),
)
JUROR_MACRO_F1 = GaugeFamily(
    "jurystream_juror_online_macro_f1",
    "Rolling macro-F1 of each juror's vote on each task against feedback",
    (TASK, "juror"),
)
JUROR_WINDOW = GaugeFamily(
    "jurystream_juror_online_window_samples",
    "Joined samples in each task's and juror's rolling window (weights for averaging)",
    (TASK, "juror"),
)
AUDIT_ACCURACY = GaugeFamily(
    "jurystream_audit_accuracy",
    "Accuracy of the jury's accepted labels estimated by audits over the monitor's "
    "window, per task and jury label (and 'all'), with its 95% interval "
    "(bound=estimate|low|high)",
    (TASK, "label", "bound"),
)
AUDIT_WINDOW = GaugeFamily(
    "jurystream_audit_window",
    "Audits the audit accuracy was estimated from, per task and jury label (and 'all')",
    (TASK, "label"),
)
LABEL_DRIFT = GaugeFamily(
    "jurystream_label_drift_psi",
    "PSI of each task's recent label distribution against the reference "
    "(training: configured training distribution; first_window: this process's start)",
    (TASK, "reference"),
)
DRIFT_WINDOW = GaugeFamily(
    "jurystream_label_drift_window_samples",
    "Labels in each task's drift window of this process",
    (TASK,),
)
MODEL_UPDATES = CounterFamily(
    "jurystream_model_updates_total",
    "New juror versions announced on the model-updates topic",
    ("juror",),
)


FAMILIES: tuple[CounterFamily | GaugeFamily | HistogramFamily, ...] = tuple(
    family
    for family in list(globals().values())
    if isinstance(family, CounterFamily | GaugeFamily | HistogramFamily)
)
# The families labeled by task: the dashboard filters each of their series on its task variable.
PER_TASK: frozenset[str] = frozenset(f.name for f in FAMILIES if TASK in f.labels)
