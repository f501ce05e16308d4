"""A real Prometheus scrapes real roles; every dashboard query must return data.

Two workers (three ONNX jurors served from a registry), the reviewer (an OpenAI-compatible
endpoint: the project's test server, so tokens and dollars are really billed), the monitor and
the trainer run as `jurystream` subprocesses on the embedded broker, each with its own metrics
port. Prometheus (Debian's package, as installed by .ci/run) scrapes them every second with the
project's alert rules loaded. Posts with some bad input go in, gold labels go to `feedback`,
and then every query of the Grafana dashboard is evaluated through Prometheus' HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from jurystream.config import Topic
from jurystream.exporters import dashboard
from jurystream.models.serving.registry import Registry
from jurystream.stream.broker import free_port
from jurystream.stream.client import produce
from jurystream.stream.feed import LABELS, FeedItem, generate_posts
from jurystream.testing.openai_server import OpenAIServer, answers_by_text
from tests.fixtures.processes import Roles

ALERTS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
# How the test stands in for Grafana's variables: a dashboard looking at the last minutes.
GRAFANA_VARIABLES = {"$__rate_interval": "2m", "$__range": "10m"}
# The job and task variables' "All", as Grafana substitutes it (the variables' allValue).
ALL_JOBS = ".*"
ALL_TASKS = ".*"
KEY_ENV = "JURYSTREAM_TEST_REVIEWER_KEY"
MODEL = "test-model"
PRICE_IN, PRICE_OUT = 1.0, 4.0  # USD per 1M tokens


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail(
            "the prometheus binary is not installed; this test needs a real Prometheus: "
            "apt-get update && apt-get install -y prometheus (.ci/run does this in CI)"
        )
    return path


class Prometheus:
    """A throwaway Prometheus server on loopback with its own TSDB directory."""

    def __init__(self, binary: str, workdir: Path, jobs: dict[str, list[int]]) -> None:
        self.port = free_port()
        self.workdir = workdir
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [{"targets": [f"127.0.0.1:{port}" for port in ports]}],
                }
                for job, ports in jobs.items()
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        self.log_path = workdir / "prometheus.log"
        self.args = [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url("/-/ready"), timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready within 30s:\n{self.log()}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(self.url(f"/api/v1/{path}?{query}"), timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; returns the result vector (scalars come back as one sample)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])


def grafana_to_promql(expr: str, job: str = ALL_JOBS, task: str = ALL_TASKS) -> str:
    """The query Grafana sends: ``job`` (and ``task``) is "All" (the allValue), one name, or
    several as Grafana formats a multi-value selection for a regex matcher, ``(a|b)``."""
    for variable, value in {**GRAFANA_VARIABLES, "$job": job, "$task": task}.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unhandled Grafana variable in {expr}"
    return expr


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = [float(sample["value"][1]) for sample in result]
    return [v for v in values if math.isfinite(v)]


@pytest.fixture
def prometheus_bin() -> str:
    return prometheus_binary()


class Feeder:
    """Keeps posts (and their gold feedback) flowing, as a live stream would, until stopped.

    Rate panels look at the last minutes, so the stream must still be moving when Prometheus
    is asked; the batches are generated up front so the reviewer's answers can be scripted.
    """

    def __init__(self, roles: Roles, batches: int, size: int = 20) -> None:
        self.roles = roles
        self.batches = [
            list(generate_posts(size, seed=k, bad_every=10, id_prefix=f"prom{k}"))
            for k in range(batches)
        ]
        self.sent: list[FeedItem] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def gold_by_text(self) -> dict[str, str]:
        return {
            json.loads(i.value)["text"]: i.gold
            for batch in self.batches
            for i in batch
            if i.gold is not None
        }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        for batch in self.batches:
            if self._stop.is_set():
                return
            valid = [i for i in batch if i.gold is not None]
            feedback = [
                (i.key, json.dumps({"id": i.key.decode(), "label": i.gold}).encode()) for i in valid
            ]
            asyncio.run(self._send(batch, feedback))
            self.sent += batch
            self._stop.wait(0.5)

    async def _send(self, batch: list[FeedItem], feedback: list[tuple[bytes, bytes]]) -> None:
        await produce(
            self.roles.bootstrap, self.roles.topic(Topic.POSTS), [(i.key, i.value) for i in batch]
        )
        await produce(self.roles.bootstrap, self.roles.topic(Topic.FEEDBACK), feedback)


def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    prometheus_bin: str,
    roles: Roles,
    sklearn_jurors: list[Path],
    openai_server: OpenAIServer,
    tmp_path: Path,
) -> None:
    role_names = ["worker", "reviewer", "monitor", "trainer"]
    # The jurors are served from a registry, as in production; the trainer refines them there.
    registry = Registry(tmp_path / "registry")
    for juror in sklearn_jurors:
        registry.publish(juror)
    names = registry.jurors()
    assert len(names) == len(sklearn_jurors)
    roles.env["JURYSTREAM_REGISTRY"] = str(registry.url)
    # Two workers: each process serves its own endpoint and the dashboard sums over them.
    ports = {
        role: [free_port() for _ in range(2 if role == "worker" else 1)] for role in role_names
    }
    feeder = Feeder(roles, batches=120)
    gold = feeder.gold_by_text()
    openai_server.answer = answers_by_text(gold)

    jobs = {f"jurystream-{role}": port for role, port in ports.items()}
    with Prometheus(prometheus_bin, tmp_path, jobs) as prom:
        juror_args = [arg for name in names for arg in ("--juror", name)]
        for port in ports["worker"]:
            roles.start("worker", *juror_args, "--metrics-port", str(port))
        roles.start(
            "reviewer",
            "--metrics-port",
            str(ports["reviewer"][0]),
            env={
                KEY_ENV: "sk-test",
                "JURYSTREAM_REVIEWER__CHAIN": '["openai"]',
                "JURYSTREAM_REVIEWER__BASE_URL": openai_server.base_url,
                "JURYSTREAM_REVIEWER__MODEL": MODEL,
                "JURYSTREAM_REVIEWER__API_KEY_ENV": KEY_ENV,
                "JURYSTREAM_REVIEWER__PRICES": json.dumps(
                    {MODEL: {"input": PRICE_IN, "output": PRICE_OUT}}
                ),
                "JURYSTREAM_REVIEWER__LABEL_DESCRIPTIONS": json.dumps(
                    {label: label for label in LABELS}
                ),
                "JURYSTREAM_REVIEWER__BUDGET_PER_HOUR_USD": "100",
            },
        )
        roles.start(
            "monitor",
            "--metrics-port",
            str(ports["monitor"][0]),
            env={
                "JURYSTREAM_METRICS__DRIFT_WINDOW": "50",
                "JURYSTREAM_METRICS__DRIFT_REFERENCE": json.dumps({LABELS[0]: 70, LABELS[1]: 30}),
                "JURYSTREAM_METRICS__PUBLISH_INTERVAL_S": "0.5",
            },
        )
        # No round in this test (that is tests/test_trainer_stream.py): the trainer's series
        # exist from its start, at zero, as a fresh deployment's dashboard shows them, and the
        # configured target before the controller's first decision.
        roles.start(
            "trainer",
            "--metrics-port",
            str(ports["trainer"][0]),
            "--every-samples",
            "100000",
            env={"JURYSTREAM_CONTROLLER__TARGET_ACCURACY": "0.9"},
        )
        # Every query with the job variable at "All" and with all four jobs picked (multi-value).
        exprs = [t.expr for t in dashboard.targets()]
        several = "(" + "|".join(jobs) + ")"
        targets = [grafana_to_promql(e, job) for job in (ALL_JOBS, several) for e in exprs]
        feeder.start()
        try:
            missing = targets
            deadline = time.monotonic() + 150
            while missing and time.monotonic() < deadline:
                time.sleep(2)
                missing = [expr for expr in targets if not finite_values(prom.query(expr))]
        finally:
            feeder.stop()
        assert not missing, (
            "dashboard queries without data:\n" + "\n".join(missing) + "\n" + roles.logs()
        )

        # The job variable: its query lists every role's job, and every panel follows the pick.
        (job_variable,) = [v for v in dashboard.variables() if v["name"] == "job"]
        assert job_variable["allValue"] == ALL_JOBS
        listed = prom.api("label/job/values", **{"match[]": dashboard.JOB_SOURCE})
        assert sorted(listed) == sorted(jobs)
        leaks = [e for e in exprs if prom.query(grafana_to_promql(e, "another-deployment"))]
        assert not leaks, "queries that ignore the job variable:\n" + "\n".join(leaks)
        # The task variable: a single-task deployment lists its one task, "default", and the
        # per-task panels show it when picked, and nothing for a task it does not have.
        (task_variable,) = [v for v in dashboard.variables() if v["name"] == "task"]
        assert task_variable["allValue"] == ALL_TASKS
        source = grafana_to_promql(dashboard.series(dashboard.TASK_SOURCE))
        assert prom.api("label/task/values", **{"match[]": source}) == ["default"]
        per_task = [e for e in exprs if '$task"' in e]
        assert len(per_task) >= 10
        blank = [e for e in per_task if not prom.query(grafana_to_promql(e, task="default"))]
        assert not blank, "per-task queries without data for the default task:\n" + "\n".join(blank)
        leaks = [e for e in per_task if prom.query(grafana_to_promql(e, task="another-task"))]
        assert not leaks, "queries that ignore the task variable:\n" + "\n".join(leaks)
        throughput = next(t for t in dashboard.targets() if t.legend == "{{role}} {{outcome}}")
        for job in ("jurystream-worker", "jurystream-reviewer"):
            shown = prom.query(grafana_to_promql(throughput.expr, job))
            assert shown and {s["metric"]["role"] for s in shown} == {job.split("-", 1)[1]}

        # The numbers are the pipeline's, not just present: once the stream has drained,
        # Prometheus' view must match what was sent, whatever it took to get here.
        sent = feeder.sent
        valid = [i for i in sent if i.gold is not None]

        def value(expr: str) -> float | None:
            values = finite_values(prom.query(expr))
            return values[0] if len(values) == 1 else None

        drained = {
            # every post read has one fate; an audit is counted beside its label
            'sum(jurystream_messages_total{role="worker",outcome!="audited"})': len(sent),
            "sum(jurystream_feedback_total)": len(valid),
        }
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            escalated = value('sum(jurystream_messages_total{role="worker",outcome="escalated"})')
            reviewed = value('sum(jurystream_messages_total{role="reviewer",outcome="reviewed"})')
            if escalated == reviewed and all(value(e) == n for e, n in drained.items()):
                break
            time.sleep(1)
        for expr, expected in drained.items():
            assert value(expr) == expected, (expr, roles.logs())
        dead = value('sum(jurystream_messages_total{outcome="dead_lettered"})')
        assert dead == len(sent) - len(valid)
        assert escalated is not None and escalated > 0 and reviewed == escalated
        # The test server answers with the gold label, so reviewer labels are all correct.
        reviewer_feedback = 'sum(jurystream_feedback_total{source=~"reviewer.*",result="%s"})'
        assert value(reviewer_feedback % "correct") == reviewed
        assert value(f"{reviewer_feedback % 'wrong'} or vector(0)") == 0
        # Dollars and tokens are what the endpoint billed, at the configured prices.
        billed = openai_server.billed()
        input_tokens = sum(r.prompt_tokens for r in billed)
        output_tokens = sum(r.completion_tokens for r in billed)
        tokens = 'sum(jurystream_reviewer_tokens_total{kind="%s"})'
        assert value(tokens % "input") == input_tokens > 0
        assert value(tokens % "output") == output_tokens
        expected_usd = (input_tokens * PRICE_IN + output_tokens * PRICE_OUT) / 1e6
        assert value("sum(jurystream_reviewer_cost_usd_total)") == pytest.approx(expected_usd)
        # increase() extrapolates each series to the window's edges by up to half a scrape
        # interval. A test stack has seconds of samples, a dashboard's range thousands: let ten
        # flat scrapes pass after the drain so the ratio of two counters is not the
        # extrapolation's (the reviewer answers a burst of cases between two scrapes).
        samples = 'sum(count_over_time(jurystream_messages_total{role="reviewer"}[10m]))'
        after_drain = (value(samples) or 0) + 10 * 3  # three reviewer series
        deadline = time.monotonic() + 60
        while (value(samples) or 0) < after_drain and time.monotonic() < deadline:
            time.sleep(0.5)
        saved = next(t for t in dashboard.targets() if t.legend == "saved")
        saving = value(grafana_to_promql(saved.expr))
        assert saving is not None and saving > 0  # the jury labeled most posts for free
        up = prom.query('up{job=~"jurystream-.*"} == 1')
        assert sorted(s["metric"]["job"] for s in up) == sorted(
            job for job, job_ports in jobs.items() for _ in job_ports
        )
        # Both workers labeled part of the stream; the sums above add them up.
        per_worker = prom.query(
            'sum by (instance) (jurystream_messages_total{role="worker",outcome!="audited"})'
        )
        assert len(per_worker) == 2 and all(float(s["value"][1]) > 0 for s in per_worker)
        # The alert rules evaluate cleanly against the real series.
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert rules and all(r["health"] == "ok" for r in rules), [
            (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"
        ]
