"""ONNX export, int8 quantization and verification on tiny config-built BERTs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jurystream.exporters.onnx import (
    checkpoint_verifier,
    export_fp32,
    export_transformer,
    write_tokenizer,
)
from jurystream.exporters.quantize import RECIPES, down_projections, quantize_int8
from jurystream.exporters.verify import FP32_FALLBACK, Bar, ExportVerificationError
from jurystream.models.serving.juror import load_juror, precision_note, read_manifest, sha256_file
from jurystream.models.serving.kinds import CHECKPOINT_DIR
from jurystream.models.serving.registry import Registry
from jurystream.stream.feed import LABELS, labeled_examples


def test_tiny_jurors_load_and_agree_on_plain_posts(tiny_jurors: list[Path]) -> None:
    jurors = [load_juror(d) for d in tiny_jurors]
    assert [j.name for j in jurors] == ["tiny-0", "tiny-1", "tiny-2"]
    texts, gold = labeled_examples(200, seed=123)
    for juror in jurors:
        assert juror.labels == LABELS
        probs = juror.predict_proba(texts)
        assert probs.shape == (200, 2)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert (probs.argmax(axis=1) == np.array(gold)).mean() >= 0.9


def test_tiny_jury_cases_are_what_they_claim(
    tiny_jurors: list[Path], tiny_jury_cases: dict[str, list[str]]
) -> None:
    jurors = [load_juror(d) for d in tiny_jurors]
    agreed = np.stack([j.predict_proba(tiny_jury_cases["agreed"]).argmax(1) for j in jurors])
    split = np.stack([j.predict_proba(tiny_jury_cases["split"]).argmax(1) for j in jurors])
    assert (agreed == agreed[0]).all()
    assert not (split == split[0]).all(axis=0).any()


def test_manifest_records_verification_files_and_checkpoint(tiny_jurors: list[Path]) -> None:
    directory = tiny_jurors[0]
    manifest = read_manifest(directory)
    assert manifest.kind == "onnx-transformer"
    assert manifest.extra["precision"] == "int8-dynamic-per-channel"
    check = manifest.extra["verification"]
    assert check["passed"] and check["max_abs_diff"] <= check["tolerance"]
    assert check["int8_agreement"] >= 0.98
    assert manifest.extra["training"]["config"]["seed"] == 0
    on_disk = {
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    assert set(manifest.files) == on_disk
    assert f"{CHECKPOINT_DIR}/config.json" in manifest.files
    for rel, digest in manifest.files.items():
        assert sha256_file(directory / rel) == digest


def test_int8_is_smaller_than_fp32(tiny_jurors: list[Path], tmp_path: Path) -> None:
    checkpoint = tiny_jurors[0] / CHECKPOINT_DIR
    fp32 = export_fp32(checkpoint, tmp_path / "fp32")
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx")
    assert int8.stat().st_size < fp32.stat().st_size
    assert read_manifest(tiny_jurors[0]).extra["quantization_recipe"] in RECIPES


def test_down_projections_stay_fp32_when_asked(tiny_jurors: list[Path], tmp_path: Path) -> None:
    import onnx

    fp32 = export_fp32(tiny_jurors[0] / CHECKPOINT_DIR, tmp_path / "fp32")
    down = down_projections(fp32)
    assert len(down) == 2  # one feed-forward down-projection (64 → 32) per layer
    assert all("output/dense" in name and "attention" not in name for name in down)

    def float_matmuls(path: Path) -> set[str]:
        graph = onnx.load(str(path)).graph
        return {n.name for n in graph.node if n.op_type == "MatMul"}

    assert not set(down) & float_matmuls(quantize_int8(fp32, tmp_path / "all.onnx"))
    kept = float_matmuls(quantize_int8(fp32, tmp_path / "kept.onnx", down))
    assert set(down) <= kept


def test_verification_catches_a_model_that_is_not_the_checkpoint(
    tiny_jurors: list[Path], tmp_path: Path
) -> None:
    texts, _ = labeled_examples(64, seed=5)
    other = export_fp32(tiny_jurors[1] / CHECKPOINT_DIR, tmp_path / "other")
    checkpoint = tiny_jurors[0] / CHECKPOINT_DIR
    tokenizer = write_tokenizer(checkpoint, tmp_path / "tokenizer.json")
    verifier = checkpoint_verifier(checkpoint, tokenizer, texts, Bar(1e-3, 0.98), max_length=64)
    report = verifier.verify(other, None)
    assert not report.passed
    assert report.max_abs_diff > 0.01

    own = export_fp32(checkpoint, tmp_path / "own")
    report = verifier.verify(own, None)
    assert report.passed and report.max_abs_diff < 1e-4


def test_failed_verification_publishes_nothing(tiny_jurors: list[Path], tmp_path: Path) -> None:
    texts, _ = labeled_examples(64, seed=5)
    target = tmp_path / "out" / "juror"
    with pytest.raises(
        ExportVerificationError, match=r"all-int8: int8 picks .*; ffn-down-fp32: int8 picks"
    ):
        export_transformer(
            tiny_jurors[0] / CHECKPOINT_DIR,
            target,
            name="strict",
            version="1",
            check_texts=texts,
            max_length=64,
            min_agreement=1.01,  # impossible: proves a failing check blocks publishing
            fp32_fallback=False,
        )
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []  # no staging leftovers


def test_int8_that_misses_the_bar_falls_back_to_fp32_with_its_cost_recorded(
    tiny_jurors: list[Path], tmp_path: Path
) -> None:
    texts, gold = labeled_examples(64, seed=5)
    directory = export_transformer(
        tiny_jurors[0] / CHECKPOINT_DIR,
        tmp_path / "fallback",
        name="strict",
        version="1",
        check_texts=texts,
        max_length=64,
        min_agreement=1.01,  # no int8 recipe can meet it
    )
    manifest = read_manifest(directory)
    assert manifest.extra["precision"] == "fp32"
    assert manifest.extra["quantization_recipe"] == FP32_FALLBACK
    assert manifest.extra["verification"]["passed"] is True
    fallback = manifest.extra["fp32_fallback"]
    assert set(fallback["int8_agreement"]) == set(RECIPES)
    assert fallback["min_agreement"] == 1.01
    assert fallback["fp32_texts_per_s"] > 0 and fallback["int8_texts_per_s"] > 0
    assert fallback["slowdown"] == pytest.approx(
        fallback["int8_texts_per_s"] / fallback["fp32_texts_per_s"], rel=0.02
    )
    assert set(manifest.files) == {"model.onnx", "tokenizer.json"} | {
        f for f in manifest.files if f.startswith(CHECKPOINT_DIR)
    }  # no int8 model left beside the fp32 one
    note = precision_note(manifest.extra)
    assert note is not None and "serving fp32" in note and "--min-int8-agreement" in note
    juror = load_juror(directory)
    assert (juror.predict_proba(texts).argmax(1) == np.array(gold)).mean() >= 0.9
    assert precision_note(read_manifest(tiny_jurors[0]).extra) is None
    registry = Registry(tmp_path / "registry")
    registry.publish(directory, name="strict")
    registry.publish(tiny_jurors[0], name="tiny")
    shown = {r.name: r.precision for r in registry.list()}
    assert shown == {"strict": f"fp32 ({fallback['slowdown']}x slower than int8)", "tiny": "int8"}


def test_fp32_export_without_quantization(tiny_jurors: list[Path], tmp_path: Path) -> None:
    texts, gold = labeled_examples(64, seed=9)
    directory = export_transformer(
        tiny_jurors[2] / CHECKPOINT_DIR,
        tmp_path / "fp32-juror",
        name="fp32",
        version="1",
        check_texts=texts,
        quantize=False,
        keep_checkpoint=False,
        max_length=64,
    )
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["precision"] == "fp32"
    assert manifest["verification"]["int8_agreement"] is None
    assert not (directory / CHECKPOINT_DIR).exists()
    juror = load_juror(directory)
    assert (juror.predict_proba(texts).argmax(1) == np.array(gold)).mean() >= 0.9


def test_export_refuses_existing_directory_and_non_checkpoints(
    tiny_jurors: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(FileExistsError):
        export_transformer(
            tiny_jurors[0] / CHECKPOINT_DIR,
            tiny_jurors[1],
            name="x",
            version="1",
            check_texts=["a"],
        )
    with pytest.raises(FileNotFoundError, match="not a HF checkpoint"):
        export_transformer(tmp_path, tmp_path / "out", name="x", version="1", check_texts=["a"])


def test_bench_measures_every_runtime_and_batch(tiny_jurors: list[Path]) -> None:
    from jurystream.bench.models import bench_juror, markdown

    texts, _ = labeled_examples(40, seed=2)
    results = bench_juror(tiny_jurors[0], texts, batch_sizes=(1, 8), rounds=2)
    assert [(m.runtime, m.batch_size) for m in results] == [
        (r, b) for b in (1, 8) for r in ("torch", "onnx-fp32", "onnx-int8")
    ]
    assert all(m.texts_per_s > 0 and m.texts_per_cpu_s > 0 for m in results)
    table = markdown("tiny-0", results, len(texts), 1).splitlines()
    assert table[-2].startswith("| 1 |") and table[-1].startswith("| 8 |")
