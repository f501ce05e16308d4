"""The multi-head juror: several tasks from one encoder pass, one verified ONNX model.

The tiny untrained BERT of ``tests.fixtures.models`` stands in for MiniLM (the encoder is frozen,
so nothing is fine-tuned); the tasks are the generated feed's topic, and two properties of the
text (long? a hashtag?), 40 posts each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from jurystream.cli import app
from jurystream.config import TrainerSettings
from jurystream.exporters.multihead import export_multihead
from jurystream.exporters.onnx import ExportVerificationError
from jurystream.models.rules.continual import TrainingSet
from jurystream.models.serving.juror import ModelLoadError, length_chunks, load_juror, read_manifest
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.kinds import MULTIHEAD, juror_kind
from jurystream.models.serving.multihead import OnnxMultiHeadJuror
from jurystream.models.serving.parallel import InferencePool
from jurystream.models.serving.registry import Registry
from jurystream.models.serving.runtime import encode
from jurystream.models.training.multihead import load_heads
from jurystream.models.training.refine import RefineInputs, refine_multihead
from jurystream.models.training.sklearn_juror import build_sklearn_juror
from jurystream.stream.feed import LABELS, labeled_examples
from tests.fixtures.jurors import LENGTH, TAGGED, tasks


def probe_texts() -> list[str]:
    texts, _ = labeled_examples(30, seed=99)
    return texts


def test_one_model_serves_every_head_and_each_head_view_agrees(multihead_dir: Path) -> None:
    juror = load_juror(multihead_dir)
    assert isinstance(juror, OnnxMultiHeadJuror)
    assert juror_kind(read_manifest(multihead_dir).kind) is MULTIHEAD
    assert juror.heads == {"topic": LABELS, "length": LENGTH, "tagged": TAGGED}
    assert juror.labels == LABELS  # the first head is the juror's own (Juror protocol)
    texts = probe_texts()
    every = juror.predict_heads(texts)
    assert list(every) == ["topic", "length", "tagged"]
    for task, probs in every.items():
        assert probs.shape == (len(texts), len(juror.heads[task]))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        view = juror.head(task)
        assert (view.name, view.version, view.labels) == ("mh", "1", juror.heads[task])
        np.testing.assert_allclose(view.predict_proba(texts), probs, atol=1e-6)
    np.testing.assert_allclose(juror.predict_proba(texts), every["topic"], atol=1e-6)
    assert {t: p.shape for t, p in juror.predict_heads([]).items()} == {
        "topic": (0, 2),
        "length": (0, 2),
        "tagged": (0, 2),
    }
    # The heads learned their own tasks: on their training posts they mostly get them right.
    for task, (train, gold, _) in tasks().items():
        picked = juror.predict_heads(train, tasks=[task])[task].argmax(axis=1)
        assert (picked == np.array(gold)).mean() >= 0.75, task
    extra = read_manifest(multihead_dir).extra
    verification = extra["verification"]
    assert set(verification["heads"]) == {"topic", "length", "tagged"}
    assert extra["quantization_recipe"] in ("all-int8", "ffn-down-fp32")
    assert all(h["int8_agreement"] >= 0.9 for h in verification["heads"].values())
    assert all(h["max_abs_diff"] <= 1e-4 for h in verification["heads"].values())
    graph = onnx.load(str(multihead_dir / "model.onnx")).graph
    assert any(n.op_type == "MatMulInteger" for n in graph.node)  # the encoder is int8
    assert {n.op_type for n in graph.node if "/heads." in n.name} == {"MatMul", "Add"}  # fp32


class CountingSession:
    """An onnxruntime session that records the outputs each ``run`` asked for."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.calls: list[list[str]] = []

    def run(self, names, feeds):  # type: ignore[no-untyped-def]
        self.calls.append(list(names))
        return self.inner.run(names, feeds)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


def test_one_encoder_pass_per_chunk_serves_all_heads(multihead_dir: Path) -> None:
    juror = load_juror(multihead_dir)
    assert isinstance(juror, OnnxMultiHeadJuror)
    counting = CountingSession(juror._session)
    juror._session = counting
    texts = probe_texts()
    chunks = length_chunks(encode(juror._tokenizer, texts)["attention_mask"].sum(axis=1).tolist())
    assert len(chunks) > 1
    juror.predict_heads(texts)
    assert len(counting.calls) == len(chunks)
    assert all(call == ["probs_topic", "probs_length", "probs_tagged"] for call in counting.calls)
    counting.calls.clear()
    for task in juror.heads:  # head by head costs one pass per head
        juror.head(task).predict_proba(texts)
    assert len(counting.calls) == 3 * len(chunks)


def test_a_missing_head_or_a_corrupt_model_is_refused(multihead_dir: Path, tmp_path: Path) -> None:
    juror = load_juror(multihead_dir)
    assert isinstance(juror, OnnxMultiHeadJuror)
    with pytest.raises(KeyError, match="no head 'irony'; its heads: topic, length, tagged"):
        juror.head("irony")
    corrupt = shutil.copytree(multihead_dir, tmp_path / "corrupt")
    data = bytearray((corrupt / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"model\.onnx has sha256"):
        load_juror(corrupt)
    extra_head = shutil.copytree(multihead_dir, tmp_path / "extra-head")
    manifest = json.loads((extra_head / "manifest.json").read_text())
    manifest["heads"]["irony"] = ["non_irony", "irony"]
    (extra_head / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="no output 'probs_irony' for head 'irony'"):
        load_juror(extra_head)


def test_an_export_that_differs_from_torch_is_not_published(
    multihead_dir: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(multihead_dir)
    heads = load_heads(multihead_dir, manifest.extra)
    with pytest.raises(ExportVerificationError, match="head topic: fp32 ONNX probabilities"):
        export_multihead(
            multihead_dir / "encoder",
            heads,
            tmp_path / "refused",
            name="mh",
            version="0",
            check_texts=probe_texts(),
            tolerance=0.0,  # float32 ONNX never matches torch to the last bit
        )
    assert not (tmp_path / "refused").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no staging left behind


def test_a_head_view_votes_in_a_jury_beside_a_tfidf_juror(
    multihead_dir: Path, tmp_path: Path
) -> None:
    juror = load_juror(multihead_dir)
    assert isinstance(juror, OnnxMultiHeadJuror)
    texts, long, _ = tasks()["length"]
    tfidf = load_juror(build_sklearn_juror(texts, long, LENGTH, tmp_path / "tfidf", name="tfidf"))
    jury = Jury((juror.head("length"), tfidf), policy="unanimous", threshold=0.5)
    assert jury.labels == LENGTH and jury.versions == {"mh": "1", "tfidf": "1"}
    probe = probe_texts()
    decisions = jury.decide(probe)
    assert len(decisions) == len(probe)
    assert {d.label for d in decisions if d.label is not None} <= set(LENGTH)
    pool = InferencePool(2)
    try:
        pooled = Jury((juror.head("length"), tfidf), pool=pool).probabilities(probe)
    finally:
        pool.close()
    np.testing.assert_allclose(pooled, jury.probabilities(probe), atol=1e-6)
    np.testing.assert_allclose(pooled[:, 0], juror.predict_heads(probe)["length"], atol=1e-6)
    pool = InferencePool(2)
    try:
        every = pool.score_heads(juror, probe)  # all heads, chunks spread over the pool
    finally:
        pool.close()
    for task, probs in juror.predict_heads(probe).items():
        np.testing.assert_allclose(every[task], probs, atol=1e-6)


def write_tweeteval(root: Path, task: str, labels: tuple[str, ...], split_data: dict) -> None:  # type: ignore[type-arg]
    directory = root / "tweeteval" / task
    directory.mkdir(parents=True)
    (directory / "mapping.txt").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(labels)))
    for split, (texts, ids) in split_data.items():
        (directory / f"{split}_text.txt").write_text("".join(t + "\n" for t in texts))
        (directory / f"{split}_labels.txt").write_text("".join(f"{y}\n" for y in ids))


def test_cli_bootstraps_a_multihead_juror_into_the_registry(
    encoder_base: Path, tmp_path: Path
) -> None:
    train, val = tasks(60, seed=1), tasks(30, seed=2)
    for task in ("topic", "length"):
        labels = train[task][2]
        write_tweeteval(
            tmp_path / "data",
            task,
            labels,
            {"train": train[task][:2], "val": val[task][:2]},
        )
    registry = tmp_path / "registry"
    result = CliRunner().invoke(
        app,
        [
            "models", "bootstrap-multihead", "--task", "length", "--task", "topic",
            "--size", "40", "--name", "mh", "--base", str(encoder_base),
            "--registry", str(registry), "--check-size", "40",
        ],
        env={"JURYSTREAM_DATA_ROOT": str(tmp_path / "data")},
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "mh\t1\n"
    assert "head topic: accuracy" in result.stderr and "head length: accuracy" in result.stderr
    reg = Registry(registry)
    juror = reg.load("mh")
    assert isinstance(juror, OnnxMultiHeadJuror)
    assert list(juror.heads) == ["length", "topic"] and juror.labels == LENGTH
    manifest = reg.manifest("mh")
    assert manifest.kind == "onnx-multihead" and manifest.version == "1"
    assert set(manifest.extra["head_metrics"]) == {"length", "topic"}
    assert manifest.extra["metrics"] == manifest.extra["head_metrics"]["length"]
    assert manifest.extra["data"]["topic"]["seed"]["examples"] == 40
    gold = np.array(val["topic"][1])
    picked = juror.predict_heads(val["topic"][0])["topic"].argmax(axis=1)
    assert manifest.extra["head_metrics"]["topic"]["accuracy"] == pytest.approx(
        (picked == gold).mean()
    )
    refused = CliRunner().invoke(
        app,
        ["models", "bootstrap-multihead", "--task", "irony", "--registry", str(registry)],
        env={"JURYSTREAM_DATA_ROOT": str(tmp_path / "data")},
    )
    assert refused.exit_code == 2
    assert "no TweetEval task 'irony'" in refused.stderr
    assert "(there: length, topic)" in refused.stderr


def test_a_round_refits_one_head_and_keeps_the_others(multihead_dir: Path, tmp_path: Path) -> None:
    manifest = read_manifest(multihead_dir)
    texts, long, _ = tasks()["length"]
    flipped = tuple(1 - y for y in long)  # the round teaches the opposite
    inputs = RefineInputs(
        manifest=manifest,
        serving_dir=multihead_dir,
        data=TrainingSet(tuple(texts), flipped, tuple(1.0 for _ in texts)),
        target=tmp_path / "candidate",
        work=tmp_path,
        round_id=1,
        settings=TrainerSettings(),
        check_texts=probe_texts(),
        min_int8_agreement=0.9,  # as the fixture's (an untrained tiny encoder)
        task="length",
    )
    candidate = load_juror(refine_multihead(inputs))
    serving = load_juror(multihead_dir)
    assert isinstance(candidate, OnnxMultiHeadJuror) and isinstance(serving, OnnxMultiHeadJuror)
    assert read_manifest(tmp_path / "candidate").extra["refit"] == "length"
    before, after = serving.predict_heads(texts), candidate.predict_heads(texts)
    for kept in ("topic", "tagged"):
        np.testing.assert_allclose(after[kept], before[kept], atol=1e-6)
    assert (after["length"].argmax(1) == np.array(flipped)).mean() >= 0.75
    assert (before["length"].argmax(1) == np.array(long)).mean() >= 0.75
    with pytest.raises(ValueError, match="no head 'irony'; its heads: topic, length, tagged"):
        refine_multihead(
            RefineInputs(**{**inputs.__dict__, "target": tmp_path / "x", "task": "irony"})
        )


def test_the_heads_bench_times_every_variant_against_one_head(multihead_dir: Path) -> None:
    from jurystream.bench.heads import markdown, time_variants, variants

    juror = load_juror(multihead_dir)
    assert isinstance(juror, OnnxMultiHeadJuror)
    rows, load = time_variants(variants(juror, juror.head("length")), probe_texts(), rounds=2)
    assert [r.variant for r in rows] == [
        "1 head (mh), predict_proba",
        "3 heads (mh), predict_heads",
        "3 heads, predict_proba (first head only)",
        "3 heads, each head view in turn",
    ]
    assert rows[0].vs_one_head == 1.0 and all(r.texts_per_s > 0 for r in rows)
    assert "| 3 heads (mh), predict_heads |" in markdown(rows, 30, load)


def test_a_training_round_refits_the_first_head_and_publishes_it(
    multihead_dir: Path, tmp_path: Path
) -> None:
    from jurystream.models.rules.continual import Example
    from jurystream.models.training.datasets import LabeledSet
    from jurystream.models.training.rounds import RoundRunner
    from jurystream.models.training.store import TrainingStore

    registry = Registry(tmp_path / "registry")
    registry.publish(multihead_dir)
    store = TrainingStore(tmp_path / "trainer.sqlite")
    seed_texts, seed_labels, _ = tasks()["topic"]
    store.add_seed(LabeledSet(tuple(seed_texts), tuple(seed_labels), LABELS))
    hard_texts, hard_labels = labeled_examples(200, seed=20)
    store.add_hard_samples(
        [
            Example(f"h{i}", t, LABELS[y], "hard", "oracle", 1.0)
            for i, (t, y) in enumerate(zip(hard_texts, hard_labels, strict=True))
        ]
    )
    gold_texts, gold_labels = labeled_examples(200, seed=99)
    gold = [(t, LABELS[y]) for t, y in zip(gold_texts, gold_labels, strict=True)]
    runner = RoundRunner(
        store, registry, TrainerSettings(), gold, tmp_path / "work", min_int8_agreement=0.9
    )
    result = runner.run("samples")
    assert result is not None
    [candidate] = result.candidates
    assert (candidate.juror, candidate.outcome) == ("mh", "promoted"), candidate.reason
    assert candidate.training["by_origin"] == {"hard": 200, "seed": 40}  # the whole history
    promoted = registry.load("mh")
    assert isinstance(promoted, OnnxMultiHeadJuror) and promoted.version == "2"
    assert registry.manifest("mh").extra["refit"] == "topic"
    before = load_juror(multihead_dir)
    assert isinstance(before, OnnxMultiHeadJuror)
    probe = probe_texts()
    old, new = before.predict_heads(probe), promoted.predict_heads(probe)
    for kept in ("length", "tagged"):
        np.testing.assert_allclose(new[kept], old[kept], atol=1e-6)
    assert np.abs(new["topic"] - old["topic"]).max() > 1e-3
