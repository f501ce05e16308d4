"""Export a frozen encoder with one linear head per task as ONE verified ONNX juror.

One torch module computes the sentence embedding once (``sentence_embedding``: the one
definition training uses too) and every head's softmax from it; ``torch.onnx.export`` writes it
with dynamic batch and sequence axes and one output per task (``probs_<task>``), so one
``session.run`` serves every task. It is quantized like the other transformer jurors
(``onnx.RECIPES``: all int8, then the feed-forward down-projections in fp32, then fp32 as the
last rung); the heads themselves always stay fp32 (a 384×k matrix: nothing to gain, only
precision to lose). Before anything is published the export is verified on check texts,
tokenized by the ``tokenizer.json`` serving reads: fp32 ONNX probabilities must match torch
within ``tolerance`` on every head, and int8 must pick torch's label on at least
``min_agreement`` of the texts on every head. A failing export raises
``ExportVerificationError`` naming the head and the figure, and nothing is written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from jurystream.exporters.noise import quiet_onnx_export
from jurystream.exporters.onnx import (
    FP32_FALLBACK,
    RECIPES,
    ExportVerificationError,
    down_projections,
    fallback_record,
    file_checksums,
    quantize_int8,
    write_tokenizer,
)
from jurystream.models.serving.juror import Manifest, load_juror, write_manifest
from jurystream.models.serving.kinds import MULTIHEAD
from jurystream.models.serving.multihead import output_name
from jurystream.models.serving.runtime import encode, load_tokenizer, session
from jurystream.models.training.multihead import (
    ENCODER_DIR,
    HEADS_FILE,
    Head,
    load_encoder,
    save_heads,
    sentence_embedding,
)

OPSET = 17


@dataclass(frozen=True)
class HeadCheck:
    """What verification measured on one head (kept in the manifest under ``verification``)."""

    max_abs_diff: float  # fp32 ONNX vs torch probabilities
    int8_agreement: float | None  # int8 ONNX argmax == torch argmax, share of check texts
    int8_max_abs_diff: float | None  # int8 ONNX vs torch probabilities (informative)


@dataclass(frozen=True)
class MultiHeadVerification:
    check_texts: int
    tolerance: float
    min_agreement: float
    heads: dict[str, HeadCheck]

    @property
    def fp32_right(self) -> bool:
        return all(h.max_abs_diff <= self.tolerance for h in self.heads.values())  # NaN fails

    @property
    def passed(self) -> bool:
        return self.fp32_right and all(
            h.int8_agreement is None or h.int8_agreement >= self.min_agreement
            for h in self.heads.values()
        )

    @property
    def worst_agreement(self) -> float | None:
        values = [h.int8_agreement for h in self.heads.values() if h.int8_agreement is not None]
        return min(values) if values else None

    def problems(self, recipe: str) -> list[str]:
        out = []
        for task, h in self.heads.items():
            if not h.max_abs_diff <= self.tolerance:
                out.append(
                    f"head {task}: fp32 ONNX probabilities differ from torch by "
                    f"{h.max_abs_diff:.2e} (tolerance {self.tolerance:.0e})"
                )
            elif h.int8_agreement is not None and h.int8_agreement < self.min_agreement:
                out.append(
                    f"{recipe}: head {task}: int8 picks torch's label on only "
                    f"{h.int8_agreement:.1%} of {self.check_texts} check texts "
                    f"(need {self.min_agreement:.0%})"
                )
        return out


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


def verify_multihead(
    module: Any,
    fp32_model: Path,
    int8_model: Path | None,
    tokenizer_file: Path,
    tasks: list[str],
    check_texts: Sequence[str],
    *,
    max_length: int,
    tolerance: float,
    min_agreement: float,
    threads: int = 1,
    batch_size: int = 32,
) -> MultiHeadVerification:
    """torch, fp32 ONNX and int8 ONNX probabilities of every head on ``check_texts``."""
    import torch

    if not check_texts:
        raise ExportVerificationError("verification needs at least one check text")
    tokenizer = load_tokenizer(tokenizer_file, max_length)
    sessions = {"fp32": session(fp32_model, threads)}
    if int8_model is not None:
        sessions["int8"] = session(int8_model, threads)
    names = {i.name for i in sessions["fp32"].get_inputs()}
    got: dict[str, list[list[np.ndarray]]] = {k: [] for k in ("torch", *sessions)}
    for start in range(0, len(check_texts), batch_size):
        feeds = encode(tokenizer, check_texts[start : start + batch_size])
        feeds = {k: v for k, v in feeds.items() if k in names}
        with torch.no_grad():
            probs = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        got["torch"].append([p.numpy() for p in probs])
        for kind, onnx in sessions.items():
            got[kind].append([np.asarray(p) for p in onnx.run(None, feeds)])
    checks = {}
    for i, task in enumerate(tasks):
        ref = np.concatenate([batch[i] for batch in got["torch"]])
        fp32 = np.concatenate([batch[i] for batch in got["fp32"]])
        int8 = np.concatenate([batch[i] for batch in got["int8"]]) if "int8" in got else None
        checks[task] = HeadCheck(
            max_abs_diff=float(np.abs(ref - fp32).max()),
            int8_agreement=None
            if int8 is None
            else float((int8.argmax(1) == ref.argmax(1)).mean()),
            int8_max_abs_diff=None if int8 is None else float(np.abs(ref - int8).max()),
        )
    return MultiHeadVerification(len(check_texts), tolerance, min_agreement, checks)


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
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        raw = staging / "raw"
        raw.mkdir()
        fp32 = export_fp32(
            module, tokenizer, _input_names(encoder, tokenizer), tasks, raw / "model_fp32.onnx"
        )
        tokenizer_file = write_tokenizer(encoder_dir, staging / "tokenizer.json")
        keep_heads = head_nodes(fp32)
        reports: list[tuple[str, MultiHeadVerification]] = []
        int8: Path | None = None
        for recipe in RECIPES if quantize else ("fp32",):
            if recipe != "fp32":
                keep = keep_heads + (down_projections(fp32) if recipe == "ffn-down-fp32" else [])
                int8 = quantize_int8(fp32, raw / "model_int8.onnx", keep)
            report = verify_multihead(
                module,
                fp32,
                int8,
                tokenizer_file,
                tasks,
                check_texts,
                max_length=max_length,
                tolerance=tolerance,
                min_agreement=min_agreement,
                threads=threads,
            )
            reports.append((recipe, report))
            if report.passed or not report.fp32_right:
                break  # passed, or the fp32 export itself is wrong: no recipe can help
        recipe, report = reports[-1]
        fallback: dict[str, Any] | None = None
        if not report.passed and fp32_fallback and int8 is not None and report.fp32_right:
            fallback = fallback_record(
                fp32,
                int8,
                tokenizer_file,
                check_texts,
                {r: v.worst_agreement for r, v in reports},
                min_agreement,
                max_length,
                threads,
            )
            # fp32 serves: its int8 figures live in the fallback record, not the verification.
            fp32_only = {t: HeadCheck(h.max_abs_diff, None, None) for t, h in report.heads.items()}
            report = replace(report, heads=fp32_only)
            recipe, int8 = FP32_FALLBACK, None
        elif not report.passed:
            problems = [p for r, v in reports for p in v.problems(r)]
            raise ExportVerificationError(
                f"export of {name} failed verification, not published: " + "; ".join(problems)
            )
        (int8 or fp32).replace(staging / "model.onnx")
        shutil.rmtree(raw)
        encoder.save_pretrained(str(staging / ENCODER_DIR))
        tokenizer.save_pretrained(str(staging / ENCODER_DIR))
        save_heads(heads, staging / HEADS_FILE)
        verification = {
            "check_texts": report.check_texts,
            "tolerance": report.tolerance,
            "min_agreement": report.min_agreement,
            "heads": {task: asdict(check) for task, check in report.heads.items()},
            "passed": True,
        }
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
                "precision": "fp32" if int8 is None else "int8-dynamic-per-channel",
                "quantization_recipe": recipe,
                **({"fp32_fallback": fallback} if fallback else {}),
                "verification": verification,
                **(extra or {}),
            },
        )
        write_manifest(staging, manifest)
        load_juror(staging, threads=threads)  # the directory must serve before it is published
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir
