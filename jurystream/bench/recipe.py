"""``jurystream bench recipe``: which trainer settings pay for what the reviewer labeled?

The trainer refines each juror with ``TrainerSettings`` (epochs, learning rate, replay ratio);
this bench chooses them by measurement. It rebuilds what a trainer holds after the loop has run
a while: the bench's bootstrap jury (seed labels, ``bench/jurors.py``) scores a feed of unseen
train posts; the posts it would escalate at a threshold calibrated to ``escalation`` on the gate
half of val are reviewed by the oracle (hard samples), and ``audit_rate`` of the rest too (audit
samples, chosen by the worker's own hash). Each recipe then refines one MiniLM juror on that
data exactly as a round does (``RoundRunner``: new examples plus ``replay_sample`` of the seed
set, ``continual.training_set`` weights with the reliability prior, ``train_transformer`` from
the serving checkpoint with the round id as seed), once per training seed, and is scored on the
score half of val, which neither the bootstrap nor any recipe nor the threshold saw.

Recipes vary one setting at a time around the trainer's default, so each difference has one
cause; the seeds give the noise a difference must exceed (``verdict``). Scores are from the
torch checkpoint (fp32): the int8 export a round adds changes every recipe alike. One round from
the bootstrap state: the replay ratio's effect over many rounds (all history vs a bounded
sample as history grows) shows in ``bench loop``, not here.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from jurystream.bench.jurors import BENCH_EPOCHS, BENCH_LEARNING_RATE, bench_plan, ensure_jurors
from jurystream.bench.loop import seed_and_feed, split_halves
from jurystream.config import Settings, TrainerSettings
from jurystream.models.rules.audit import is_audited
from jurystream.models.rules.continual import Example, replay_sample, training_set
from jurystream.models.rules.scores import accuracy, macro_f1
from jurystream.models.serving.juror import load_juror
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.registry import Registry
from jurystream.models.training.datasets import LabeledSet, tweeteval_dir
from jurystream.models.training.evaluation import (
    calibrate_policy,
    juror_probabilities,
    replay_jurors,
)
from jurystream.models.training.training import TrainConfig, base_model_path, train_transformer
from jurystream.progress import progress_bar

Log = Callable[[str], None]
BOOTSTRAP = "bootstrap (no refinement)"


@dataclass(frozen=True)
class Recipe:
    """One way to refine a juror: where from, how long, how fast, how much to replay."""

    start: Literal["serving", "base"]  # the juror's serving checkpoint, or the MiniLM encoder
    epochs: int
    learning_rate: float
    replay_ratio: float | None  # earlier examples per new one; None: all of them

    @property
    def name(self) -> str:
        replay = "all" if self.replay_ratio is None else f"{self.replay_ratio:g}"
        start = "" if self.start == "serving" else "from base, "
        return f"{start}{self.epochs} ep, lr {self.learning_rate:.0e}, replay {replay}"


def default_recipe(trainer: TrainerSettings) -> Recipe:
    """What a trainer round does with the configured settings."""
    return Recipe("serving", trainer.epochs, trainer.learning_rate, trainer.replay_ratio)


LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)  # half-decade steps the grid moves along


def neighbours(value: float, ladder: Sequence[float]) -> tuple[float, ...]:
    """The ladder's values just below and just above ``value`` (one of them at the ends)."""
    below = [x for x in ladder if x < value * (1 - 1e-9)]
    above = [x for x in ladder if x > value * (1 + 1e-9)]
    return tuple([*below[-1:], *above[:1]])


def one_factor_grid(
    default: Recipe,
    epochs: Sequence[int] | None = None,
    learning_rates: Sequence[float] | None = None,
    replay_ratios: Sequence[float | None] = (0.0, 1.0),
    from_base: bool = True,
) -> tuple[Recipe, ...]:
    """The default first, then each setting changed alone (values equal to the default drop).

    Epochs and learning rates default to the default's neighbours (one epoch less and more;
    the next rate down and up ``LEARNING_RATES``), so the grid follows a changed default.
    ``from_base`` adds a fresh start from the encoder with the bench bootstrap's own recipe
    (4 epochs at 1e-4 on seed + reviewed data): is continuing from the serving juror worth it?
    """
    if epochs is None:
        epochs = [e for e in (default.epochs - 1, default.epochs + 1) if e >= 1]
    if learning_rates is None:
        learning_rates = neighbours(default.learning_rate, LEARNING_RATES)
    out = [default]
    for e in epochs:
        out.append(Recipe(default.start, e, default.learning_rate, default.replay_ratio))
    for lr in learning_rates:
        out.append(Recipe(default.start, default.epochs, lr, default.replay_ratio))
    for r in replay_ratios:
        out.append(Recipe(default.start, default.epochs, default.learning_rate, r))
    if from_base:
        out.append(Recipe("base", BENCH_EPOCHS, BENCH_LEARNING_RATE, default.replay_ratio))
    unique: list[Recipe] = []
    for recipe in out:
        if recipe not in unique:
            unique.append(recipe)
    return tuple(unique)


@dataclass(frozen=True)
class RecipeConfig:
    task: str = "offensive"
    seed_size: int = 400
    feed_size: int = 1000
    escalation: float = 0.25  # share of the gate half escalated at the calibrated threshold
    audit_rate: float = 0.02
    policy: str = "threshold"  # the jury's voting policy (``bench loop``'s default)
    seeds: tuple[int, ...] = (1, 2)  # training seeds (a round uses its round id)
    score_size: int | None = None  # posts of val's score half scored on; None: all of them
    juror: str = "minilm-0"
    transformers: int = 2  # the bench jury the feed is escalated by (plus TF-IDF)
    recipes: tuple[Recipe, ...] = ()  # empty: ``one_factor_grid`` around the trainer default


# --- pure pieces ----------------------------------------------------------------------------


def reviewed_examples(
    ids: Sequence[str],
    texts: Sequence[str],
    labels: Sequence[str],
    escalated: Sequence[bool],
    audit_rate: float,
    source: str = "oracle",
) -> list[Example]:
    """What the trainer stores from the reviewer: every escalated post as a hard sample, and
    the accepted posts the worker audits (``is_audited`` on the post id) as audit samples."""
    out = []
    for post_id, text, label, esc in zip(ids, texts, labels, escalated, strict=True):
        if esc:
            out.append(Example(post_id, text, label, "hard", source))
        elif is_audited(post_id, audit_rate):
            out.append(Example(post_id, text, label, "audit", source))
    return out


def seed_examples(seed: LabeledSet) -> list[Example]:
    """The seed set as the trainer's store holds it (``TrainingStore.add_seed``)."""
    return [
        Example(f"seed:{i}", text, seed.label_names[y], "seed", "seed")
        for i, (text, y) in enumerate(zip(seed.texts, seed.labels, strict=True))
    ]


def round_examples(
    new: Sequence[Example], earlier: Sequence[Example], replay_ratio: float | None, seed: int
) -> list[Example]:
    """New examples plus the replay a round adds (``RoundRunner.run``)."""
    if replay_ratio is None:
        return [*new, *earlier]
    return [*new, *replay_sample(earlier, len(new), replay_ratio, seed)]


def summarize(runs: Sequence[dict[str, Any]], default: str) -> list[dict[str, Any]]:
    """One row per recipe (in first-seen order): median and spread (max − min) over seeds of
    macro-F1 and accuracy, and the median's difference from ``default`` against the noise."""
    by_recipe: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_recipe.setdefault(run["recipe"], []).append(run)
    rows = []
    for name, group in by_recipe.items():
        f1 = [r["macro_f1"] for r in group]
        acc = [r["accuracy"] for r in group]
        rows.append(
            {
                "recipe": name,
                **{k: group[0][k] for k in ("start", "epochs", "learning_rate", "replay_ratio")},
                "examples": group[0]["examples"],
                "seeds": len(group),
                "macro_f1": f1,
                "macro_f1_median": statistics.median(f1),
                "macro_f1_spread": max(f1) - min(f1),
                "accuracy_median": statistics.median(acc),
                "accuracy_spread": max(acc) - min(acc),
                "seconds_median": statistics.median(r["seconds"] for r in group),
            }
        )
    if default not in by_recipe:
        raise ValueError(f"the default recipe {default!r} was not measured")
    base = next(r for r in rows if r["recipe"] == default)
    for row in rows:
        row["delta_vs_default"] = row["macro_f1_median"] - base["macro_f1_median"]
        noise = max(row["macro_f1_spread"], base["macro_f1_spread"])
        row["beyond_seed_spread"] = (
            row["recipe"] != default and abs(row["delta_vs_default"]) > noise
        )
    return rows


def verdict(rows: Sequence[dict[str, Any]], default: str) -> dict[str, Any]:
    """The best recipe that beats the default by more than the seed spread, or the default.

    Only differences larger than the seeds' own spread count: with two seeds, anything
    smaller may be the seed, not the setting.
    """
    better = [r for r in rows if r["beyond_seed_spread"] and r["delta_vs_default"] > 0]
    best = max(better, key=lambda r: r["macro_f1_median"]) if better else None
    return {
        "default": default,
        "change": best is not None,
        "best": best["recipe"] if best else default,
        "delta_points": round(100 * best["delta_vs_default"], 2) if best else 0.0,
    }


# --- the measurement ------------------------------------------------------------------------


def _predict(checkpoint: Path, texts: Sequence[str], threads: int, max_length: int) -> list[int]:
    """Label ids the torch checkpoint picks (fp32, the weights a round exports)."""
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
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            out += model(**batch).logits.argmax(dim=-1).tolist()
    return out


@dataclass
class RecipeResult:
    config: dict[str, Any]
    default: str
    threshold: float
    escalated: int
    reviewed: int
    audits: int
    score_examples: int
    bootstrap: dict[str, float]
    runs: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    verdict: dict[str, Any]
    seconds: float
    command: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> dict[str, Any]:
        """What docs/benchmarks keeps: the setup, the table and the decision."""
        keep = (
            "recipe",
            "epochs",
            "learning_rate",
            "replay_ratio",
            "start",
            "examples",
            "macro_f1",
            "macro_f1_median",
            "macro_f1_spread",
            "accuracy_median",
            "delta_vs_default",
            "beyond_seed_spread",
            "seconds_median",
        )
        return {
            "command": self.command,
            "config": self.config,
            "reviewed": self.reviewed,
            "escalated": self.escalated,
            "audits": self.audits,
            "score_examples": self.score_examples,
            "bootstrap": {k: _round(v) for k, v in self.bootstrap.items()},
            "rows": [{k: _round(r[k]) for k in keep} for r in self.rows],
            "verdict": self.verdict,
        }


def _round(x: Any) -> Any:
    """Four significant digits (a learning rate of 3e-5 must not round to 0)."""
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


def run_recipes(
    settings: Settings,
    cfg: RecipeConfig,
    workdir: Path,
    *,
    log: Log = print,
    progress: bool = True,
) -> RecipeResult:
    """Each recipe × seed refines ``cfg.juror`` on the same reviewed data; scored on val."""
    started = time.perf_counter()
    directory = tweeteval_dir(settings.data_root, cfg.task)
    # the loop bench's seed set and feed order
    _, val, seed, feed = seed_and_feed(directory, cfg.seed_size, cfg.feed_size)
    gate_idx, score_idx = split_halves(len(val))
    gate, score = val.subset(gate_idx), val.subset(score_idx[: cfg.score_size])

    cache = workdir / "jurors" / f"{directory.name}-s{cfg.seed_size}"
    dirs = ensure_jurors(cache, seed, val, bench_plan(settings, cfg.transformers), log=log)
    if cfg.juror not in dirs:
        raise ValueError(f"no juror {cfg.juror!r} in the bench jury: {sorted(dirs)}")
    jurors = [load_juror(d) for d in dirs.values()]
    policy = cfg.policy
    gate_jurors = replay_jurors(juror_probabilities(jurors, gate.texts), gate.texts, jurors)
    threshold = calibrate_policy(gate_jurors, policy, gate.texts, cfg.escalation)
    log(f"threshold {threshold:.3f} ({policy}); the jury scores {len(feed)} feed posts")
    feed_jurors = replay_jurors(juror_probabilities(jurors, feed.texts), feed.texts, jurors)
    decisions = Jury(feed_jurors, policy, threshold).decide(feed.texts)
    escalated = [d.escalated for d in decisions]
    ids = [f"{cfg.task}-{i}" for i in range(len(feed))]
    new = reviewed_examples(ids, feed.texts, feed.gold(), escalated, cfg.audit_rate)
    earlier = seed_examples(seed)

    registry = Registry(cache)
    manifest = registry.manifest(cfg.juror)
    serving = registry.checkpoint_dir(cfg.juror)
    labels = list(manifest.labels)
    score = score.with_label_order(labels, "val vs juror")
    truth = list(score.labels)
    trainer = settings.trainer
    threads = trainer.threads
    max_length = manifest.max_length
    pred = _predict(serving, score.texts, threads, max_length)
    bootstrap = {"accuracy": accuracy(truth, pred), "macro_f1": macro_f1(truth, pred)}
    log(f"{len(new)} reviewed posts; bootstrap {cfg.juror} macro-F1 {bootstrap['macro_f1']:.3f}")

    default = default_recipe(trainer)
    recipes = cfg.recipes or one_factor_grid(default)
    if default not in recipes:
        recipes = (default, *recipes)
    runs: list[dict[str, Any]] = []
    scratch = workdir / f"recipe-{cfg.task}-checkpoints"
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task("recipes", total=len(recipes) * len(cfg.seeds))
        for recipe in recipes:
            for s in cfg.seeds:
                bar.update(task, description=f"{recipe.name}, seed {s}")
                examples = round_examples(new, earlier, recipe.replay_ratio, s)
                data = training_set(examples, labels, {}, {}, trainer.reliability_prior)
                base = serving if recipe.start == "serving" else base_model_path()
                t0 = time.perf_counter()
                trained = train_transformer(
                    base,
                    data.texts,
                    data.labels,
                    labels,
                    scratch / "candidate",
                    TrainConfig(
                        epochs=recipe.epochs,
                        batch_size=trainer.batch_size,
                        learning_rate=recipe.learning_rate,
                        max_length=max_length,
                        seed=s,
                        threads=threads,
                    ),
                    weights=data.weights,
                    progress=False,
                )
                seconds = time.perf_counter() - t0
                pred = _predict(trained.checkpoint, score.texts, threads, max_length)
                shutil.rmtree(scratch, ignore_errors=True)  # ~90 MB a checkpoint
                run = {
                    "recipe": recipe.name,
                    **asdict(recipe),
                    "seed": s,
                    "examples": len(data.texts),
                    "by_origin": data.summary["by_origin"],
                    "seconds": round(seconds, 1),
                    "accuracy": accuracy(truth, pred),
                    "macro_f1": macro_f1(truth, pred),
                }
                runs.append(run)
                log(f"{recipe.name}, seed {s}: macro-F1 {run['macro_f1']:.3f} ({seconds:.0f} s)")
                bar.advance(task)
    rows = summarize(runs, default.name)
    return RecipeResult(
        config={**asdict(cfg), "recipes": [r.name for r in recipes]},
        default=default.name,
        threshold=threshold,
        escalated=sum(escalated),
        reviewed=len(new),
        audits=sum(e.origin == "audit" for e in new),
        score_examples=len(score),
        bootstrap=bootstrap,
        runs=runs,
        rows=rows,
        verdict=verdict(rows, default.name),
        seconds=round(time.perf_counter() - started, 1),
    )


# --- reporting ------------------------------------------------------------------------------


def markdown(result: RecipeResult) -> str:
    c = result.config
    lines = [
        f"{c['task']}, juror {c['juror']} bootstrapped from {c['seed_size']} labels; "
        f"{result.reviewed} reviewed posts ({result.escalated} escalations at threshold "
        f"{result.threshold:.3f} over {c['feed_size']} posts, {result.audits} audits) plus the "
        f"seed set as replay pool; scored on {result.score_examples} val posts nothing trained "
        f"or calibrated on; seeds {', '.join(map(str, c['seeds']))}. Bootstrap {c['juror']}: "
        f"macro-F1 {result.bootstrap['macro_f1']:.3f}, accuracy "
        f"{100 * result.bootstrap['accuracy']:.1f}%.",
        "",
        "| recipe | examples | train s | accuracy | macro-F1 median ± spread | per seed | "
        "vs default (points) |",
        "|---|---:|---:|---:|---:|---|---:|",
        f"| {BOOTSTRAP} | {c['seed_size']} | 0 | {100 * result.bootstrap['accuracy']:.1f}% | "
        f"{result.bootstrap['macro_f1']:.3f} | | |",
    ]
    for r in result.rows:
        mark = " (default)" if r["recipe"] == result.default else ""
        beyond = " *" if r["beyond_seed_spread"] else ""
        lines.append(
            f"| {r['recipe']}{mark} | {r['examples']} | {r['seconds_median']:.0f} | "
            f"{100 * r['accuracy_median']:.1f}% | {r['macro_f1_median']:.3f} ± "
            f"{r['macro_f1_spread']:.3f} | {', '.join(f'{x:.3f}' for x in r['macro_f1'])} | "
            f"{100 * r['delta_vs_default']:+.1f}{beyond} |"
        )
    v = result.verdict
    lines += [
        "",
        "\\* beyond the seed spread (the larger of the two recipes' max − min over seeds).",
        "",
        (
            f"Verdict: **{v['best']}** beats the default by {v['delta_points']:+.1f} points."
            if v["change"]
            else "Verdict: no recipe beats the default by more than the seed spread."
        ),
    ]
    return "\n".join(lines)


def plot(result: RecipeResult, path: Path) -> Path:
    """Macro-F1 per recipe: the median as a bar, each seed as a dot, the bootstrap as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.rows
    y = list(range(len(rows)))[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.6))
    colors = ["tab:orange" if r["recipe"] == result.default else "tab:blue" for r in rows]
    medians = [r["macro_f1_median"] for r in rows]
    ax.barh(y, medians, color=colors, alpha=0.6)
    for yi, r in zip(y, rows, strict=True):
        ax.plot(r["macro_f1"], [yi] * len(r["macro_f1"]), "k|", ms=12, mew=2)
        ax.plot([min(r["macro_f1"]), max(r["macro_f1"])], [yi, yi], "k-", lw=1)
    ax.axvline(result.bootstrap["macro_f1"], color="grey", ls="--", lw=1, label="bootstrap")
    ax.set_yticks(y, [r["recipe"] for r in rows], fontsize=8)
    low = min([*(min(r["macro_f1"]) for r in rows), result.bootstrap["macro_f1"]])
    ax.set_xlim(max(0.0, low - 0.05), min(1.0, max(max(r["macro_f1"]) for r in rows) + 0.03))
    ax.set_xlabel("macro-F1 on the val score half (bar: median; ticks: seeds)")
    c = result.config
    ax.set_title(
        f"jurystream bench recipe: {c['task']}, {result.reviewed} reviewed posts, "
        f"default in orange",
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
