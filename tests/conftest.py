"""Shared fixtures live in tests/fixtures/*, one module per concern, registered here."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.models",
    "tests.fixtures.processes",
    "tests.fixtures.jurors",
    "tests.fixtures.openai_server",
]
