"""The shared export verifier on hand-built ONNX models: one or several named outputs.

Each model counts a text's tokens ``n`` and maps it through one linear layer per output. The
stand-in "int8" model swaps one output's two columns, so it picks the other label on every
text: a candidate below any bar, on exactly that output. No torch and no training: the
reference is the same arithmetic in numpy.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jurystream.exporters import verify
from jurystream.exporters.quantize import RECIPES
from jurystream.exporters.verify import (
    FP32_FALLBACK,
    Bar,
    ExportVerificationError,
    Feeds,
    Outputs,
    Verifier,
    settle_precision,
)

# Per output: weight (1×2) and bias of the linear layer on n; no text's n sits on a boundary.
LAYERS = {
    "topic": ([[1.0, -1.0]], [0.0, 6.5]),
    "length": ([[0.5, -0.5]], [0.0, 3.5]),
}
TEXTS = [" ".join(["w"] * k) for k in (1, 2, 4, 5, 7, 9, 12, 2, 8, 1)]


def swapped(layer: tuple[list[list[float]], list[float]]) -> tuple[Any, Any]:
    weight, bias = layer
    return [row[::-1] for row in weight], bias[::-1]


def write_model(path: Path, layers: dict[str, Any], softmax: bool) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask", "axes"], ["n"], keepdims=1),
    ]
    constants = [numpy_helper.from_array(np.array([1], np.int64), "axes")]
    outputs = []
    for name, (weight, bias) in layers.items():
        constants += [
            numpy_helper.from_array(np.array(weight, np.float32), f"w_{name}"),
            numpy_helper.from_array(np.array(bias, np.float32), f"b_{name}"),
        ]
        linear = f"linear_{name}" if softmax else name
        nodes += [
            helper.make_node("MatMul", ["n", f"w_{name}"], [f"mm_{name}"]),
            helper.make_node("Add", [f"mm_{name}", f"b_{name}"], [linear]),
        ]
        if softmax:
            nodes.append(helper.make_node("Softmax", [linear], [name], axis=1))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 2]))
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
    graph = helper.make_graph(nodes, "tiny", [mask], outputs, constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def reference(layers: dict[str, Any], softmax: bool) -> verify.Reference:
    def run(feeds: Feeds) -> list[np.ndarray]:
        n = feeds["attention_mask"].sum(axis=1, keepdims=True).astype(np.float32)
        out = []
        for weight, bias in layers.values():
            linear = n @ np.array(weight, np.float32) + np.array(bias, np.float32)
            e = np.exp(linear - linear.max(axis=1, keepdims=True))
            out.append(e / e.sum(axis=1, keepdims=True) if softmax else linear)
        return out

    return run


def write_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "w": 2}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))
    return path


def setup(
    tmp_path: Path, layers: dict[str, Any], outputs: Outputs, bar: Bar
) -> tuple[Verifier, Path, Path]:
    """The verifier, the fp32 model, and an "int8" model whose ``length`` output is swapped."""
    softmax = outputs.values == "probabilities"
    fp32 = write_model(tmp_path / "model_fp32.onnx", layers, softmax)
    worse = {n: swapped(layer) if n == "length" else layer for n, layer in layers.items()}
    bad_int8 = write_model(tmp_path / "bad_int8.onnx", worse, softmax)
    tokenizer = write_tokenizer(tmp_path / "tokenizer.json")
    verifier = Verifier(reference(layers, softmax), outputs, tokenizer, TEXTS, bar, 16, 1, 4)
    return verifier, fp32, bad_int8


HEADS = Outputs(values="probabilities", int8_against="torch", heads=("topic", "length"))


def test_one_head_below_the_bar_is_the_one_the_check_names(tmp_path: Path) -> None:
    verifier, fp32, bad_int8 = setup(tmp_path, LAYERS, HEADS, Bar(1e-4, 0.98))
    report = verifier.verify(fp32, bad_int8)
    assert report.fp32_right and not report.passed
    assert report.checks["topic"].int8_agreement == 1.0
    assert report.checks["length"].int8_agreement == 0.0
    assert report.worst_agreement == 0.0
    assert report.problems("all-int8") == [
        f"all-int8: head length: int8 picks torch's label on only 0.0% of {len(TEXTS)} check "
        "texts (need 98%)"
    ]
    assert verifier.verify(fp32, fp32).passed  # the fp32 model as its own int8: all agree


@pytest.fixture
def bad_quantizer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Every recipe "quantizes" to the model whose ``length`` output is swapped."""
    tried: list[str] = []

    def quantize(fp32: Path, int8: Path, recipe: str, keep_fp32: object = ()) -> Path:
        tried.append(recipe)
        return Path(shutil.copyfile(tmp_path / "bad_int8.onnx", int8))

    monkeypatch.setattr(verify, "quantize_recipe", quantize)
    return tried


def test_a_head_below_the_bar_on_every_recipe_refuses_the_export(
    tmp_path: Path, bad_quantizer: list[str]
) -> None:
    bar = Bar(1e-4, 0.98, fp32_fallback=False)
    verifier, fp32, _ = setup(tmp_path, LAYERS, HEADS, bar)
    with pytest.raises(ExportVerificationError) as refused:
        settle_precision(verifier, fp32, name="mh")
    message = str(refused.value)
    assert message.startswith("export of mh failed verification, not published: all-int8: ")
    assert "all-int8: head length: int8 picks torch's label on only 0.0%" in message
    assert "ffn-down-fp32: head length: int8 picks torch's label on only 0.0%" in message
    assert "head topic" not in message
    assert "--min-int8-agreement" in message  # what to do next
    assert bad_quantizer == list(RECIPES)


def test_a_head_below_the_bar_falls_back_to_fp32_and_records_why(
    tmp_path: Path, bad_quantizer: list[str]
) -> None:
    verifier, fp32, _ = setup(tmp_path, LAYERS, HEADS, Bar(1e-4, 0.98))
    verified = settle_precision(verifier, fp32, name="mh")
    assert (verified.recipe, verified.int8) == (FP32_FALLBACK, None)
    assert not (tmp_path / "model_int8.onnx").exists()
    fields = verified.manifest_fields()
    assert fields["precision"] == "fp32"
    assert fields["quantization_recipe"] == FP32_FALLBACK
    assert fields["fp32_fallback"]["int8_agreement"] == {r: 0.0 for r in RECIPES}
    assert fields["fp32_fallback"]["min_agreement"] == 0.98
    record = fields["verification"]
    assert record["passed"] is True and set(record["heads"]) == {"topic", "length"}
    assert all(h["int8_agreement"] is None for h in record["heads"].values())
    assert all(h["max_abs_diff"] <= 1e-4 for h in record["heads"].values())


def test_a_classifier_is_the_one_output_case_recorded_flat(
    tmp_path: Path, bad_quantizer: list[str]
) -> None:
    one = {"length": LAYERS["length"]}
    logits = Outputs(values="logits", int8_against="fp32")
    bar = Bar(1e-4, 0.98, fp32_fallback=False)
    verifier, fp32, _ = setup(tmp_path, one, logits, bar)
    with pytest.raises(
        ExportVerificationError,
        match=r"not published: all-int8: int8 picks the fp32 label on only 0\.0% of 10 check",
    ):
        settle_precision(verifier, fp32, name="clf")
    verified = settle_precision(replace(verifier, bar=Bar(1e-4, 0.0)), fp32, name="clf")
    assert verified.recipe == RECIPES[0] and verified.int8 is not None
    assert verified.manifest_fields()["verification"] == {
        "check_texts": len(TEXTS),
        "max_abs_diff": pytest.approx(0.0, abs=1e-5),
        "tolerance": 1e-4,
        "int8_agreement": 0.0,
        "min_agreement": 0.0,
        "passed": True,
    }


def test_fp32_that_differs_from_torch_stops_the_ladder_naming_the_head(
    tmp_path: Path, bad_quantizer: list[str]
) -> None:
    verifier, fp32, _ = setup(tmp_path, LAYERS, HEADS, Bar(1e-4, 0.98))
    (weight,), bias = LAYERS["length"]
    write_model(fp32, {**LAYERS, "length": ([[weight[0] + 1e-2, weight[1]]], bias)}, True)
    with pytest.raises(ExportVerificationError) as refused:
        settle_precision(verifier, fp32, name="mh")
    message = str(refused.value)
    assert "not published: head length: fp32 ONNX probabilities differ from torch by" in message
    assert "head topic" not in message and "--min-int8-agreement" not in message
    assert bad_quantizer == ["all-int8"]  # no other recipe tried: quantization cannot help
