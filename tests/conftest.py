"""Shared fixtures live in tests/fixtures/*, one module per concern, registered here."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.models",
    "tests.fixtures.processes",
    "tests.fixtures.jurors",
    "tests.fixtures.openai_server",
]


@pytest.fixture(autouse=True)
def _config_file_variable_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """`load_settings(FILE)` exports JURYSTREAM_CONFIG so the roles a command starts read the
    same file. In the test process that outlived its test: found in CI, where test_config's
    file (prices for model "m" only) reached the demo tests' reviewers, which exited."""
    monkeypatch.setenv("JURYSTREAM_CONFIG", "")
    monkeypatch.delenv("JURYSTREAM_CONFIG")
