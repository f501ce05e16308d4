"""The one settings object: precedence, validation, and a README that documents every field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from jurystream.config import Settings, load_settings

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
    assert settings.topics.name("dead_letters") == "x.dead-letters"
    assert len(settings.topics.all_names()) == 7
