"""Print deploy/prometheus/alerts.yml as a PrometheusRule (the Prometheus operator's form).

    python tools/prometheusrule.py > deploy/k8s/monitoring/prometheusrule.yaml

One source of truth for the rules: tests/test_deploy.py fails when the two differ.
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# Generated from deploy/prometheus/alerts.yml by tools/prometheusrule.py.\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, as in alerts.yml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "jurystream", "labels": {"app.kubernetes.io/part-of": "jurystream"}},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)


if __name__ == "__main__":
    print(render(), end="")
