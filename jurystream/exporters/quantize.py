"""Dynamic int8 quantization of an fp32 ONNX export, by recipe.

onnxruntime quantizes the weights to int8 with per-channel scales. The recipes in ``RECIPES``
differ in what they leave fp32; ``verify.settle_precision`` tries them in order and keeps the
first the export's verification accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jurystream.exporters.noise import quiet_quantization

# Quantization recipes, tried in order until one passes verification: all weights int8 (the
# fastest), then the feed-forward down-projections kept in fp32 (~25% slower on MiniLM, but
# it keeps int8 within the agreement bar for models trained on a few hundred labels).
RECIPES = ("all-int8", "ffn-down-fp32")


def quantize_int8(fp32_model: Path, int8_model: Path, keep_fp32: Sequence[str] = ()) -> Path:
    """Dynamic int8 with per-channel weight scales; nodes named in ``keep_fp32`` stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_quantization():
        quantize_dynamic(
            str(fp32_model),
            str(int8_model),
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(keep_fp32),
        )
    return int8_model


def quantize_recipe(
    fp32_model: Path, int8_model: Path, recipe: str, keep_fp32: Sequence[str] = ()
) -> Path:
    """``fp32_model`` quantized by ``recipe`` (one of ``RECIPES``); ``keep_fp32`` stays fp32
    whatever the recipe (a multi-head juror's heads)."""
    keep = [*keep_fp32, *(down_projections(fp32_model) if recipe == "ffn-down-fp32" else [])]
    return quantize_int8(fp32_model, int8_model, keep)


def down_projections(fp32_model: Path) -> list[str]:
    """MatMul nodes whose constant weight maps a wider input to a narrower output.

    In a transformer these are the feed-forward down-projections. Their input, straight after
    the GELU, has the widest and most outlier-heavy range of the network, so one per-tensor
    activation scale for it costs the most precision (Bondarenko et al., 2021). Found by shape,
    not by name, so it works for any architecture optimum exports.
    """
    import onnx

    model = onnx.load(str(fp32_model), load_external_data=False)
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and len(node.input) == 2
        and len(shape := shapes.get(node.input[1], ())) == 2
        and shape[0] > shape[1]
    ]
