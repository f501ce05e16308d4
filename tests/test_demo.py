"""`jurystream demo` end to end: every message accounted for, a summary, and a chart."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("extra", "reviewer"),
    [([], "oracle"), (["--scripted-llm"], "reviewer:openai:gpt-4o-mini")],
)
def test_demo_accounts_for_every_message(tmp_path: Path, extra: list[str], reviewer: str) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jurystream.cli",
            "demo",
            "--count",
            "300",
            "--bad-every",
            "30",
            "--workdir",
            str(workdir),
            "--rate",
            "300",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JURYSTREAM_APP_ID": "demo-test", "COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "what happened to every message" in result.stdout
    with (workdir / "fates.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 300 and len({r["id"] for r in rows}) == 300
    outcomes = Counter(r["outcome"] for r in rows)
    assert outcomes["dead-letter"] == 10
    assert outcomes["labeled"] == 290, outcomes
    sources = Counter(r["source"] for r in rows if r["outcome"] == "labeled")
    assert sources["jury"] > 0 and sources[reviewer] > 0, sources
    if reviewer != "oracle":  # a priced reviewer: the demo reports spend and the saving
        assert "cost if all reviewed" in result.stdout
    png = (workdir / "demo.png").read_bytes()
    assert png.startswith(b"\x89PNG")
