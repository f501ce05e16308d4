"""Export a HF sequence-classification checkpoint to a verified, int8-quantized juror directory.

The steps: optimum exports fp32 ONNX; ``verify.settle_precision`` quantizes it (onnxruntime,
dynamic int8 with per-channel weight scales, by the recipes in ``quantize.RECIPES``) and checks
each candidate before anything is written where it could be served, on a set of texts tokenized
by the very ``tokenizer.json`` the worker will use: fp32 ONNX logits must match torch within a
tolerance, and int8 must pick the same label as fp32 on at least ``min_agreement`` of the texts.
The first recipe that passes serves; when none does, the verified fp32 model serves
(``fp32-fallback``, with what each recipe reached and the speed cost in the manifest). A failing
check raises ExportVerificationError saying which check failed and by how much; the staging
directory is removed. This module is the classifier's part: optimum's export, the torch
reference and the juror directory.

We do not run optimum's graph optimizations (``--optimize O2``): the fused graph breaks
dynamic quantization here, and int8 is where the speed comes from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from jurystream.exporters.noise import quiet_onnx_export
from jurystream.exporters.verify import (
    Bar,
    ExportVerificationError,
    Outputs,
    Verifier,
    onnx_outputs,
    settle_precision,
)
from jurystream.models.serving.juror import Manifest, load_juror, sha256_file, write_manifest
from jurystream.models.serving.kinds import CHECKPOINT_DIR, TRANSFORMER
from jurystream.models.training.training import read_training_summary

FP32_FILE = "model_fp32.onnx"
# A classifier's one output; its int8 model replaces the fp32 export, so it must pick fp32's labels.
LOGITS = Outputs(values="logits", int8_against="fp32")


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
    return onnx_outputs(session, feeds)[0]


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


def checkpoint_verifier(
    checkpoint: Path,
    tokenizer_file: Path,
    check_texts: Sequence[str],
    bar: Bar,
    max_length: int = 128,
    threads: int = 1,
) -> Verifier:
    """The checks of an export of ``checkpoint``: its logits in torch are the reference."""
    model = torch_model(checkpoint, threads)
    return Verifier(
        reference=lambda feeds: [torch_logits(model, feeds)],
        outputs=LOGITS,
        tokenizer_file=tokenizer_file,
        check_texts=check_texts,
        bar=bar,
        max_length=max_length,
        threads=threads,
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
    with publishing(output_dir, threads) as staging:
        raw = staging / "optimum"
        fp32 = export_fp32(checkpoint, raw)
        tokenizer_file = write_tokenizer(checkpoint, staging / "tokenizer.json")
        bar = Bar(tolerance, min_agreement, quantize, fp32_fallback)
        verifier = checkpoint_verifier(
            checkpoint, tokenizer_file, check_texts, bar, max_length, threads
        )
        verified = settle_precision(verifier, fp32, name=name)
        if verified.int8 is not None:
            verified.int8.replace(staging / "model.onnx")
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
                **verified.manifest_fields(),
                "training": read_training_summary(checkpoint),
                **(extra or {}),
            },
        )
        write_manifest(staging, manifest)
    return output_dir


@contextmanager
def publishing(output_dir: Path, threads: int = 1) -> Iterator[Path]:
    """A staging directory beside ``output_dir`` that becomes it (by rename) only once the block
    has written the juror and its manifest and the directory loads as a juror; on any failure it
    is removed. So a juror directory appears whole and serving, or not at all."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        yield staging
        load_juror(staging, threads=threads)  # the directory must serve before it is published
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def file_checksums(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (except the manifest), by relative path."""
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != "manifest.json"
    }
