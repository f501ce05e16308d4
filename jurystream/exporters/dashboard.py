"""The Grafana dashboard, generated from one list of panels (``deploy/grafana/dashboards``).

Written as data rather than hand-edited JSON so that the PromQL lives in one reviewable place,
the tests can read every query from here, and the checked-in JSON is provably what this
module produces (``python -m jurystream.exporters.dashboard > deploy/grafana/.../jurystream.json``).

Query rules (see ``jurystream.exporters.metrics``): counters are summed over instances before
dividing, so the panels stay exact with any number of processes per role; per-process rolling
gauges are averaged weighted by the window size each process reports. Every selector is
written by ``series``, which adds ``job=~"$job"``: the ``job`` variable (all jobs by default)
picks the deployment, and the ``datasource`` variable its Prometheus. A selector of a per-task
family (``families.PER_TASK``) also gets ``task=~"$task"``: the ``task`` variable (all tasks
by default; ``default`` alone in a single-task deployment) picks the policies shown, and the
per-task panels split their lines by task.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from jurystream.exporters.metrics.families import PER_TASK, TASK_DECISIONS

UID = "jurystream"
# The provisioned data source (deploy/grafana/provisioning): the datasource variable's default.
PROVISIONED_DATASOURCE = "jurystream-prometheus"
# Every panel and query reads the data source the ``datasource`` variable picks, so the
# dashboard imports into any Grafana, whatever its Prometheus is called.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# The ``job`` variable lists the scrape jobs that export this metric (every role exports it,
# in compose and Kubernetes alike); "All" matches every job.
JOB_SOURCE = "jurystream_role_info"
JOB_QUERY = f"label_values({JOB_SOURCE}, job)"
ALL_JOBS = ".*"
JOB_MATCHER = 'job=~"$job"'
# The ``task`` variable lists the tasks the workers serve: their per-task decision counts exist
# from start-up, at zero, for every configured task (``default`` with one task).
TASK_SOURCE = TASK_DECISIONS.name
TASK_QUERY = f"label_values({TASK_SOURCE}{{{JOB_MATCHER}}}, task)"
ALL_TASKS = ".*"
TASK_MATCHER = 'task=~"$task"'
RI = "$__rate_interval"
RANGE = "$__range"


def series(metric: str, *matchers: str) -> str:
    """A selector of one metric, restricted to the chosen jobs (and tasks, for a per-task
    family): the one place that writes label matchers, so no query can forget the ``job``
    or the ``task`` variable."""
    scope = (JOB_MATCHER, TASK_MATCHER) if metric in PER_TASK else (JOB_MATCHER,)
    return metric + "{" + ",".join((*scope, *matchers)) + "}"


def rate(metric: str, *matchers: str, window: str = RI) -> str:
    return f"rate({series(metric, *matchers)}[{window}])"


def increase(metric: str, *matchers: str, window: str = RI) -> str:
    return f"increase({series(metric, *matchers)}[{window}])"


MESSAGES = "jurystream_messages_total"
WORKER_MESSAGES = (MESSAGES, 'role="worker"', 'outcome=~"labeled|escalated"')
ESCALATED = rate(MESSAGES, 'role="worker"', 'outcome="escalated"')
ESCALATION = f"sum({ESCALATED}) / sum({rate(*WORKER_MESSAGES)})"
SPENT = f"sum({increase('jurystream_reviewer_cost_usd_total', window=RANGE)})"
REVIEWED = increase(MESSAGES, 'role="reviewer"', 'outcome="reviewed"', window=RANGE)
# Measured USD per reviewed case (all calls, retries included, over the dashboard's range)
# times every valid message: what labeling everything with the reviewer would have cost.
COUNTERFACTUAL = f"sum({increase(*WORKER_MESSAGES, window=RANGE)}) * {SPENT} / sum({REVIEWED})"
# Per task: the share of a task's decisions the jury sent to the reviewer (a post escalated on
# two tasks counts for both); as the post-level share, without the budget-capped ones.
TASK_ESCALATED = rate(TASK_DECISIONS.name, 'outcome="escalated"')
TASK_DECIDED = rate(TASK_DECISIONS.name, 'outcome=~"accepted|escalated"')
TASK_ESCALATION = f"sum by (task) ({TASK_ESCALATED}) / sum by (task) ({TASK_DECIDED})"


def weighted(gauge: str, weight: str, by: str) -> str:
    """Average of a per-process gauge across processes, weighted by its window size (``by``
    lists the labels kept, ``task`` among them for a per-task gauge)."""
    gauge, weight = series(gauge), series(weight)
    return f"sum by ({by}) ({gauge} * {weight}) / sum by ({by}) ({weight})"


def audit(bound: str) -> str:
    """The audit accuracy per task over every monitor, weighted by the audits each one saw
    (the window gauge has no ``bound`` label, hence ``ignoring``)."""
    accuracy = series("jurystream_audit_accuracy", 'label="all"', f'bound="{bound}"')
    window = series("jurystream_audit_window", 'label="all"')
    return f"sum by (task) ({accuracy} * ignoring(bound) {window}) / sum by (task) ({window})"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # timeseries, stat, table
    targets: tuple[Target, ...]
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    thresholds: tuple[tuple[float, str], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def quantile(q: float, stage_by: str = "stage") -> Target:
    expr = (
        f"histogram_quantile({q}, sum by (le, {stage_by}) "
        f"({rate('jurystream_stage_latency_seconds_bucket')}))"
    )
    return Target(expr, f"p{round(q * 100)} {{{{{stage_by}}}}}")


ROWS: tuple[Row, ...] = (
    Row(
        "Throughput and latency",
        (
            Panel(
                "Throughput by outcome",
                "timeseries",
                (
                    Target(
                        f"sum by (role, outcome) ({rate(MESSAGES)})",
                        "{{role}} {{outcome}}",
                    ),
                ),
                unit="ops",
                description="Messages per second, summed over every process of each role.",
            ),
            Panel(
                "Latency p50 / p99 per stage",
                "timeseries",
                (quantile(0.5), quantile(0.99)),
                unit="s",
            ),
            Panel(
                "Escalation rate",
                "timeseries",
                (
                    Target(ESCALATION, "posts (any task)"),
                    Target(TASK_ESCALATION, "{{task}}"),
                ),
                unit="percentunit",
                description="Share of valid messages the jury sent to the reviewer, and per "
                "task the share of its decisions (a post escalated on two tasks counts for "
                "both; the post-level line does not follow the task variable).",
            ),
            Panel(
                "Dead letters",
                "timeseries",
                (
                    Target(
                        "sum(" + rate(MESSAGES, 'outcome="dead_lettered"') + ")",
                        "dead letters/s",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Micro-batch size",
                "timeseries",
                (
                    Target(
                        f"sum({rate('jurystream_batch_size_sum')})"
                        f" / sum({rate('jurystream_batch_size_count')})",
                        "mean",
                    ),
                ),
            ),
            Panel(
                "Consumer lag",
                "timeseries",
                (
                    Target(
                        "sum by (group, topic) "
                        f"(max by (group, topic, partition) ({series('jurystream_consumer_lag')}))",
                        "{{group}} {{topic}}",
                    ),
                ),
                description="Messages behind the high watermark; a partition reported twice "
                "during a rebalance counts once.",
            ),
        ),
    ),
    Row(
        "Cost",
        (
            Panel(
                "Reviewer spend vs. reviewing everything (dashboard range)",
                "stat",
                (
                    Target(SPENT, "spent", instant=True),
                    Target(COUNTERFACTUAL, "all to reviewer", instant=True),
                    Target(f"({COUNTERFACTUAL}) - {SPENT}", "saved", instant=True),
                ),
                unit="currencyUSD",
                width=12,
            ),
            Panel(
                "Reviewer spend rate",
                "timeseries",
                (
                    Target(
                        f"sum by (backend) ({rate('jurystream_reviewer_cost_usd_total')}) * 3600",
                        "{{backend}}",
                    ),
                ),
                unit="currencyUSD",
                description="USD per hour.",
            ),
            Panel(
                "Reviewer calls",
                "timeseries",
                (
                    Target(
                        f"sum by (backend, outcome) ({rate('jurystream_reviewer_calls_total')})",
                        "{{backend}} {{outcome}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Reviewer tokens",
                "timeseries",
                (
                    Target(
                        f"sum by (backend, kind) ({rate('jurystream_reviewer_tokens_total')})",
                        "{{backend}} {{kind}}",
                    ),
                ),
                unit="short",
                description="Tokens per second.",
            ),
            Panel(
                "Reviewer budget",
                "timeseries",
                (
                    Target(
                        f"sum by (window) ({series('jurystream_reviewer_budget_remaining_usd')})",
                        "left this {{window}}",
                    ),
                ),
                unit="currencyUSD",
                description="USD left in each budget window, for all reviewer replicas together "
                "(the spend topic). Exhausted: JurystreamReviewerBudgetExhausted fires.",
            ),
            Panel(
                "Review cases in hand",
                "timeseries",
                (Target(f"sum by (state) ({series('jurystream_review_cases')})", "{{state}}"),),
                unit="short",
                description="Cases the reviewers hold now; parked ones wait to be retried "
                "(an outage, the budget, or a case the endpoint keeps refusing). Parked for long "
                "holds back that partition's committed offset, not the cases behind it.",
            ),
        ),
    ),
    Row(
        "Quality",
        (
            Panel(
                "Audit: accuracy of accepted labels (no gold needed)",
                "timeseries",
                (
                    *(
                        Target(audit(bound), f"audit {bound} {{{{task}}}}")
                        for bound in ("estimate", "low", "high")
                    ),
                    Target(
                        f"max by (task) ({series('jurystream_target_accuracy')})",
                        "controller target {{task}}",
                    ),
                ),
                unit="percentunit",
                description=(
                    "A random share (jury.audit_rate) of the jury's confident labels also goes "
                    "to the reviewer; their agreement estimates the accuracy of accepted labels, "
                    "with its 95% interval, over the monitor's window. Below the target, the "
                    "controller raises the threshold (more escalation)."
                ),
            ),
            Panel(
                "Jury threshold and escalation",
                "timeseries",
                (
                    Target(
                        f"max by (task, instance) ({series('jurystream_jury_threshold')})",
                        "threshold {{task}} {{instance}}",
                    ),
                    Target(TASK_ESCALATION, "escalated share {{task}}"),
                ),
                unit="percentunit",
                description=(
                    "The confidence threshold each worker serves per task (set by the "
                    "trainer's threshold controller after accepted rounds and audits) and the "
                    "share of the task's decisions escalated to review: as the jurors "
                    "improve, both fall."
                ),
            ),
            Panel(
                "Accuracy per label source (rolling window)",
                "timeseries",
                (
                    Target(
                        weighted(
                            "jurystream_online_accuracy",
                            "jurystream_online_window_samples",
                            "task, source",
                        ),
                        "accuracy {{task}} {{source}}",
                    ),
                    Target(
                        weighted(
                            "jurystream_online_macro_f1",
                            "jurystream_online_window_samples",
                            "task, source",
                        ),
                        "macro-F1 {{task}} {{source}}",
                    ),
                ),
                unit="percentunit",
                description="Against gold feedback, over the monitor's rolling window.",
            ),
            Panel(
                "Accuracy per label source (exact, dashboard range)",
                "stat",
                (
                    Target(
                        "sum by (task, source) ("
                        + increase("jurystream_feedback_total", 'result="correct"', window=RANGE)
                        + ") / sum by (task, source) "
                        f"({increase('jurystream_feedback_total', window=RANGE)})",
                        "{{task}} {{source}}",
                        instant=True,
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Per-juror accuracy and macro-F1 (rolling window)",
                "timeseries",
                (
                    Target(
                        weighted(
                            "jurystream_juror_online_accuracy",
                            "jurystream_juror_online_window_samples",
                            "task, juror",
                        ),
                        "accuracy {{task}} {{juror}}",
                    ),
                    Target(
                        weighted(
                            "jurystream_juror_online_macro_f1",
                            "jurystream_juror_online_window_samples",
                            "task, juror",
                        ),
                        "macro-F1 {{task}} {{juror}}",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Per-juror agreement with the jury",
                "timeseries",
                (
                    Target(
                        f"sum by (task, juror) ({rate('jurystream_juror_agreement_total')})"
                        f" / sum by (task, juror) ({rate('jurystream_juror_votes_total')})",
                        "{{task}} {{juror}}",
                    ),
                ),
                unit="percentunit",
            ),
            Panel(
                "Votes per juror and label",
                "timeseries",
                (
                    Target(
                        f"sum by (task, juror, label) ({rate('jurystream_juror_votes_total')})",
                        "{{task}} {{juror}} {{label}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Label drift (PSI)",
                "timeseries",
                (
                    Target(
                        f"max by (task, reference) ({series('jurystream_label_drift_psi')})",
                        "{{task}} PSI vs {{reference}}",
                    ),
                ),
                description="< 0.1 stable, 0.1–0.25 moderate, > 0.25 significant shift.",
                thresholds=((0.0, "green"), (0.1, "orange"), (0.25, "red")),
            ),
            Panel(
                "Label distribution",
                "timeseries",
                (
                    Target(
                        f"sum by (task, label) ({rate('jurystream_labels_total')})",
                        "{{task}} {{label}}",
                    ),
                ),
                unit="ops",
            ),
            Panel(
                "Feedback join",
                "timeseries",
                (
                    Target(
                        f"sum by (task, result) ({rate('jurystream_feedback_total')})",
                        "joined {{task}} {{result}}",
                    ),
                    Target(
                        f"sum by (topic, reason) ({rate('jurystream_feedback_unmatched_total')})",
                        "dropped {{topic}} {{reason}}",
                    ),
                ),
                unit="ops",
            ),
        ),
    ),
    Row(
        "Models and continual learning",
        (
            Panel(
                "Model versions",
                "table",
                (
                    Target(
                        "count by (juror, version) "
                        f"({series('jurystream_model_version_info')} == 1)",
                        instant=True,
                    ),
                ),
                description="Processes serving each juror version (more than one version "
                "per juror while a hot swap rolls out).",
            ),
            Panel(
                "Hot swaps in workers",
                "timeseries",
                (
                    Target(
                        f"sum by (juror, outcome) ({increase('jurystream_model_swaps_total')})",
                        "{{juror}} {{outcome}}",
                    ),
                ),
                description="Announced versions workers swapped in, or refused (corrupt or "
                "unloadable: the previous version keeps serving).",
            ),
            Panel(
                "Processes per role",
                "stat",
                (
                    Target(
                        f"sum by (role) ({series(JOB_SOURCE)})",
                        "{{role}}",
                        instant=True,
                    ),
                ),
            ),
            Panel(
                "Hard samples and model updates",
                "timeseries",
                (
                    Target(
                        "sum by (task, label_source) "
                        f"({rate('jurystream_hard_samples_total')}) * 3600",
                        "hard samples {{task}} ({{label_source}})",
                    ),
                    Target(
                        f"sum by (juror) ({increase('jurystream_model_updates_total')})",
                        "updates {{juror}}",
                    ),
                ),
                description="Hard samples written per hour; new juror versions announced per "
                "interval (counters through rate/increase, so restarts do not break the lines).",
            ),
            Panel(
                "Training rounds",
                "timeseries",
                (
                    Target(
                        f"sum by (juror, outcome) ({increase('jurystream_training_runs_total')})",
                        "{{juror}} {{outcome}}",
                    ),
                    Target(
                        f"sum({rate('jurystream_training_duration_seconds_sum')}) * 60",
                        "minutes training per hour",
                    ),
                ),
            ),
        ),
    ),
)


def targets() -> list[Target]:
    """Every query of the dashboard (what the Prometheus test evaluates)."""
    return [t for row in ROWS for panel in row.panels for t in panel.targets]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    field_defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.thresholds:
        field_defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [
                {"color": color, "value": None if i == 0 else value}
                for i, (value, color) in enumerate(panel.thresholds)
            ],
        }
    out: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "fieldConfig": {"defaults": field_defaults, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": t.expr,
                "legendFormat": t.legend or "__auto",
                "instant": t.instant,
                "range": not t.instant,
                **({"format": "table"} if panel.kind == "table" else {}),
            }
            for i, t in enumerate(panel.targets)
        ],
    }
    if panel.description:
        out["description"] = panel.description
    if panel.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "textMode": "value_and_name"}
    if panel.kind == "table":
        out["transformations"] = [{"id": "organize", "options": {"excludeByName": {"Time": True}}}]
    out.update(panel.extra)
    return out


def variables() -> list[dict[str, Any]]:
    """The data source (default: the provisioned one), the scrape jobs to show (default:
    all), so one dashboard serves compose and Kubernetes stacks and several deployments, and
    the tasks to show (default: all; the chosen jobs' tasks are listed)."""
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "Prometheus", "value": PROVISIONED_DATASOURCE},
            "hide": 0,
            "refresh": 1,
            "regex": "",
        },
        {
            "name": "job",
            "label": "Job",
            "type": "query",
            "datasource": DATASOURCE,
            "definition": JOB_QUERY,
            "query": JOB_QUERY,
            "refresh": 2,  # on time range change: a new deployment's jobs appear
            "multi": True,
            "includeAll": True,
            "allValue": ALL_JOBS,
            "current": {"text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
            "regex": "",
        },
        {
            "name": "task",
            "label": "Task",
            "type": "query",
            "datasource": DATASOURCE,
            "definition": TASK_QUERY,
            "query": TASK_QUERY,
            "refresh": 2,  # on time range change: tasks a deployment adds appear
            "multi": True,
            "includeAll": True,
            "allValue": ALL_TASKS,
            "current": {"text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
            "regex": "",
        },
    ]


def build() -> dict[str, Any]:
    """The dashboard JSON model, laid out row by row on Grafana's 24-column grid."""
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for row in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel_json(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": UID,
        "title": "jurystream",
        "description": "Throughput, latency, cost, quality and drift of a jurystream deployment.",
        "tags": ["jurystream", "kafka", "labeling"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables()},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
