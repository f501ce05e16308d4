"""What every role's metrics share: the registry, the HTTP endpoint, role_info and lag.

A role's metrics class (``exporters/metrics/<role>.py``) adds the families that role exports
and one method per thing that happens in it; the role's code calls those methods and never
touches a Prometheus object.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from jurystream.exporters.health import Health
from jurystream.exporters.metrics.families import (
    CONSUMER_LAG,
    DEFAULT_TASK,
    MESSAGES,
    ROLE_INFO,
    task_names,
)


class RoleMetrics:
    """The one registry of a process running ``role``.

    ``outcomes``: the ``jurystream_messages_total`` outcomes the role counts; they are created
    at zero at start-up, so rate() and "no dead letters" read as 0, not as a missing series.
    A role without outcomes does not export the family.

    ``tasks``: the deployment's tasks (``Settings.tasks``; none: one task, ``DEFAULT_TASK``).
    Per-task series a role creates at zero are created for each of them.
    """

    role: ClassVar[str]
    outcomes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, registry: CollectorRegistry | None = None, tasks: Iterable[str] = (DEFAULT_TASK,)
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.tasks = task_names(tasks)
        self.health = Health()  # /livez and /readyz, served next to /metrics
        ROLE_INFO.create(self.registry).labels(self.role).set(1)
        self._lag = CONSUMER_LAG.create(self.registry)
        self._lag_keys: dict[str, set[tuple[str, str]]] = {}
        self._messages: Counter | None = None
        if self.outcomes:
            self._messages = MESSAGES.create(self.registry)
            for outcome in self.outcomes:
                self._messages.labels(self.role, outcome)

    def _count(self, outcome: str) -> None:
        """One message of this role ended with ``outcome`` (one of ``outcomes``)."""
        if self._messages is None or outcome not in self.outcomes:
            raise ValueError(f"the {self.role} does not count {outcome!r} messages")
        self._messages.labels(self.role, outcome).inc()

    def report_lag(self, group: str, lags: Mapping[tuple[str, int], int]) -> None:
        """Replace this process's lag report for ``group`` by ``{(topic, partition): lag}``.

        Partitions this process no longer owns are removed, so after a rebalance the new owner
        is the only one reporting them.
        """
        keys = {(topic, str(partition)) for topic, partition in lags}
        for topic, part in self._lag_keys.get(group, set()) - keys:
            self._lag.remove(group, topic, part)
        for (topic, partition), lag in lags.items():
            self._lag.labels(group, topic, str(partition)).set(max(0, lag))
        self._lag_keys[group] = keys

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


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape or probe."""

    def log_message(self, format: str, *args: Any) -> None:
        pass
