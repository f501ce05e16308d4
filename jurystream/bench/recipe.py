"""``jurystream bench recipe``: which way of refining a juror pays for what the reviewer labeled?

The trainer's settings (start from the serving checkpoint or from the base encoder, epochs,
learning rate, how much earlier data to replay) are chosen here by measurement, not by taste.
The bench rebuilds what a trainer holds after the loop has run a while: the bench's bootstrap
jury (seed labels) scores a feed of unseen train posts; the posts it would escalate at a
threshold calibrated to ``escalation`` on the gate half of val are reviewed by the oracle
(hard samples), and ``audit_rate`` of the rest too (audit samples). Each recipe then refines
one MiniLM juror on that data, exactly as a round does (``continual.training_set`` weights,
``training.train_transformer``), and is scored on the score half of val, which neither the
bootstrap nor any recipe saw. Scores are from the torch checkpoint (fp32): the int8 export a
round adds changes every recipe alike. One round from the bootstrap state: the replay ratio's
effect over many rounds (all history vs a sample) shows in ``bench loop``, not here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jurystream.bench.jurors import bench_plan, ensure_jurors
from jurystream.config import Settings
from jurystream.models.audit import is_audited
from jurystream.models.continual import Example, replay_sample, training_set
from jurystream.models.datasets import LabeledSet, load_tweeteval, tweeteval_dir
from jurystream.models.evaluation import (
    accuracy,
    calibrate_policy,
    juror_probabilities,
    macro_f1,
    replay_jurors,
)
from jurystream.models.juror import load_juror
from jurystream.models.jury import Jury
from jurystream.models.registry import Registry
from jurystream.models.training import TrainConfig, base_model_path, train_transformer

Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    name: str
    start: str  # "serving": continue from the juror's checkpoint; "base": the MiniLM encoder
    epochs: int
    learning_rate: float
    replay_ratio: float | None  # earlier examples per new one; None: all of them


RECIPES: tuple[Recipe, ...] = (
    Recipe("serving, 2 ep, 3e-5, replay all", "serving", 2, 3e-5, None),
    Recipe("serving, 3 ep, 5e-5, replay all", "serving", 3, 5e-5, None),
    Recipe("serving, 2 ep, 3e-5, no replay", "serving", 2, 3e-5, 0.0),
    Recipe("base, 4 ep, 1e-4, replay all", "base", 4, 1e-4, None),
)


def _predict(checkpoint: Path, texts: Sequence[str], threads: int) -> list[int]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint)).eval()
    out: list[int] = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            batch = tokenizer(
                list(texts[i : i + 64]),
                truncation=True,
                max_length=128,
                padding=True,
                return_tensors="pt",
            )
            out += model(**batch).logits.argmax(dim=-1).tolist()
    return out


def reviewed_examples(
    feed: LabeledSet, escalated: Sequence[bool], audit_rate: float, prefix: str
) -> list[Example]:
    """What the oracle reviewer would have answered: every escalation and the audited rest."""
    out = []
    for i, (text, label, esc) in enumerate(zip(feed.texts, feed.gold(), escalated, strict=True)):
        post_id = f"{prefix}-{i}"
        if esc:
            out.append(Example(post_id, text, label, "hard", "oracle"))
        elif is_audited(post_id, audit_rate):
            out.append(Example(post_id, text, label, "audit", "oracle"))
    return out


def run_recipes(
    settings: Settings,
    workdir: Path,
    *,
    task: str = "offensive",
    seed_size: int = 400,
    feed_size: int = 4000,
    escalation: float = 0.25,
    audit_rate: float = 0.02,
    recipes: Sequence[Recipe] = RECIPES,
    juror: str = "minilm-0",
    log: Log = print,
) -> dict[str, Any]:
    directory = tweeteval_dir(settings.data_root, task)
    train = load_tweeteval(directory, "train", drop_empty=True)
    val = load_tweeteval(directory, "val", drop_empty=True)
    seed = train.sample(seed_size, seed=0)
    seen = set(seed.texts)
    rest = [i for i in range(len(train)) if train.texts[i] not in seen]
    random.Random(1).shuffle(rest)  # the loop bench's feed order
    feed = train.subset(rest[:feed_size])
    order = list(range(len(val)))
    random.Random(7).shuffle(order)
    gate, score = (
        val.subset(sorted(order[: len(val) // 2])),
        val.subset(sorted(order[len(val) // 2 :])),
    )

    cache = workdir / "jurors" / f"{directory.name}-s{seed_size}"
    dirs = ensure_jurors(cache, seed, val, bench_plan(settings, 2), log=log)
    jurors = [load_juror(d) for d in dirs.values()]
    policy = settings.jury.policy
    threshold = calibrate_policy(
        replay_jurors(juror_probabilities(jurors, gate.texts), gate.texts, jurors),
        policy,
        gate.texts,
        escalation,
    )
    probs = juror_probabilities(jurors, feed.texts)
    decisions = Jury(replay_jurors(probs, feed.texts, jurors), policy, threshold).decide(feed.texts)
    reviewed = reviewed_examples(feed, [d.escalated for d in decisions], audit_rate, task)
    seed_examples = [
        Example(f"seed-{i}", t, y, "seed", "gold")
        for i, (t, y) in enumerate(zip(seed.texts, seed.gold(), strict=True))
    ]
    registry = Registry(cache)
    labels = list(train.label_names)
    truth = list(score.labels)
    threads = max(1, settings.trainer.threads)
    serving = _predict(registry.checkpoint_dir(juror), score.texts, threads)
    rows: list[dict[str, Any]] = [
        {
            "recipe": "bootstrap (no refinement)",
            "examples": seed_size,
            "seconds": 0.0,
            "accuracy": accuracy(truth, serving),
            "macro_f1": macro_f1(truth, serving, len(labels)),
        }
    ]
    for k, recipe in enumerate(recipes):
        replay = (
            seed_examples
            if recipe.replay_ratio is None
            else replay_sample(seed_examples, len(reviewed), recipe.replay_ratio, seed=k)
        )
        data = training_set(reviewed + replay, labels, {}, {}, settings.trainer.reliability_prior)
        base = registry.checkpoint_dir(juror) if recipe.start == "serving" else base_model_path()
        started = time.perf_counter()
        trained = train_transformer(
            base,
            data.texts,
            data.labels,
            labels,
            workdir / "recipe" / f"r{k}",
            TrainConfig(
                epochs=recipe.epochs,
                batch_size=settings.trainer.batch_size,
                learning_rate=recipe.learning_rate,
                seed=k,
                threads=threads,
            ),
            weights=data.weights,
            description=recipe.name,
        )
        seconds = time.perf_counter() - started
        pred = _predict(trained.checkpoint, score.texts, threads)
        rows.append(
            {
                "recipe": recipe.name,
                **asdict(recipe),
                "examples": len(data.texts),
                "seconds": round(seconds, 1),
                "accuracy": accuracy(truth, pred),
                "macro_f1": macro_f1(truth, pred, len(labels)),
            }
        )
        log(f"{recipe.name}: macro-F1 {rows[-1]['macro_f1']:.3f} ({seconds:.0f} s)")
    return {
        "task": task,
        "juror": juror,
        "seed_size": seed_size,
        "feed_size": feed_size,
        "threshold": threshold,
        "escalated": int(np.sum([d.escalated for d in decisions])),
        "reviewed": len(reviewed),
        "audits": sum(e.origin == "audit" for e in reviewed),
        "score_examples": len(score),
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    base = result["rows"][0]["macro_f1"]
    lines = [
        f"{result['task']}, juror {result['juror']} bootstrapped from {result['seed_size']} "
        f"labels; {result['reviewed']} reviewed posts ({result['escalated']} escalations at "
        f"threshold {result['threshold']:.3f} over {result['feed_size']} posts, "
        f"{result['audits']} audits); scored on {result['score_examples']} val posts nothing "
        "trained or gated on.",
        "",
        "| recipe | examples | train s | accuracy | macro-F1 | Δ macro-F1 (points) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['recipe']} | {r['examples']} | {r['seconds']:.0f} | {100 * r['accuracy']:.1f}% "
            f"| {r['macro_f1']:.3f} | {100 * (r['macro_f1'] - base):+.1f} |"
        )
    return "\n".join(lines)
