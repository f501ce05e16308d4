"""The versioned registry: publish, promote, rollback, corrupt versions, remote (fsspec) URLs."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from jurystream.models.serving.juror import ModelLoadError, load_juror, read_manifest
from jurystream.models.serving.registry import Registry, RegistryError, resolve_juror_dir
from jurystream.stream.feed import labeled_examples


def test_publish_promote_rollback(tiny_jurors: list[Path], tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    assert registry.jurors() == []
    v1 = registry.publish(tiny_jurors[0], name="offense")
    v2 = registry.publish(tiny_jurors[1], name="offense")
    assert (v1, v2) == ("1", "2")
    assert registry.serving_version("offense") == "2"
    manifest = registry.manifest("offense")
    assert (manifest.name, manifest.version, manifest.parent) == ("offense", "2", "1")
    assert manifest.extra["verification"]["passed"]

    assert registry.rollback("offense") == "1"
    assert registry.serving_version("offense") == "1"
    juror = registry.load("offense")
    assert (juror.name, juror.version) == ("offense", "1")
    with pytest.raises(RegistryError, match="no earlier serving version"):
        registry.rollback("offense")

    registry.promote("offense", "2")
    assert resolve_juror_dir("offense", str(tmp_path / "registry")) == registry.serving_dir(
        "offense"
    )
    assert resolve_juror_dir(str(tiny_jurors[2]), str(tmp_path / "registry")) == tiny_jurors[2]
    rows = registry.list()
    assert [(r.version, r.serving) for r in rows] == [("1", False), ("2", True)]
    assert not any(p.name.startswith(".") for p in (tmp_path / "registry" / "offense").iterdir())


def test_unpromoted_publish_keeps_serving(tiny_jurors: list[Path], tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    registry.publish(tiny_jurors[0], name="j")
    assert registry.publish(tiny_jurors[1], name="j", promote=False) == "2"
    assert registry.serving_version("j") == "1"
    assert registry.checkpoint_dir("j").joinpath("config.json").is_file()


def corrupt(directory: Path, how: str) -> None:
    model = directory / "model.onnx"
    if how == "flipped":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
    elif how == "truncated":
        model.write_bytes(model.read_bytes()[:1000])
    elif how == "missing":
        (directory / "tokenizer.json").unlink()
    elif how == "no-manifest":
        (directory / "manifest.json").unlink()


@pytest.mark.parametrize("how", ["flipped", "truncated", "missing", "no-manifest"])
def test_corrupt_version_is_refused_and_previous_keeps_serving(
    tiny_jurors: list[Path], tmp_path: Path, how: str
) -> None:
    registry = Registry(tmp_path / "r")
    registry.publish(tiny_jurors[0], name="j")
    registry.publish(tiny_jurors[1], name="j", promote=False)
    corrupt(tmp_path / "r" / "j" / "2", how)

    with pytest.raises(ModelLoadError):
        registry.promote("j", "2")
    assert registry.serving_version("j") == "1"

    # A serving version that goes bad on disk: loading falls back to the previous one.
    registry.publish(tiny_jurors[2], name="j")
    assert registry.serving_version("j") == "3"
    corrupt(tmp_path / "r" / "j" / "3", how)
    with pytest.raises(ModelLoadError):
        load_juror(registry.serving_dir("j"))
    juror = registry.load("j")
    assert juror.version == "1"


def test_publish_refuses_a_corrupt_source(tiny_jurors: list[Path], tmp_path: Path) -> None:
    source = tmp_path / "copy"
    shutil.copytree(tiny_jurors[0], source)
    corrupt(source, "truncated")
    registry = Registry(tmp_path / "r")
    with pytest.raises(ModelLoadError, match=r"model\.onnx"):
        registry.publish(source, name="j")
    assert registry.versions("j") == []


def test_nothing_to_serve(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    with pytest.raises(RegistryError, match="no serving version"):
        registry.serving_dir("ghost")
    with pytest.raises(RegistryError, match="no version 4"):
        registry.promote("ghost", "4")


def test_remote_registry_over_fsspec(tiny_jurors: list[Path], tmp_path: Path) -> None:
    url = f"memory://registry-{uuid.uuid4().hex}"
    registry = Registry(url, cache_dir=tmp_path / "cache")
    registry.publish(tiny_jurors[0], name="j")
    registry.publish(tiny_jurors[1], name="j")
    assert registry.versions("j") == ["1", "2"]
    local = registry.serving_dir("j")
    assert local.is_relative_to(tmp_path / "cache")
    assert read_manifest(local).version == "2"
    texts, _ = labeled_examples(16, seed=1)
    np.testing.assert_allclose(
        registry.load("j").predict_proba(texts), load_juror(tiny_jurors[1]).predict_proba(texts)
    )
    pointer = json.loads(registry.fs.cat(f"{registry.root}/j/serving.json"))
    assert pointer["version"] == "2" and pointer["previous"] == ["1"]
    # A damaged cache copy is fetched again instead of being served.
    corrupt(local, "flipped")
    assert registry.load("j").version == "2"


def test_concurrent_publishers_get_distinct_versions(
    tiny_jurors: list[Path], tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    registry = Registry(tmp_path / "r")
    with ThreadPoolExecutor(4) as pool:
        versions = list(
            pool.map(lambda d: registry.publish(d, name="j", promote=False), tiny_jurors * 2)
        )
    assert sorted(versions, key=int) == ["1", "2", "3", "4", "5", "6"]
    for version in versions:  # every version is complete and intact
        assert load_juror(registry.local_dir("j", version)).version == version
