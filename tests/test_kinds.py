"""The juror-kind registry: every kind the exporters write is one the registry can load, refine
and export, and an unknown kind is refused with the known ones named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jurystream.models.serving.juror import ModelLoadError, load_juror, read_manifest
from jurystream.models.serving.kinds import (
    CHECKPOINT_DIR,
    KINDS,
    SKLEARN,
    TRANSFORMER,
    UnknownKind,
    juror_kind,
    kept_checkpoint,
)


@pytest.mark.parametrize("entry", list(KINDS.values()), ids=list(KINDS))
def test_every_kind_names_steps_that_exist(entry) -> None:
    serving = entry.implementation("juror")
    assert callable(serving.predict_proba)
    assert callable(entry.implementation("refine"))
    assert callable(entry.implementation("export"))
    assert juror_kind(entry.kind) is entry


def test_the_exported_jurors_are_of_registered_kinds(tiny_jurors: list[Path]) -> None:
    manifest = read_manifest(tiny_jurors[0])
    assert juror_kind(manifest.kind) is TRANSFORMER
    juror = load_juror(tiny_jurors[0])
    assert isinstance(juror, TRANSFORMER.implementation("juror"))
    assert kept_checkpoint(tiny_jurors[0], manifest.kind) == tiny_jurors[0] / CHECKPOINT_DIR


def test_a_kind_without_a_checkpoint_refits_instead_of_continuing(tmp_path: Path) -> None:
    assert TRANSFORMER.continues_training and not SKLEARN.continues_training
    assert kept_checkpoint(tmp_path, SKLEARN.kind) is None
    # A transformer juror exported without its checkpoint cannot be trained further.
    assert kept_checkpoint(tmp_path, TRANSFORMER.kind) is None


def test_an_unknown_kind_is_refused_naming_the_known_ones(
    tiny_jurors: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(UnknownKind, match="onnx-transformer, onnx-sklearn"):
        juror_kind("onnx-gpt")
    directory = shutil.copytree(tiny_jurors[0], tmp_path / "juror")
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps({**manifest, "kind": "onnx-gpt"}))
    with pytest.raises(ModelLoadError, match="unknown juror kind 'onnx-gpt'"):
        load_juror(directory)
