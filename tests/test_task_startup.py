"""Misconfigured tasks that only the registry, the jurors or the data files reveal: each role
refuses to start where it loads them, with the task, the offending value and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from jurystream.cli import app
from jurystream.config import ReviewerSettings, Settings, SettingsError, TaskSettings
from jurystream.models.reviewer.chain import task_demonstrations
from jurystream.models.serving.juror import ModelLoadError, load_juror
from jurystream.models.serving.registry import Registry
from jurystream.models.training.datasets import DatasetError
from jurystream.stream import roles
from jurystream.stream.feed import LABELS
from jurystream.stream.roles import load_task_juries
from jurystream.stream.trainer import build_lanes
from tests.test_tasks import TwoHeads

NO, YES = LABELS


def deployment(tmp_path: Path, **tasks: dict[str, Any]) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        registry=str(tmp_path / "registry"),
        tasks={name: TaskSettings(**spec) for name, spec in tasks.items()},
    )


def offensive(jurors: list[str], **fields: Any) -> dict[str, Any]:
    return {"labels": list(LABELS), "jurors": jurors, **fields}


def jsonl(path: Path, labels: list[str]) -> str:
    path.write_text(
        "".join(json.dumps({"text": f"post {i}", "label": y}) + "\n" for i, y in enumerate(labels))
    )
    return str(path)


# --- the worker: jurors and their labels -----------------------------------------------------


def test_a_task_juror_the_registry_does_not_hold_names_the_task(tmp_path: Path) -> None:
    settings = deployment(tmp_path, offensive=offensive(["tfidf-offensive"]))
    with pytest.raises(ModelLoadError) as caught:
        load_task_juries(settings)
    message = str(caught.value)
    assert message.startswith("task offensive: juror 'tfidf-offensive' is neither")
    assert "jurystream models list" in message
    assert "remove 'tfidf-offensive' from tasks.offensive.jurors" in message


def test_a_juror_with_other_labels_than_its_task_is_refused(
    tmp_path: Path, sklearn_jurors: list[Path]
) -> None:
    juror = str(sklearn_jurors[0])
    settings = deployment(
        tmp_path,
        offensive=offensive([juror]),
        hate={"labels": ["not-hate", "hate"], "jurors": [juror]},
    )
    with pytest.raises(ModelLoadError) as caught:
        load_task_juries(settings)
    message = str(caught.value)
    assert message.startswith(f"task hate: juror {juror!r} answers {list(LABELS)}")
    assert "the task's labels are ['not-hate', 'hate']" in message
    assert "set tasks.hate.labels to the juror's labels" in message
    assert f"remove {juror!r} from tasks.hate.jurors" in message


def test_the_same_labels_in_another_order_are_served_in_the_tasks_order(
    tmp_path: Path, sklearn_jurors: list[Path]
) -> None:
    juror = str(sklearn_jurors[0])
    settings = deployment(tmp_path, offensive=offensive([juror], labels=[YES, NO]))
    juries = load_task_juries(settings)
    direct = load_juror(sklearn_jurors[0]).predict_proba(["you idiot", "nice walk"])
    served = juries.juries["offensive"].jurors[0]
    assert served.labels == (YES, NO)
    assert (served.predict_proba(["you idiot", "nice walk"]) == direct[:, ::-1]).all()


def test_the_one_task_policy_beside_tasks_is_said_to_be_unused(
    tmp_path: Path, sklearn_jurors: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    settings = deployment(tmp_path, offensive=offensive([str(sklearn_jurors[0])]))
    settings = settings.model_copy(
        update={"jury": settings.jury.model_copy(update={"policy": "majority"})}
    )
    juries = load_task_juries(settings)
    assert juries.juries["offensive"].policy == "unanimous"  # the task's own
    assert "jury.policy unused with several tasks" in caplog.text
    assert "tasks.<name>.policy" in caplog.text


def test_a_multi_head_juror_without_the_tasks_head_or_with_other_labels_is_refused(
    tmp_path: Path, sklearn_jurors: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    tfidf = load_juror(sklearn_jurors[0])
    monkeypatch.setattr(roles, "load_juror_ref", lambda ref, settings: TwoHeads({"hate": tfidf}))
    no_head = deployment(tmp_path, irony={"labels": ["irony", "not-irony"], "jurors": ["mh"]})
    with pytest.raises(ModelLoadError) as caught:
        load_task_juries(no_head)
    message = str(caught.value)
    assert message.startswith("task irony: juror mh v1 has no head for task 'irony'")
    assert "retrain it with that task, or remove 'mh' from tasks.irony.jurors" in message
    other_labels = deployment(tmp_path, hate={"labels": ["not-hate", "hate"], "jurors": ["mh"]})
    with pytest.raises(ModelLoadError, match=r"task hate: juror 'mh' answers \['not-offensive'"):
        load_task_juries(other_labels)


def test_the_worker_command_prints_a_juror_error_instead_of_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jurystream.cli._require_bootstrap", lambda settings: None)
    monkeypatch.setattr(roles, "_prepare", lambda settings: None)
    env = {
        "JURYSTREAM_REGISTRY": str(tmp_path / "registry"),
        "JURYSTREAM_TASKS": json.dumps({"offensive": offensive(["tfidf-offensive"])}),
    }
    result = CliRunner().invoke(app, ["worker"], env=env)
    assert result.exit_code == 2, result.output
    assert "error: task offensive: juror 'tfidf-offensive'" in result.output
    assert "Traceback" not in result.output


def test_the_worker_refuses_one_task_flags_for_a_deployment_of_several() -> None:
    env = {"JURYSTREAM_TASKS": json.dumps({"offensive": offensive(["tfidf"])})}
    flagged = CliRunner().invoke(app, ["worker", "--policy", "majority"], env=env)
    assert flagged.exit_code == 2
    assert "--policy set the one task's jury" in flagged.output
    assert "tasks.<name>.policy" in flagged.output
    # The same setting from a variable every role inherits is no flag: it passes this check
    # (and stops at the next one here, the missing Kafka address).
    inherited = CliRunner().invoke(
        app, ["worker"], env={**env, "JURYSTREAM_JURY__POLICY": "majority"}
    )
    assert inherited.exit_code == 2 and "no Kafka address" in inherited.output
    juror = CliRunner().invoke(app, ["worker", "--juror", "tfidf"], env=env)
    assert juror.exit_code == 2 and "jury.jurors set together with [tasks]" in juror.output


# --- the trainer: registry jurors, seed and gold data ------------------------------------------


def test_the_trainer_refuses_a_task_juror_it_cannot_refine(
    tmp_path: Path, sklearn_jurors: list[Path]
) -> None:
    Registry(tmp_path / "registry").publish(sklearn_jurors[0])
    settings = deployment(tmp_path, offensive=offensive(["tfidf0", str(sklearn_jurors[1])]))
    with pytest.raises(SettingsError) as caught:
        build_lanes(settings)
    message = str(caught.value)
    assert message.startswith(f"task offensive: jurors [{str(sklearn_jurors[1])!r}]")
    assert "no serving version in the registry" in message
    assert "remove them from tasks.offensive.jurors" in message


def refused_data(tmp_path: Path, sklearn_jurors: list[Path], setting: str, path: str) -> str:
    """The trainer's error for the offensive task with ``setting`` pointing at ``path``."""
    Registry(tmp_path / "registry").publish(sklearn_jurors[0])
    settings = deployment(tmp_path, offensive=offensive(["tfidf0"], **{setting: path}))
    with pytest.raises(DatasetError) as caught:
        build_lanes(settings)
    return str(caught.value)


@pytest.mark.parametrize("setting", ["seed_data", "gold_data"])
def test_the_trainer_refuses_a_missing_task_data_file(
    tmp_path: Path, sklearn_jurors: list[Path], setting: str
) -> None:
    missing = tmp_path / "nowhere.jsonl"
    message = refused_data(tmp_path, sklearn_jurors, setting, str(missing))
    assert message.startswith(f"tasks.offensive.{setting}: {missing}: file not found")
    assert "point it at the task's data" in message


@pytest.mark.parametrize("setting", ["seed_data", "gold_data"])
def test_the_trainer_refuses_task_data_with_labels_the_task_does_not_have(
    tmp_path: Path, sklearn_jurors: list[Path], setting: str
) -> None:
    data = jsonl(tmp_path / "hate.jsonl", ["hate", "not-hate", YES])
    message = refused_data(tmp_path, sklearn_jurors, setting, data)
    assert f"tasks.offensive.{setting} ({data}) holds labels ['hate', 'not-hate']" in message
    assert "relabel the data with the task's label names" in message


def test_task_data_holding_some_of_the_tasks_labels_is_accepted(
    tmp_path: Path, sklearn_jurors: list[Path]
) -> None:
    Registry(tmp_path / "registry").publish(sklearn_jurors[0])
    gold = jsonl(tmp_path / "gold.jsonl", [YES, YES, YES])
    settings = deployment(tmp_path, offensive=offensive(["tfidf0"], gold_data=gold))
    (lane,) = build_lanes(settings)
    assert len(lane.runner.gold) == 3


# --- the reviewer: each task's gold pool --------------------------------------------------------


def test_the_reviewer_refuses_a_tasks_gold_pool_missing_or_of_another_task(tmp_path: Path) -> None:
    missing = tmp_path / "pool.jsonl"
    tasks = {"offensive": TaskSettings(**offensive(["tfidf"], gold_pool=missing))}
    with pytest.raises(DatasetError, match=r"^tasks\.offensive\.gold_pool: .*file not found"):
        task_demonstrations(ReviewerSettings(), tasks)
    hate = jsonl(tmp_path / "hate.jsonl", ["hate", "not-hate"])
    tasks = {"offensive": TaskSettings(**offensive(["tfidf"], gold_pool=hate))}
    with pytest.raises(DatasetError) as caught:
        task_demonstrations(ReviewerSettings(), tasks)
    assert "tasks.offensive.gold_pool" in str(caught.value)
    assert "holds labels ['hate', 'not-hate'] that task offensive does not have" in str(
        caught.value
    )
