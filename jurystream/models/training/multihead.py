"""Several tasks from one encoder pass: a frozen sentence encoder with one linear head per task.

A deployment that labels every post on several tasks (offensive, hate, emotion, irony) would
pay one transformer pass per task with one juror per task. Here the tasks share the encoder:
texts are encoded once by the frozen base (MiniLM: mean pooling over the attention mask, then
L2-normalized, as sentence-transformers does), and each task is a logistic regression on that
embedding. Fitting a head takes seconds on 2 cores, and a training round refits the head of its
own task without touching the others (``refit_head``).

The heads live in ``heads.npz`` next to the exported model, and the encoder under ``encoder/``,
so a round refits from exactly the serving version. torch and transformers are imported inside
the functions, as in ``training.py``.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jurystream.models.serving.juror import Manifest
from jurystream.progress import progress_bar

HEADS_FILE = "heads.npz"
ENCODER_DIR = "encoder"
# Measured on TweetEval (frozen MiniLM, 400 train texts per task, macro-F1 on 500 val texts of
# offensive/hate/emotion/irony): balanced C=1 0.661/0.673/0.586/0.596 (mean 0.629); unweighted
# C=1 0.582/0.684/0.491/0.593 (0.588), its best C=10 0.612; balanced C=10 0.622, C=100 0.595.
# Balanced class weights keep a head from voting the majority class (offensive, emotion).
DEFAULT_CLASS_WEIGHT: str | None = "balanced"
DEFAULT_C = 1.0
# A task's data: texts, label ids into label names, label names in id order.
TaskData = tuple[Sequence[str], Sequence[int], Sequence[str]]


@dataclass(frozen=True)
class Head:
    """One task's linear head on the sentence embedding: probabilities = softmax(W·e + b)."""

    task: str
    labels: tuple[str, ...]
    weight: np.ndarray  # (labels, embedding dim)
    bias: np.ndarray  # (labels,)
    training: Mapping[str, Any]  # what it was fitted on and with (kept in the manifest)


def load_encoder(directory: Path, threads: int = 1) -> tuple[Any, Any]:
    """The base encoder (a HF checkpoint; a classifier's encoder part also works) in eval
    mode, and its fast tokenizer."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(threads)
    encoder = AutoModel.from_pretrained(str(directory))
    encoder.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory), use_fast=True)
    return encoder, tokenizer


def sentence_embedding(encoder: Any, inputs: Mapping[str, Any]) -> Any:
    """Mean of the last hidden states over the attention mask, L2-normalized (torch).

    The one definition of the embedding: training encodes with it and the exported model
    computes it, so a head sees at serving time what it was fitted on.
    """
    import torch

    accepted = set(encoder.forward.__code__.co_varnames)
    hidden = encoder(**{k: v for k, v in inputs.items() if k in accepted}).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def embed(
    encoder: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int = 128,
    batch_size: int = 32,
    progress: bool = True,
    description: str = "encoding",
) -> np.ndarray:
    """Sentence embeddings of ``texts`` (texts, dim), batched by length so padding is small."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: np.ndarray | None = None
    with progress_bar(enabled=progress) as bar, torch.no_grad():
        task = bar.add_task(description, total=len(texts))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            inputs = tokenizer(
                [texts[i] for i in chunk],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            vectors = sentence_embedding(encoder, inputs).numpy()
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[chunk] = vectors
            bar.update(task, advance=len(chunk))
    if out is None:
        raise ValueError("no texts to encode")
    return out


def fit_head(
    task: str,
    embeddings: np.ndarray,
    labels: Sequence[int],
    label_names: Sequence[str],
    *,
    c: float = DEFAULT_C,
    class_weight: str | None = DEFAULT_CLASS_WEIGHT,
    weights: Sequence[float] | None = None,
    seed: int = 0,
) -> Head:
    """Logistic regression on the embeddings, as a softmax head over every label.

    Balanced class weights count examples, not their weights (as ``sklearn_juror`` does): the
    trainer's per-example weights say how far a label is trusted, not how common its class is.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(labels, dtype=np.int64)
    present = np.unique(y)
    if len(present) != len(label_names):
        missing = sorted(set(label_names) - {label_names[i] for i in present})
        raise ValueError(f"task {task}: no example of {missing}; every label needs some")
    balanced = None
    if class_weight == "balanced":
        weight = compute_class_weight("balanced", classes=present, y=y)
        balanced = dict(zip(present.tolist(), weight.tolist(), strict=True))
    elif class_weight is not None:
        raise ValueError(f"class_weight {class_weight!r}: use 'balanced' or None")
    model = LogisticRegression(C=c, class_weight=balanced, max_iter=2000, random_state=seed)
    model.fit(embeddings, y, sample_weight=None if weights is None else np.asarray(weights))
    coef = np.asarray(model.coef_, dtype=np.float32)
    intercept = np.asarray(model.intercept_, dtype=np.float32)
    if len(label_names) == 2:  # sklearn's binary model is one logit z: softmax([0, z])
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros(1, dtype=np.float32), intercept])
    return Head(
        task,
        tuple(label_names),
        coef,
        intercept,
        {
            "examples": len(y),
            "label_counts": {label_names[k]: v for k, v in sorted(Counter(y.tolist()).items())},
            "c": c,
            "class_weight": class_weight,
            "weighted": weights is not None,
        },
    )


def save_heads(heads: Sequence[Head], path: Path) -> None:
    """The heads' weights (fp32) as ``<task>.weight`` / ``<task>.bias`` arrays."""
    arrays: dict[str, Any] = {}
    for head in heads:
        arrays[f"{head.task}.weight"] = head.weight
        arrays[f"{head.task}.bias"] = head.bias
    with path.open("wb") as fh:
        np.savez(fh, **arrays)


def load_heads(directory: Path, manifest_extra: Mapping[str, Any]) -> list[Head]:
    """The heads of a multi-head juror directory, in the manifest's order."""
    training = manifest_extra.get("head_training") or {}
    with np.load(directory / HEADS_FILE) as arrays:
        return [
            Head(
                task,
                tuple(labels),
                arrays[f"{task}.weight"],
                arrays[f"{task}.bias"],
                training.get(task, {}),
            )
            for task, labels in manifest_extra["heads"].items()
        ]


def build_multihead_juror(
    tasks: Mapping[str, TaskData],
    out_dir: Path | str,
    *,
    name: str,
    version: str = "0",
    base: Path | None = None,
    check_texts: Sequence[str] = (),
    max_length: int = 128,
    c: float = DEFAULT_C,
    class_weight: str | None = DEFAULT_CLASS_WEIGHT,
    min_agreement: float = 0.98,
    tolerance: float = 1e-4,
    threads: int = 1,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Encode every task's texts with the frozen ``base`` (default: the offline MiniLM), fit
    one head per task, then export, quantize and verify one ONNX model serving every head.

    ``out_dir`` must not exist; it appears only when the export verified. Without
    ``check_texts`` the export is verified on the first 64 texts of each task.
    """
    from jurystream.models.serving.kinds import MULTIHEAD
    from jurystream.models.training.training import base_model_path

    if not tasks:
        raise ValueError("a multi-head juror needs at least one task")
    base = Path(base) if base is not None else base_model_path()
    encoder, tokenizer = load_encoder(base, threads)
    heads = []
    for task, (texts, labels, label_names) in tasks.items():
        if len(texts) != len(labels):
            raise ValueError(f"task {task}: {len(texts)} texts but {len(labels)} labels")
        vectors = embed(
            encoder,
            tokenizer,
            texts,
            max_length=max_length,
            progress=progress,
            description=f"encoding {task}",
        )
        heads.append(fit_head(task, vectors, labels, label_names, c=c, class_weight=class_weight))
    check = list(check_texts) or [t for texts, _, _ in tasks.values() for t in list(texts)[:64]]
    export = MULTIHEAD.implementation("export")
    path: Path = export(
        base,
        heads,
        Path(out_dir),
        name=name,
        version=version,
        check_texts=check,
        max_length=max_length,
        min_agreement=min_agreement,
        tolerance=tolerance,
        threads=threads,
        extra={"base": str(base), **(extra or {})},
    )
    return path


def refit_head(
    serving_dir: Path,
    manifest: Manifest,
    task: str | None,
    texts: Sequence[str],
    labels: Sequence[int],
    target: Path,
    *,
    check_texts: Sequence[str],
    weights: Sequence[float] | None = None,
    seed: int = 0,
    threads: int = 1,
    min_agreement: float | None = None,
) -> Path:
    """A candidate with ``task``'s head (None: the first) refit on ``texts`` (label ids into
    that head's labels) and every other head kept as the serving version has it."""
    from jurystream.models.serving.kinds import MULTIHEAD

    heads = load_heads(serving_dir, manifest.extra)
    by_task = {h.task: h for h in heads}
    task = task or heads[0].task
    if task not in by_task:
        raise ValueError(f"{manifest.name} has no head {task!r}; its heads: {', '.join(by_task)}")
    old = by_task[task]
    encoder_dir = serving_dir / ENCODER_DIR
    encoder, tokenizer = load_encoder(encoder_dir, threads)
    vectors = embed(encoder, tokenizer, texts, max_length=manifest.max_length, progress=False)
    new = fit_head(
        task,
        vectors,
        labels,
        old.labels,
        c=float(old.training.get("c", DEFAULT_C)),
        class_weight=old.training.get("class_weight", DEFAULT_CLASS_WEIGHT),
        weights=weights,
        seed=seed,
    )
    bar = {} if min_agreement is None else {"min_agreement": min_agreement}
    export = MULTIHEAD.implementation("export")
    path: Path = export(
        encoder_dir,
        [new if h.task == task else h for h in heads],
        target,
        name=manifest.name,
        version="0",
        check_texts=list(check_texts),
        max_length=manifest.max_length,
        cost=manifest.cost,
        threads=threads,
        extra={"base": manifest.extra.get("base"), "refit": task},
        **bar,
    )
    return path


def head_metrics(juror: Any, heldout: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each head's classification report on its task's held-out ``LabeledSet``."""
    from jurystream.models.rules.scores import classification_report

    reports = {}
    for task, data in heldout.items():
        data = data.with_label_order(juror.heads[task], f"held-out {task} vs head {task}")
        probs = juror.predict_heads(data.texts, tasks=[task])[task]
        reports[task] = classification_report(probs, data.labels, data.label_names)
    return reports


def bootstrap_multihead(
    seeds: Mapping[str, Any],
    registry: Any,
    *,
    name: str,
    heldout: Mapping[str, Any] | None = None,
    base: Path | None = None,
    check_size: int = 256,
    min_agreement: float = 0.98,
    threads: int = 1,
    progress: bool = True,
    work_dir: Path | None = None,
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Train, export, verify and publish (as serving) one multi-head juror from each task's
    seed ``LabeledSet``; returns the version and each head's held-out metrics.

    The check texts are drawn from every task's held-out set (else its seed set) in turn, so
    every head is verified on texts of its own task as well as the others'.
    """
    from jurystream.models.serving.juror import load_juror

    heldout = dict(heldout or {})
    pools = [list((heldout.get(task) or data).texts) for task, data in seeds.items()]
    per_task = max(1, check_size // len(pools))
    check = [t for pool in pools for t in pool[:per_task]]
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        directory = build_multihead_juror(
            {task: (d.texts, d.labels, d.label_names) for task, d in seeds.items()},
            Path(tmp) / name,
            name=name,
            base=base,
            check_texts=check,
            min_agreement=min_agreement,
            threads=threads,
            progress=progress,
        )
        metrics = head_metrics(load_juror(directory, threads), heldout) if heldout else {}
        first = next(iter(seeds))
        data = {
            task: {
                "seed": d.summary(),
                "heldout": heldout[task].summary() if task in heldout else None,
            }
            for task, d in seeds.items()
        }
        version: str = registry.publish(
            directory,
            name=name,
            extra={"metrics": metrics.get(first, {}), "head_metrics": metrics, "data": data},
        )
    return version, metrics
