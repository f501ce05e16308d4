"""CLI habits: --version, --log-level, readable value placeholders, env vars shown in --help."""

from __future__ import annotations

import logging
import os
import re

import pytest
from typer.testing import CliRunner

from jurystream.cli import app


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    wide = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}  # rich wraps long names at 80
    return CliRunner().invoke(app, list(args), env={**wide, **(env or {})})


def test_version_is_printed_without_a_command() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert re.fullmatch(r"jurystream \S+\n", result.stdout)


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["worker"], ["HOST:PORT", "JURYSTREAM_BROKER__BOOTSTRAP", "JURYSTREAM_JURY__POLICY"]),
        (["reviewer"], ["URL", "JURYSTREAM_REVIEWER__BASE_URL", "JURYSTREAM_REVIEWER__CHAIN"]),
        (["trainer"], ["PATH|URL", "JURYSTREAM_REGISTRY", "JURYSTREAM_TRAINER__EVERY_SAMPLES"]),
        (["produce"], ["FILE|-", "POSTS/S", "JURYSTREAM_CONFIG"]),
        (["models", "bootstrap"], ["DATASET", "JURYSTREAM_REGISTRY", "--min-int8-agreement"]),
        (["bench", "tfidf"], ["FILE", "JURYSTREAM_CONFIG"]),
    ],
)
def test_help_shows_plain_placeholders_and_each_settings_env_var(
    command: list[str], shown: list[str]
) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    for text in shown:
        assert text in result.stdout, (text, result.stdout)
    assert not re.search(r"<(int|str|float|bool|path|list\[str\])>", result.stdout), result.stdout


def test_an_options_env_var_sets_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = invoke("worker", env={"JURYSTREAM_JURY__THRESHOLD": "lots"})
    assert result.exit_code == 2
    assert "JURYSTREAM_JURY__THRESHOLD" in result.output and "--threshold" in result.output


def test_log_level_applies_to_every_command(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("JURYSTREAM_LOG_LEVEL", "WARNING")
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)  # restored after the test
    result = invoke("--log-level", "debug", "models", "list", "--registry", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert root.level == logging.DEBUG
    assert os.environ["JURYSTREAM_LOG_LEVEL"] == "DEBUG"  # what settings and child roles read
    refused = invoke("--log-level", "loud", "models", "list")
    assert refused.exit_code == 2 and "loud" in refused.output
