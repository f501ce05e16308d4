"""The one settings object: precedence, validation, and a README that documents every field."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from jurystream.config import Settings, Topic, load_settings

README = Path(__file__).resolve().parents[1] / "README.md"


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += field_paths(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_readme_documents_every_setting() -> None:
    text = README.read_text()
    documented = set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)?)`", text))
    # Topic base names are documented as one row (`topics.posts` … `topics.model_updates`).
    topic_names = {f"topics.{t}" for t in ("labels", "review", "hard_samples", "feedback")}
    topic_names |= {"topics.dead_letters"}
    missing = [p for p in field_paths(Settings) if p not in documented | topic_names]
    assert not missing, f"README configuration reference lacks: {missing}"


def test_precedence_flags_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "jurystream.toml"
    config.write_text('[jury]\npolicy = "majority"\nthreshold = 0.6\nbatch_size = 8\n')
    monkeypatch.setenv("JURYSTREAM_CONFIG", str(config))
    monkeypatch.setenv("JURYSTREAM_JURY__THRESHOLD", "0.8")
    settings = load_settings(jury={"batch_size": 64})
    assert settings.jury.policy == "majority"  # from the file
    assert settings.jury.threshold == 0.8  # env beats the file
    assert settings.jury.batch_size == 64  # the flag beats both
    assert settings.jury.batch_timeout_s == 0.05  # untouched fields keep their defaults


def test_bad_values_are_refused_with_the_field_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JURYSTREAM_JURY__POLICY", "dictator")
    with pytest.raises(ValidationError, match="policy"):
        Settings()


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_topic_names_carry_the_prefix() -> None:
    settings = load_settings(topics={"prefix": "x."})
    assert settings.topics.name(Topic.DEAD_LETTERS) == "x.dead-letters"
    assert len(settings.topics.all_names()) == 7


def test_unknown_variable_names_the_nearest_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JURYSTREAM_REVIEWER__BUDGET_PER_HOUR", "5")
    with pytest.raises(ValueError, match=r"did you mean reviewer\.budget_per_hour_usd\?"):
        load_settings()


def test_empty_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JURYSTREAM_REVIEWER__MODEL", "")
    with pytest.raises(ValueError, match="JURYSTREAM_REVIEWER__MODEL is set but empty"):
        load_settings()


def test_unknown_toml_keys_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[jury]\npolcy = "majority"\n[reviwer]\nmodel = "x"\n')
    with pytest.raises(ValueError) as info:
        load_settings(config)
    assert "unknown setting jury.polcy" in str(info.value)
    assert "did you mean jury.policy?" in str(info.value)
    assert "unknown setting reviwer in" in str(info.value)
    assert "did you mean reviewer?" in str(info.value)


def test_the_project_own_variables_and_dict_settings_stay_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[jury.weights]\ntfidf0 = 2.0\n[reviewer.prices.m]\ninput = 1.0\n")
    monkeypatch.setenv("JURYSTREAM_TANSU_BIN", "/x/tansu")
    monkeypatch.setenv("JURYSTREAM_MODELS_DIR", "/x/models")
    monkeypatch.setenv("JURYSTREAM_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("JURYSTREAM_MY_KEY", "sk-1")  # named by reviewer.api_key_env
    monkeypatch.setenv("JURYSTREAM_REVIEWER__API_KEY_ENV", "JURYSTREAM_MY_KEY")
    monkeypatch.setenv("JURYSTREAM_METRICS__DRIFT_REFERENCE", '{"a": 1}')
    settings = load_settings(config)
    assert settings.jury.weights == {"tfidf0": 2.0}
    assert settings.data_root == tmp_path
    assert settings.reviewer.prices["m"] == {"input": 1.0}


def test_cli_prints_the_error_and_exits_without_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "JURYSTREAM_JURY__BATCH_SIZ": "3"}
    proc = subprocess.run(
        [sys.executable, "-m", "jurystream.cli", "worker", "--bootstrap", "127.0.0.1:1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "unknown setting jury.batch_siz" in proc.stderr
    assert "did you mean jury.batch_size?" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_a_named_config_file_reaches_child_roles_without_changing_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JURYSTREAM_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./jurystream.toml either
    config = tmp_path / "team.toml"
    config.write_text('[jury]\npolicy = "majority"\n')
    settings = load_settings(config, jury={"threshold": 0.6})
    assert settings.jury.policy == "majority" and settings.jury.threshold == 0.6
    assert isinstance(settings, Settings)
    # The roles a command starts read the same file: it travels in their environment only.
    assert settings.role_env() == {"JURYSTREAM_CONFIG": str(config)}
    assert "JURYSTREAM_CONFIG" not in os.environ
    assert Settings().jury.policy != "majority"
    assert Settings().role_env() == {}
