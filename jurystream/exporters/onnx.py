"""Export a HF sequence-classification checkpoint to a verified, int8-quantized juror directory.

The steps: optimum exports fp32 ONNX; onnxruntime quantizes it dynamically to int8 with
per-channel weight scales; then, before anything is written where it could be served, the
export is checked on a set of texts, tokenized by the very ``tokenizer.json`` the worker will
use: fp32 ONNX logits must match torch within a tolerance, and int8 must pick the same label as
fp32 on at least ``min_agreement`` of the texts. A failing check raises ExportVerificationError
saying which check failed and by how much; the staging directory is removed.

Quantization tries the recipes in ``RECIPES`` in order and keeps the first that passes (the
manifest records which): everything int8 first, then with the feed-forward down-projections
left in fp32, which is what models fine-tuned on a few hundred labels tend to need. When no
recipe meets the bar, the ladder ends with serving the verified fp32 model (``fp32_fallback``):
a slower juror is worth more than none. The manifest then records ``fp32-fallback``, what each
int8 recipe reached, and the measured speed cost (fp32 vs int8 texts per second), so the choice
is visible in ``jurystream models show`` rather than silent.

We do not run optimum's graph optimizations (``--optimize O2``): the fused graph breaks
dynamic quantization here, and int8 is where the speed comes from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from jurystream.exporters.noise import quiet_onnx_export, quiet_quantization
from jurystream.models.serving.juror import Manifest, load_juror, sha256_file, write_manifest
from jurystream.models.serving.kinds import CHECKPOINT_DIR, TRANSFORMER
from jurystream.models.serving.runtime import encode, load_tokenizer, session
from jurystream.models.training.training import read_training_summary

FP32_FILE = "model_fp32.onnx"


class ExportVerificationError(RuntimeError):
    """The exported model does not behave like the checkpoint; it must not be published."""


@dataclass(frozen=True)
class Verification:
    """What the checks measured (stored in the manifest under ``verification``)."""

    check_texts: int
    max_abs_diff: float
    tolerance: float
    int8_agreement: float | None
    min_agreement: float

    @property
    def passed(self) -> bool:
        if not self.max_abs_diff <= self.tolerance:  # also catches NaN
            return False
        return self.int8_agreement is None or self.int8_agreement >= self.min_agreement


def _optimum_export(checkpoint: Path, output_dir: Path, task: str) -> None:
    """optimum's exporter, offline, on CPU, for one task of the checkpoint."""
    from optimum.exporters.onnx import main_export

    with quiet_onnx_export():
        main_export(
            str(checkpoint),
            output=str(output_dir),
            task=task,
            device="cpu",
            library_name="transformers",
            local_files_only=True,
            do_validation=False,  # we validate ourselves, with the serving tokenizer
        )


def export_fp32(checkpoint: Path, output_dir: Path) -> Path:
    """ONNX export with optimum (no graph optimization); returns the path of ``model.onnx``."""
    _optimum_export(checkpoint, output_dir, "text-classification")
    model = output_dir / "model.onnx"
    if not model.is_file():
        raise ExportVerificationError(f"optimum wrote no model.onnx for {checkpoint}")
    return model


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


# Quantization recipes, tried in order until one passes verification: all weights int8 (the
# fastest), then the feed-forward down-projections kept in fp32 (~25% slower on MiniLM, but
# it keeps int8 within the agreement bar for models trained on a few hundred labels).
RECIPES = ("all-int8", "ffn-down-fp32")
FP32_FALLBACK = "fp32-fallback"  # the last rung: no int8 recipe met the bar, fp32 serves
SPEED_TEXTS = 64  # check texts timed per runtime when measuring the fp32 fallback's cost


def write_tokenizer(checkpoint: Path, destination: Path) -> Path:
    """The checkpoint's fast tokenizer as one ``tokenizer.json``, the only file serving reads."""
    source = checkpoint / "tokenizer.json"
    if source.is_file():
        shutil.copyfile(source, destination)
        return destination
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ExportVerificationError(
            f"{checkpoint}: its tokenizer has no fast (tokenizers) version; serving needs one"
        )
    tokenizer.backend_tokenizer.save(str(destination))
    return destination


def onnx_logits(session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run an ONNX classifier on pre-tokenized inputs; returns logits (texts, labels)."""
    names = {i.name for i in session.get_inputs()}
    out = session.run(None, {k: v for k, v in feeds.items() if k in names})[0]
    return np.asarray(out, dtype=np.float32)


def torch_model(checkpoint: Path, threads: int = 1) -> Any:
    """The checkpoint as a PyTorch classifier in eval mode (the reference for verification)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint))
    model.eval()
    return model


def torch_logits(model: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """PyTorch logits on the same pre-tokenized inputs the ONNX model gets."""
    import torch

    accepted = set(model.forward.__code__.co_varnames)
    with torch.no_grad():
        inputs = {k: torch.from_numpy(v) for k, v in feeds.items() if k in accepted}
        return np.asarray(model(**inputs).logits.float().numpy(), dtype=np.float32)


def verify_export(
    checkpoint: Path,
    fp32_model: Path,
    int8_model: Path | None,
    tokenizer_file: Path,
    check_texts: Sequence[str],
    *,
    max_length: int = 128,
    tolerance: float = 1e-3,
    min_agreement: float = 0.98,
    threads: int = 1,
    batch_size: int = 32,
) -> Verification:
    """Compare torch, fp32 ONNX and int8 ONNX on ``check_texts`` (in batches, like serving)."""
    if not check_texts:
        raise ExportVerificationError("verification needs at least one check text")
    reference = torch_model(checkpoint, threads)
    tokenizer = load_tokenizer(tokenizer_file, max_length)
    fp32_session = session(fp32_model, threads)
    int8_session = session(int8_model, threads) if int8_model is not None else None
    ref, fp32, int8 = [], [], []
    for start in range(0, len(check_texts), batch_size):
        feeds = encode(tokenizer, check_texts[start : start + batch_size])
        ref.append(torch_logits(reference, feeds))
        fp32.append(onnx_logits(fp32_session, feeds))
        if int8_session is not None:
            int8.append(onnx_logits(int8_session, feeds))
    ref_all, fp32_all = np.concatenate(ref), np.concatenate(fp32)
    agreement = None
    if int8:
        agreement = float((np.concatenate(int8).argmax(1) == fp32_all.argmax(1)).mean())
    return Verification(
        check_texts=len(check_texts),
        max_abs_diff=float(np.abs(ref_all - fp32_all).max()),
        tolerance=tolerance,
        int8_agreement=agreement,
        min_agreement=min_agreement,
    )


def export_encoder(checkpoint: Path, output_dir: Path) -> Path:
    """Export a transformer checkpoint as an ONNX sentence encoder (needs the ``train`` extra)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    _optimum_export(checkpoint, output_dir, "feature-extraction")
    write_tokenizer(checkpoint, output_dir / "tokenizer.json")
    return output_dir


def checkpoint_labels(checkpoint: Path) -> tuple[str, ...]:
    """Label names in id order from the checkpoint's config (``id2label``)."""
    config = json.loads((checkpoint / "config.json").read_text())
    id2label = config.get("id2label") or {}
    if not id2label:
        raise ValueError(f"{checkpoint}/config.json has no id2label; pass the labels explicitly")
    return tuple(str(id2label[k]) for k in sorted(id2label, key=int))


def export_transformer(
    checkpoint: Path | str,
    output_dir: Path | str,
    *,
    name: str,
    version: str,
    check_texts: Sequence[str],
    labels: Sequence[str] | None = None,
    quantize: bool = True,
    max_length: int = 128,
    tolerance: float = 1e-3,
    min_agreement: float = 0.98,
    cost: float = 1.0,
    parent: str | None = None,
    keep_checkpoint: bool = True,
    keep_fp32: bool = False,
    threads: int = 1,
    extra: dict[str, Any] | None = None,
    fp32_fallback: bool = True,
) -> Path:
    """Export, quantize and verify ``checkpoint`` into the juror directory ``output_dir``.

    ``output_dir`` must not exist; it appears (by rename) only after every check passed and
    the directory loads as a juror. ``model.onnx`` is the int8 model when ``quantize`` (the
    serving default), else fp32. With ``keep_checkpoint`` the HF checkpoint is kept under
    ``checkpoint/`` so the trainer can continue from exactly the serving version. With
    ``fp32_fallback`` a model whose int8 versions all miss ``min_agreement`` is served in fp32
    (the fp32 export must still match torch); without it, that export fails.
    """
    checkpoint = Path(checkpoint)
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise FileExistsError(f"{output_dir} exists; export into a fresh directory")
    if not (checkpoint / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a HF checkpoint directory (no config.json)")
    label_names = tuple(labels) if labels is not None else checkpoint_labels(checkpoint)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        raw = staging / "optimum"
        fp32 = export_fp32(checkpoint, raw)
        tokenizer_file = write_tokenizer(checkpoint, staging / "tokenizer.json")
        reports: list[tuple[str, Verification]] = []
        int8: Path | None = None
        for recipe in RECIPES if quantize else ("fp32",):
            if recipe != "fp32":
                keep = down_projections(fp32) if recipe == "ffn-down-fp32" else []
                int8 = quantize_int8(fp32, staging / "model_int8.onnx", keep)
            report = verify_export(
                checkpoint,
                fp32,
                int8,
                tokenizer_file,
                check_texts,
                max_length=max_length,
                tolerance=tolerance,
                min_agreement=min_agreement,
                threads=threads,
            )
            reports.append((recipe, report))
            if report.passed or not report.max_abs_diff <= tolerance:
                break  # passed, or the fp32 export itself is wrong: no recipe can help
        recipe, report = reports[-1]
        fallback: dict[str, Any] | None = None
        fp32_right = report.max_abs_diff <= tolerance
        if not report.passed and fp32_fallback and int8 is not None and fp32_right:
            fallback = fallback_record(
                fp32,
                int8,
                tokenizer_file,
                check_texts,
                {r: v.int8_agreement for r, v in reports},
                report.min_agreement,
                max_length,
                threads,
            )
            report = replace(report, int8_agreement=None)
            int8.unlink()
            recipe, int8 = FP32_FALLBACK, None
        if not report.passed:
            raise ExportVerificationError(_why(name, reports))
        if int8 is not None:
            int8.replace(staging / "model.onnx")
            if keep_fp32:
                fp32.replace(staging / FP32_FILE)
        else:
            fp32.replace(staging / "model.onnx")
        shutil.rmtree(raw)
        if keep_checkpoint:
            shutil.copytree(checkpoint, staging / CHECKPOINT_DIR)
        manifest = Manifest(
            name=name,
            version=version,
            kind=TRANSFORMER.kind,
            labels=label_names,
            files=file_checksums(staging),
            cost=cost,
            max_length=max_length,
            parent=parent,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            extra={
                "tokenizer": "tokenizer.json",
                "precision": "fp32" if int8 is None else "int8-dynamic-per-channel",
                "quantization_recipe": recipe,
                **({"fp32_fallback": fallback} if fallback else {}),
                "verification": {**asdict(report), "passed": True},
                "training": read_training_summary(checkpoint),
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


def texts_per_second(
    model: Path, tokenizer_file: Path, texts: Sequence[str], max_length: int, threads: int = 1
) -> float:
    """Serving speed of ``model`` on ``texts`` in batches of 8, best of two passes."""
    onnx = session(model, threads)
    tokenizer = load_tokenizer(tokenizer_file, max_length)
    batches = [encode(tokenizer, texts[i : i + 8]) for i in range(0, len(texts), 8)]
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        for feeds in batches:
            onnx_logits(onnx, feeds)
        best = min(best, time.perf_counter() - started)
    return len(texts) / max(best, 1e-9)


def fallback_record(
    fp32: Path,
    int8: Path,
    tokenizer_file: Path,
    check_texts: Sequence[str],
    agreements: Mapping[str, float | None],
    min_agreement: float,
    max_length: int,
    threads: int,
) -> dict[str, Any]:
    """Why fp32 serves and what it costs: each int8 recipe's agreement, both speeds."""
    texts = list(check_texts[:SPEED_TEXTS])
    fp32_speed = texts_per_second(fp32, tokenizer_file, texts, max_length, threads)
    int8_speed = texts_per_second(int8, tokenizer_file, texts, max_length, threads)
    return {
        "min_agreement": min_agreement,
        "int8_agreement": dict(agreements),
        "fp32_texts_per_s": round(fp32_speed, 1),
        "int8_texts_per_s": round(int8_speed, 1),
        "slowdown": round(int8_speed / fp32_speed, 2),
    }


def file_checksums(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (except the manifest), by relative path."""
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != "manifest.json"
    }


def _why(name: str, reports: Sequence[tuple[str, Verification]]) -> str:
    problems = []
    for recipe, report in reports:
        if not report.max_abs_diff <= report.tolerance:
            problems.append(
                f"fp32 ONNX logits differ from torch by {report.max_abs_diff:.2e} "
                f"(tolerance {report.tolerance:.0e})"
            )
        elif report.int8_agreement is not None and report.int8_agreement < report.min_agreement:
            problems.append(
                f"{recipe}: int8 picks the fp32 label on only {report.int8_agreement:.1%} of "
                f"{report.check_texts} check texts (need {report.min_agreement:.0%})"
            )
    return f"export of {name} failed verification, not published: " + "; ".join(problems)
