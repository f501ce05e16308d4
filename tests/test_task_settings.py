"""Misconfigured ``[tasks.<name>]`` sections are refused by the settings themselves, before any
role starts, with the task, the offending value and the fix in the message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from jurystream.config import RESERVED_TASK, Settings, load_settings
from jurystream.exporters.metrics.families import DEFAULT_TASK

LABELS = ["not-hate", "hate"]


def hate(**fields: Any) -> dict[str, Any]:
    return {"labels": LABELS, "jurors": ["tfidf-hate"], **fields}


@pytest.mark.parametrize(
    ("fields", "offending", "fix"),
    [
        ({"labels": ["hate", "hate"]}, "'hate' listed more than once", "list each once"),
        ({"labels": []}, "at least two labels, got []", 'labels = ["not-hate", "hate"]'),
        ({"labels": ["hate"]}, "at least two labels, got ['hate']", "list them all"),
        ({"labels": ["not-hate", " "]}, "label name is blank", "remove it or name it"),
        ({"jurors": []}, "at least one juror", "jurystream models list"),
        ({"jurors": ["a", "a"]}, "juror 'a' listed more than once", "list each once"),
        ({"weights": {"minilm": 2.0}}, "weights names ['minilm']", "or add it to jurors"),
        ({"descriptions": {"hateful": "..."}}, "descriptions names ['hateful']", "spelt as in"),
        ({"drift_reference": {"hateful": 3}}, "drift_reference names ['hateful']", "spelt as in"),
        ({"policy": "dictator"}, "'dictator'", "'unanimous', 'majority'"),
        ({"threshold": 1.5}, "less than or equal to 1", "1.5"),
        ({"target_accuracy": -0.1}, "greater than or equal to 0", "-0.1"),
    ],
)
def test_a_bad_task_is_refused_naming_the_task_the_value_and_the_fix(
    fields: dict[str, Any], offending: str, fix: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(tasks={"offensive": hate(), "hate": hate(**fields)})
    message = str(caught.value)
    assert "tasks.hate" in message and "tasks.offensive" not in message
    assert offending in message and fix in message


@pytest.mark.parametrize("name", ["", "a/b", "../x", "hate speech", "id#1", ".hidden", "x" * 65])
def test_a_task_name_unsafe_in_a_file_key_or_label_is_refused(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(tasks={name: hate()})
    message = str(caught.value)
    assert f"task name {name!r} cannot be used" in message
    assert "letters, digits, '-' or '_'" in message


def test_the_single_task_metric_label_and_case_clashes_are_no_task_names() -> None:
    assert RESERVED_TASK == DEFAULT_TASK  # the two spellings of one name cannot drift apart
    with pytest.raises(ValidationError, match=r"task name 'default' is what metrics call"):
        Settings(tasks={DEFAULT_TASK: hate()})
    assert list(Settings(tasks={"hate-speech_2": hate()}).tasks) == ["hate-speech_2"]
    with pytest.raises(ValidationError, match=r"\['Hate', 'hate'\] differ only in case: rename"):
        Settings(tasks={"Hate": hate(), "hate": hate()})


@pytest.mark.parametrize(
    ("jury", "named"),
    [
        ({"jurors": ["minilm"]}, "jury.jurors"),
        ({"weights": {"minilm": 2.0}}, "jury.weights"),
        ({"thresholds_file": "thresholds.json"}, "jury.thresholds_file"),
    ],
)
def test_single_task_jury_settings_with_tasks_are_ambiguous_and_refused(
    jury: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(jury=jury, tasks={"hate": hate()})
    message = str(caught.value)
    assert f"{named} set together with [tasks] (hate)" in message
    assert "tasks.<name>.jurors" in message and f"unset {named}" in message


def test_without_tasks_the_jury_settings_stay_as_they_were() -> None:
    settings = Settings(jury={"jurors": ["minilm"], "weights": {"minilm": 2.0}})
    assert settings.jury.jurors == ["minilm"] and not settings.tasks
    # Settings tasks do not name (batching, audits, budget) go on applying to every task.
    shared = Settings(jury={"batch_size": 8, "audit_rate": 0.1}, tasks={"hate": hate()})
    assert shared.jury.batch_size == 8


def test_a_config_file_error_names_the_task_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "jurystream.toml"
    tasks = (
        '[tasks.offensive]\nlabels = ["not-offensive", "offensive"]\njurors = ["tfidf"]\n'
        '[tasks.hate]\nlabels = ["not-hate", "hate"]\njurors = ["tfidf"]\n'
    )
    config.write_text(tasks + "weights = { tfidf-hate = 2.0 }\n")
    with pytest.raises(ValidationError, match=r"tasks\.hate\n.*weights names \['tfidf-hate'\]"):
        load_settings(config)
    config.write_text(tasks)
    assert list(load_settings(config).tasks) == ["offensive", "hate"]
    # The worker's --juror flag and its variable set jury.jurors: refused with tasks too.
    monkeypatch.setenv("JURYSTREAM_JURY__JURORS", '["tfidf"]')
    with pytest.raises(ValidationError, match="--juror and JURYSTREAM_JURY__JURORS"):
        load_settings(config)
