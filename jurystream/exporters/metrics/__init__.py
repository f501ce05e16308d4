"""Metrics per role (Prometheus, names prefixed ``jurystream_``), one registry per process.

Each role creates its own class (``WorkerMetrics``, ``ReviewerMetrics``, ``TrainerMetrics``,
``MonitorMetrics``), which registers only the families that role exports (``families.py``) and
has one method per thing that happens in the role; every class serves its registry on the
role's own port next to /livez and /readyz (``base.py``). When a role runs as several
processes, Prometheus scrapes each and the dashboard sums over instances, so no shared state
is needed between processes. That rule shapes what is exported:

- everything that must add up across processes is a counter (messages, votes, reviewer calls,
  tokens, USD, feedback verdicts); rates, escalation share, agreement share, exact accuracy and
  the counterfactual cost are computed from counters in PromQL (see deploy/grafana and
  deploy/prometheus), never averaged from per-process ratios;
- per-process rolling figures that cannot be summed (rolling macro-F1, PSI drift) are gauges
  that come with the window size they were computed on, so dashboards can weight them;
- per-partition gauges (consumer lag) are replaced as a whole on every report, so a process
  that lost a partition in a rebalance stops reporting it and sums do not count it twice;
- series the dashboard or alerts read as rates or "none yet" are created at zero when the role
  starts, so they read 0 rather than "no data";
- what the jury decides and how good it is (labels, votes, agreement, threshold, escalations
  per task, verdicts, audits, hard samples, online quality, drift) carries a ``task`` label,
  ``DEFAULT_TASK`` in a single-task deployment; messages, latencies, cost and lag are per
  post or per call and carry none. Each role's class is built with the deployment's tasks
  (``task_names``), for the per-task series it creates at zero.
"""

from jurystream.exporters.metrics.base import RoleMetrics
from jurystream.exporters.metrics.families import DEFAULT_TASK, task_names
from jurystream.exporters.metrics.monitor import MonitorMetrics
from jurystream.exporters.metrics.reviewer import ReviewerMetrics
from jurystream.exporters.metrics.trainer import TrainerMetrics
from jurystream.exporters.metrics.worker import WorkerMetrics

ROLE_METRICS: dict[str, type[RoleMetrics]] = {
    cls.role: cls for cls in (WorkerMetrics, ReviewerMetrics, TrainerMetrics, MonitorMetrics)
}

__all__ = [
    "DEFAULT_TASK",
    "ROLE_METRICS",
    "MonitorMetrics",
    "ReviewerMetrics",
    "RoleMetrics",
    "TrainerMetrics",
    "WorkerMetrics",
    "task_names",
]
