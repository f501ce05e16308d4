"""Fine-tuning: per-example weights, continuing from a checkpoint, input checks (tiny BERT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jurystream.exporters.onnx import torch_logits, torch_model
from jurystream.models.serving.runtime import encode, load_tokenizer
from jurystream.models.training.training import (
    TrainConfig,
    read_training_summary,
    train_transformer,
)
from jurystream.stream.feed import LABELS, labeled_examples

CONFIG = TrainConfig(epochs=4, batch_size=16, learning_rate=2e-3, max_length=64)


def accuracy_of(checkpoint: Path, texts: list[str], gold: list[int]) -> float:
    feeds = encode(load_tokenizer(checkpoint / "tokenizer.json", 64), texts)
    logits = torch_logits(torch_model(checkpoint), feeds)
    return float((logits.argmax(1) == np.array(gold)).mean())


def test_zero_weight_examples_do_not_teach(tiny_base: Path, tmp_path: Path) -> None:
    texts, labels = labeled_examples(400, seed=60)
    test_texts, test_gold = labeled_examples(200, seed=61)
    # Flip 60% of the labels: unweighted, the model learns the wrong mapping; with the
    # flipped examples weighted 0 it learns only from the correct 40%.
    rng = np.random.default_rng(0)
    flipped = rng.random(len(labels)) < 0.6
    noisy = [1 - y if f else y for y, f in zip(labels, flipped, strict=True)]
    weights = [0.0 if f else 1.0 for f in flipped]
    weighted = train_transformer(
        tiny_base, texts, noisy, LABELS, tmp_path / "w", CONFIG, weights=weights, progress=False
    )
    plain = train_transformer(
        tiny_base, texts, noisy, LABELS, tmp_path / "p", CONFIG, progress=False
    )
    assert accuracy_of(weighted.checkpoint, test_texts, test_gold) > 0.9
    assert accuracy_of(plain.checkpoint, test_texts, test_gold) < 0.6
    assert weighted.summary["weighted"] is True and plain.summary["weighted"] is False


def test_continue_from_a_serving_checkpoint(tiny_jurors: list[Path], tmp_path: Path) -> None:
    start = tiny_jurors[0] / "checkpoint"
    texts, gold = labeled_examples(200, seed=62)
    before = accuracy_of(start, texts, gold)
    config = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-4, max_steps=5, seed=3)
    result = train_transformer(
        start, texts, gold, LABELS, tmp_path / "next", config, progress=False
    )
    assert result.summary["steps"] == 5
    assert result.summary["base"] == str(start)
    assert read_training_summary(result.checkpoint)["config"]["max_steps"] == 5
    config_json = json.loads((result.checkpoint / "config.json").read_text())
    assert config_json["id2label"] == {"0": LABELS[0], "1": LABELS[1]}
    # A few gentle steps keep what the serving version knew (it is not re-initialised).
    assert accuracy_of(result.checkpoint, texts, gold) >= before - 0.02


@pytest.mark.parametrize(
    ("labels", "weights", "error"),
    [
        ([0, 1], None, "3 texts but 2 labels"),
        ([0, 1, 5], None, r"label ids \[5\]"),
        ([0, 1, 0], [1.0, -1.0, 1.0], "finite and non-negative"),
        ([0, 1, 0], [0.0, 0.0, 0.0], "sum to zero"),
        ([0, 1, 0], [1.0], "1 weights for 3 examples"),
    ],
)
def test_bad_training_inputs(
    tiny_base: Path, tmp_path: Path, labels: list[int], weights: list[float] | None, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        train_transformer(
            tiny_base, ["a", "b", "c"], labels, LABELS, tmp_path, weights=weights, progress=False
        )
