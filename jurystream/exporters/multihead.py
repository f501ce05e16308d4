"""Export a frozen encoder with one linear head per task as ONE verified ONNX juror.

One torch module computes the sentence embedding once (``sentence_embedding``: the one
definition training uses too) and every head's softmax from it; ``torch.onnx.export`` writes it
with dynamic batch and sequence axes and one output per task (``probs_<task>``), so one
``session.run`` serves every task. It is quantized and verified like the other transformer
jurors, by the shared ``verify.settle_precision`` (all int8, then the feed-forward
down-projections in fp32, then fp32 as the last rung), with every head as one output to check:
fp32 ONNX probabilities must match torch within ``tolerance`` on every head, and int8 must pick
torch's label on at least ``min_agreement`` of the check texts on every head. The heads
themselves always stay fp32 (a 384×k matrix: nothing to gain, only precision to lose). A failing
export raises ``ExportVerificationError`` naming the head and the figure, and nothing is written.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from jurystream.exporters.noise import quiet_onnx_export
from jurystream.exporters.onnx import file_checksums, publishing, write_tokenizer
from jurystream.exporters.verify import Bar, Feeds, Outputs, Verifier, settle_precision
from jurystream.models.serving.juror import Manifest, write_manifest
from jurystream.models.serving.kinds import MULTIHEAD
from jurystream.models.serving.multihead import output_name
from jurystream.models.training.multihead import (
    ENCODER_DIR,
    HEADS_FILE,
    Head,
    load_encoder,
    save_heads,
    sentence_embedding,
)

OPSET = 17


def multihead_module(encoder: Any, heads: Sequence[Head]) -> Any:
    """encoder → mean pooling → L2-normalize → per-task Linear → softmax, as one torch module
    returning one probability tensor per head, in ``heads`` order."""
    import torch

    class MultiHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.heads = torch.nn.ModuleList()
            for head in heads:
                linear = torch.nn.Linear(head.weight.shape[1], head.weight.shape[0])
                with torch.no_grad():
                    linear.weight.copy_(torch.from_numpy(np.asarray(head.weight, np.float32)))
                    linear.bias.copy_(torch.from_numpy(np.asarray(head.bias, np.float32)))
                self.heads.append(linear)

        def forward(self, **inputs: Any) -> tuple[Any, ...]:
            embedding = sentence_embedding(self.encoder, inputs)
            return tuple(torch.softmax(linear(embedding), dim=1) for linear in self.heads)

    module = MultiHead()
    module.eval()
    return module


def _input_names(encoder: Any, tokenizer: Any) -> list[str]:
    accepted = set(encoder.forward.__code__.co_varnames)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
    return [n for n in names if n in tokenizer.model_input_names]


def export_fp32(
    module: Any, tokenizer: Any, inputs: list[str], tasks: list[str], path: Path
) -> Path:
    """torch.onnx.export (TorchScript exporter) with dynamic batch and sequence axes."""
    import torch

    sample = tokenizer(["a sample text", "another"], padding=True, return_tensors="pt")
    args = tuple(sample[n] for n in inputs)

    class Positional(torch.nn.Module):  # torch.onnx.export passes inputs positionally
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *values: Any) -> tuple[Any, ...]:
            result: tuple[Any, ...] = self.inner(**dict(zip(inputs, values, strict=True)))
            return result

    outputs = [output_name(t) for t in tasks]
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in inputs}
    axes.update({n: {0: "batch"} for n in outputs})
    # In eval mode: export restores the wrapper's mode afterwards, recursively, and a wrapper
    # left in training mode would switch the encoder's dropout on for the verification.
    with quiet_onnx_export(), torch.no_grad():
        torch.onnx.export(
            Positional().eval(),
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def head_nodes(fp32_model: Path) -> list[str]:
    """The nodes of the heads (named after the ``heads`` module list), kept fp32.

    Each head's ``Gemm`` is also named as the ``MatMul`` that ``quantize_dynamic`` turns it
    into before quantizing (``<name>_MatMul``): excluding the Gemm's own name alone left the
    heads int8.
    """
    import onnx

    model = onnx.load(str(fp32_model), load_external_data=False)
    names = [node.name for node in model.graph.node if "/heads." in node.name]
    return names + [f"{name}_MatMul" for name in names]


def module_verifier(
    module: Any,
    tasks: list[str],
    tokenizer_file: Path,
    check_texts: Sequence[str],
    bar: Bar,
    max_length: int,
    threads: int = 1,
) -> Verifier:
    """The checks of an export of ``module``: its probabilities in torch, head by head, are the
    reference, and int8 is held to torch's labels (the ones the heads' training measured)."""
    import torch

    def reference(feeds: Feeds) -> list[np.ndarray]:
        with torch.no_grad():
            probs = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        return [p.numpy() for p in probs]

    return Verifier(
        reference=reference,
        outputs=Outputs(values="probabilities", int8_against="torch", heads=tuple(tasks)),
        tokenizer_file=tokenizer_file,
        check_texts=check_texts,
        bar=bar,
        max_length=max_length,
        threads=threads,
    )


def export_multihead(
    encoder_dir: Path | str,
    heads: Sequence[Head],
    output_dir: Path | str,
    *,
    name: str,
    version: str,
    check_texts: Sequence[str],
    max_length: int = 128,
    tolerance: float = 1e-4,
    min_agreement: float = 0.98,
    quantize: bool = True,
    fp32_fallback: bool = True,
    cost: float = 1.0,
    parent: str | None = None,
    threads: int = 1,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Export, quantize and verify ``heads`` on the encoder at ``encoder_dir`` into the juror
    directory ``output_dir`` (which must not exist; it appears by rename once verified and
    loading). The encoder and the heads' fp32 weights are kept in the directory, so a training
    round can refit one head from exactly this version."""
    encoder_dir, output_dir = Path(encoder_dir), Path(output_dir)
    if output_dir.exists():
        raise FileExistsError(f"{output_dir} exists; export into a fresh directory")
    if not heads:
        raise ValueError("a multi-head juror needs at least one head")
    tasks = [h.task for h in heads]
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"head names must differ: {tasks}")
    encoder, tokenizer = load_encoder(encoder_dir, threads)
    module = multihead_module(encoder, heads)
    with publishing(output_dir, threads) as staging:
        raw = staging / "raw"
        raw.mkdir()
        fp32 = export_fp32(
            module, tokenizer, _input_names(encoder, tokenizer), tasks, raw / "model_fp32.onnx"
        )
        tokenizer_file = write_tokenizer(encoder_dir, staging / "tokenizer.json")
        bar = Bar(tolerance, min_agreement, quantize, fp32_fallback)
        verifier = module_verifier(
            module, tasks, tokenizer_file, check_texts, bar, max_length, threads
        )
        verified = settle_precision(verifier, fp32, name=name, keep_fp32=head_nodes(fp32))
        (verified.int8 or fp32).replace(staging / "model.onnx")
        shutil.rmtree(raw)
        encoder.save_pretrained(str(staging / ENCODER_DIR))
        tokenizer.save_pretrained(str(staging / ENCODER_DIR))
        save_heads(heads, staging / HEADS_FILE)
        manifest = Manifest(
            name=name,
            version=version,
            kind=MULTIHEAD.kind,
            labels=heads[0].labels,
            files=file_checksums(staging),
            cost=cost,
            max_length=max_length,
            parent=parent,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            extra={
                "tokenizer": "tokenizer.json",
                "heads": {h.task: list(h.labels) for h in heads},
                "outputs": {h.task: output_name(h.task) for h in heads},
                "head_training": {h.task: dict(h.training) for h in heads},
                "encoder": ENCODER_DIR,
                **verified.manifest_fields(),
                **(extra or {}),
            },
        )
        write_manifest(staging, manifest)
    return output_dir
