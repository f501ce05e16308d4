"""``jurystream bench multitask``: four policies on one stream against four deployments.

The four TweetEval tasks (offensive, hate, emotion, irony) as one stream: the union of their
val posts, every post labeled on all four tasks, each task scored on its own gold (the posts
that came from its val split). The same jurors serve both sides: one multi-head MiniLM juror
(a frozen encoder with one linear head per task, ``onnx-multihead``) and one TF-IDF juror per
task, each task's jury being its head and its TF-IDF juror.

- **Inference cost**, side by side in one run, medians over repeats: the multi-task jury
  (``TaskJuries``: the encoder once per batch for every task) against one task's jury alone,
  both in-process on every core, and end to end through a real worker process on the embedded
  broker (post in → label or review case out).
- **Quality** per task: accuracy and macro-F1 of the final labels (the jury's where it settled,
  the reviewer's where it escalated) and the escalation share, multi-task against the
  single-task deployment of the same task. The reviewer is the oracle (gold labels, always
  reported as such), which answers the same in both: any gap is the pipeline's.
- **Reviewer cost** of the posts escalated on several tasks: one multi-task call (the real
  prompt, per-task demonstrations from each task's train posts) against one single-task call
  per escalated task, in tokens of the real prompts and answers, priced as the reviewer does.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from jurystream.bench.jurors import BENCH_MIN_INT8_AGREEMENT
from jurystream.bench.perf import StreamDriver, cycle, stage
from jurystream.config import Settings, Topic
from jurystream.models.rules.scores import accuracy, macro_f1
from jurystream.models.rules.voting import Decision
from jurystream.models.serving.juror import load_juror
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.parallel import InferencePool, usable_cores
from jurystream.models.serving.tasks import MultiHead, TaskJuries, for_task
from jurystream.models.training.datasets import LabeledSet, load_tweeteval, tweeteval_dir
from jurystream.progress import progress_bar
from jurystream.stream.broker import EmbeddedBroker, ensure_topics
from jurystream.stream.processes import RoleGroup, RoleProcess

TASKS = ("offensive", "hate", "emotion", "irony")
MULTIHEAD = "minilm-mh"
Log = Callable[[str], None]


@dataclass(frozen=True)
class MultitaskConfig:
    tasks: tuple[str, ...] = TASKS
    train_size: int = 2000  # train posts per task the heads and the TF-IDF jurors learn from
    # The mean of the jurors' probabilities against a threshold, as `bench loop` runs: it can be
    # calibrated to any escalation share. Unanimity between a head and a TF-IDF juror escalates
    # every split vote whatever the threshold (over 20% of the posts on every task here).
    policy: str = "threshold"
    # Each task's threshold is calibrated on the stream to escalate at most this share of its
    # posts, as a review budget would set it (escalation needs no label). The frozen-encoder
    # heads give soft probabilities, so one fixed threshold would escalate nearly everything
    # on some tasks and little on others. None: ``threshold`` for every task.
    escalation: float | None = 0.2
    threshold: float = 0.7
    batch_size: int = 32
    repeats: int = 3
    messages: int = 800  # posts per end-to-end run
    knn_k: int = 4  # demonstrations per task in the reviewer's prompts
    timeout_s: float = 600.0
    val_size: int | None = None  # val posts per task in the stream; None: all of them
    base: Path | None = None  # the encoder; None: the offline MiniLM (tests: a tiny one)
    # The int8 bar of every bench juror (bench/jurors.py): the bench measures the served int8
    # jurors' quality directly, so what flipped close calls cost is in its numbers.
    min_int8_agreement: float = BENCH_MIN_INT8_AGREEMENT


@dataclass(frozen=True)
class Stream:
    """The union of the tasks' val posts: each post's text, origin task and gold label."""

    texts: list[str]
    origin: list[str]
    gold: list[str]

    def of(self, task: str) -> list[int]:
        return [i for i, t in enumerate(self.origin) if t == task]


@dataclass
class TaskRow:
    task: str
    posts: int  # posts scored on this task's gold
    multi_accuracy: float
    multi_f1: float
    single_accuracy: float
    single_f1: float
    escalation: float  # share of the stream escalated on this task (the same on both sides)

    @property
    def f1_drop_points(self) -> float:
        return 100 * (self.single_f1 - self.multi_f1)


@dataclass
class MultitaskResult:
    config: dict[str, Any]
    jurors: dict[str, str]
    stream_posts: int
    inference: dict[str, Any] = field(default_factory=dict)
    end_to_end: dict[str, Any] = field(default_factory=dict)
    quality: list[TaskRow] = field(default_factory=list)
    review: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def headline(self) -> dict[str, float]:
        """The issue's three keys, for ``docs/benchmarks/multitask.json``."""
        return {
            "inference_cost_ratio": round(self.end_to_end["cost_ratio"], 3),
            "max_f1_drop_points": round(max(r.f1_drop_points for r in self.quality), 2),
            "reviewer_cost_ratio": round(self.review["cost_ratio"], 3),
        }


def load_stream(
    data_root: Path, tasks: Sequence[str], val_size: int | None = None
) -> tuple[Stream, dict[str, LabeledSet]]:
    """The union of the tasks' val posts (in task order), and each task's val set."""
    vals = {t: load_tweeteval(tweeteval_dir(data_root, t), "val", drop_empty=True) for t in tasks}
    if val_size is not None:
        vals = {t: v.subset(range(min(val_size, len(v)))) for t, v in vals.items()}
    texts: list[str] = []
    origin: list[str] = []
    gold: list[str] = []
    for task, val in vals.items():
        texts += val.texts
        origin += [task] * len(val)
        gold += val.gold()
    return Stream(texts, origin, gold), vals


def ensure_jurors(
    data_root: Path, cfg: MultitaskConfig, cache: Path, log: Log = print
) -> dict[str, Path]:
    """The multi-head juror and one TF-IDF juror per task, trained once on the same train
    sample of each task and reused by later runs."""
    from jurystream.models.training.multihead import build_multihead_juror
    from jurystream.models.training.sklearn_juror import build_sklearn_juror

    root = cache / f"multitask-s{cfg.train_size}"
    train = {
        t: load_tweeteval(tweeteval_dir(data_root, t), "train", drop_empty=True).sample(
            cfg.train_size, seed=0
        )
        for t in cfg.tasks
    }
    dirs = {MULTIHEAD: root / MULTIHEAD, **{f"tfidf-{t}": root / f"tfidf-{t}" for t in cfg.tasks}}
    if not (dirs[MULTIHEAD] / "manifest.json").is_file():
        log(f"training {MULTIHEAD} ({', '.join(cfg.tasks)}) into {root} (reused by later runs)")
        build_multihead_juror(
            {t: (s.texts, s.labels, s.label_names) for t, s in train.items()},
            dirs[MULTIHEAD],
            name=MULTIHEAD,
            base=cfg.base,
            min_agreement=cfg.min_int8_agreement,
            progress=False,
            check_texts=[text for s in train.values() for text in s.texts[:64]],
        )
    for task, sample in train.items():
        target = dirs[f"tfidf-{task}"]
        if not (target / "manifest.json").is_file():
            build_sklearn_juror(
                sample.texts, sample.labels, sample.label_names, target, name=f"tfidf-{task}"
            )
    return dirs


def task_juries(
    dirs: Mapping[str, Path],
    cfg: MultitaskConfig,
    pool: InferencePool | None,
    thresholds: Mapping[str, float],
) -> TaskJuries:
    """Each task's jury: its head of the shared juror and its own TF-IDF juror."""
    shared = load_juror(dirs[MULTIHEAD])
    juries = {
        t: Jury(
            (for_task(shared, t), load_juror(dirs[f"tfidf-{t}"])),
            cfg.policy,
            thresholds[t],
            pool=pool,
        )
        for t in cfg.tasks
    }
    return TaskJuries(juries, pool=pool)


def calibrated_thresholds(
    dirs: Mapping[str, Path], cfg: MultitaskConfig, texts: Sequence[str]
) -> dict[str, float]:
    """Per task, the highest threshold that escalates at most ``cfg.escalation`` of ``texts``
    under ``cfg.policy`` (the probabilities computed once, the policy swept on replays of
    them), rounded down so the task never escalates over its share. Escalation needs no
    label, so ``texts`` can be any posts like those the juries will see; a task its policy
    cannot bring under the share (split votes under ``unanimous``) gets 0."""
    if cfg.escalation is None:
        return dict.fromkeys(cfg.tasks, cfg.threshold)
    from jurystream.models.training.evaluation import (
        calibrate_policy,
        juror_probabilities,
        replay_jurors,
    )

    shared = load_juror(dirs[MULTIHEAD])
    assert isinstance(shared, MultiHead), f"{dirs[MULTIHEAD]} is not a multi-head juror"
    # One encoder pass for every head, in the batches juror_probabilities serves.
    batches = [shared.predict_heads(texts[i : i + 32]) for i in range(0, len(texts), 32)]
    out = {}
    for task in cfg.tasks:
        tfidf = load_juror(dirs[f"tfidf-{task}"])
        head = np.concatenate([b[task] for b in batches])
        probs = np.stack([head, juror_probabilities([tfidf], texts)[:, 0]], axis=1)
        replay = replay_jurors(probs, texts, [for_task(shared, task), tfidf])
        threshold = calibrate_policy(replay, cfg.policy, texts, cfg.escalation)
        out[task] = math.floor(threshold * 1e4) / 1e4  # rounded down: never over the share
    return out


def _timed(decide: Callable[[Sequence[str]], object], texts: Sequence[str], batch: int) -> float:
    """Seconds to decide ``texts`` in batches of ``batch`` (after a warm-up batch)."""
    decide(texts[:batch])
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        decide(texts[i : i + batch])
    return time.perf_counter() - started


def decide_all(juries: TaskJuries, texts: Sequence[str], batch: int) -> list[dict[str, Decision]]:
    out: list[dict[str, Decision]] = []
    for i in range(0, len(texts), batch):
        out += juries.decide(texts[i : i + batch])
    return out


def score_quality(
    stream: Stream,
    multi: Sequence[Mapping[str, Decision]],
    single: Mapping[str, Sequence[Decision]],
    tasks: Sequence[str],
) -> list[TaskRow]:
    """Per task, on its own posts: the final labels (the jury's where it settled, the oracle
    reviewer's where it escalated) of both deployments."""
    rows = []
    for task in tasks:
        idx = stream.of(task)
        gold = [stream.gold[i] for i in idx]

        def final(d: Decision, truth: str) -> str:
            return truth if d.escalated else d.label

        multi_labels = [final(multi[i][task], stream.gold[i]) for i in idx]
        single_labels = [final(single[task][i], stream.gold[i]) for i in idx]
        escalated = sum(d[task].escalated for d in multi) / len(multi)
        rows.append(
            TaskRow(
                task,
                len(idx),
                accuracy(gold, multi_labels),
                macro_f1(gold, multi_labels),
                accuracy(gold, single_labels),
                macro_f1(gold, single_labels),
                escalated,
            )
        )
    return rows


def review_cost(
    settings: Settings,
    stream: Stream,
    decisions: Sequence[Mapping[str, Decision]],
    cfg: MultitaskConfig,
) -> dict[str, Any]:
    """Reviewer cost of the stream's escalated posts: one multi-task call per post against one
    single-task call per escalated task, by how many tasks a post escalated on. Demonstrations
    come from each task's train posts (the stream is the val posts), k per task either way; the
    answers are the gold label on a post's own task and the jury's guess on the others."""
    from jurystream.bench.review_cost import TWEETEVAL_TASKS, post_calls
    from jurystream.models.reviewer.base import Case, TaskQuestion
    from jurystream.models.reviewer.cost import price_for
    from jurystream.models.reviewer.knn import KnnDemonstrations

    specs = {t: TWEETEVAL_TASKS[t] for t in cfg.tasks}
    knn = {
        t: KnnDemonstrations.from_labeled_set(
            load_tweeteval(tweeteval_dir(settings.data_root, t), "train", drop_empty=True).sample(
                settings.reviewer.gold_pool_size, seed=1
            ),
            cfg.knn_k,
        )
        for t in cfg.tasks
    }
    price = price_for(settings.reviewer.prices, settings.reviewer.model)
    by_count: dict[int, list[tuple[float, float]]] = {}
    for i, by_task in enumerate(decisions):
        asked = [t for t, d in by_task.items() if d.escalated]
        if not asked:
            continue
        answers = {t: stream.gold[i] if stream.origin[i] == t else by_task[t].label for t in asked}
        case = Case(
            str(i), stream.texts[i], tasks=tuple(TaskQuestion(t, by_task[t].votes) for t in asked)
        )
        multi, singles = post_calls(case, specs, knn, answers, settings.reviewer.multitask_knn_k)
        by_count.setdefault(len(asked), []).append(
            (multi.cost(price), sum(c.cost(price) for c in singles))
        )

    def row(what: str, counts: Sequence[int]) -> dict[str, Any]:
        costs = [c for n in counts for c in by_count.get(n, [])]
        multi_usd, single_usd = sum(m for m, _ in costs), sum(s for _, s in costs)
        return {
            "what": what,
            "posts": len(costs),
            "multi_calls": len(costs),
            "multi_usd": multi_usd,
            "single_calls": sum(n * len(by_count.get(n, [])) for n in counts),
            "single_usd": single_usd,
            "ratio": multi_usd / single_usd if single_usd else float("nan"),
        }

    several = [n for n in by_count if n >= 2]
    rows = [row(f"escalated on {n} task{'s' * (n > 1)}", [n]) for n in sorted(by_count)]
    rows += [row("escalated on 2 or more", several), row("every reviewed post", list(by_count))]
    return {
        "model": settings.reviewer.model,
        "knn_k": cfg.knn_k,
        "multitask_knn_k": settings.reviewer.multitask_knn_k,
        "rows": rows,
        "cost_ratio": rows[-2]["ratio"],  # the target's: posts with several escalated tasks
    }


def _tasks_toml(
    dirs: Mapping[str, Path],
    cfg: MultitaskConfig,
    tasks: Sequence[str],
    thresholds: Mapping[str, float],
) -> str:
    """The worker's ``[tasks.*]`` settings for ``tasks`` (as a deployment would write them)."""
    from jurystream.bench.review_cost import TWEETEVAL_TASKS

    lines = []
    for task in tasks:
        spec = TWEETEVAL_TASKS[task]
        jurors = [str(dirs[MULTIHEAD]), str(dirs[f"tfidf-{task}"])]
        lines += [
            f"[tasks.{task}]",
            f"labels = {json.dumps(list(spec.labels))}",
            f"jurors = {json.dumps(jurors)}",
            f'policy = "{cfg.policy}"',
            f"threshold = {thresholds[task]}",
            "",
        ]
    return "\n".join(lines)


def _start_worker(
    broker: EmbeddedBroker, workdir: Path, name: str, toml: str, cfg: MultitaskConfig, cores: int
) -> tuple[RoleGroup, RoleProcess]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"{name}.toml"
    config.write_text(toml, encoding="utf-8")
    group = RoleGroup(broker.bootstrap, workdir / name, env={"JURYSTREAM_CONFIG": str(config)})
    asyncio.run(
        ensure_topics(
            broker.bootstrap,
            [group.topic(t) for t in (Topic.POSTS, Topic.LABELS, Topic.REVIEW, Topic.DEAD_LETTERS)],
            Settings().topics.partitions,
        )
    )
    worker = group.start(
        "worker",
        "--batch-size",
        str(cfg.batch_size),
        env={"JURYSTREAM_JURY__INFERENCE_THREADS": str(cores)},
    )
    return group, worker


def end_to_end(
    dirs: Mapping[str, Path],
    cfg: MultitaskConfig,
    thresholds: Mapping[str, float],
    posts: Sequence[str],
    workdir: Path,
    cores: int,
    console: Console,
) -> dict[str, Any]:
    """Posts per second through a worker labeling every task, and through one labeling the
    first task alone, each fed in turn (the other idle), repeats interleaved."""
    with EmbeddedBroker() as broker:
        tomls = {
            "multi": _tasks_toml(dirs, cfg, cfg.tasks, thresholds),
            "single": _tasks_toml(dirs, cfg, cfg.tasks[:1], thresholds),
        }
        sides = {
            name: _start_worker(broker, workdir, name, toml, cfg, cores)
            for name, toml in tomls.items()
        }
        try:
            rates = asyncio.run(_feed(broker.bootstrap, sides, cfg, posts, console))
        except Exception as exc:
            logs = "\n".join(group.logs() for group, _ in sides.values())
            raise RuntimeError(f"{exc}\nworker logs:\n{logs}") from exc
        finally:
            for group, _ in sides.values():
                group.stop_all()
    multi, single = statistics.median(rates["multi"]), statistics.median(rates["single"])
    return {
        "posts_per_run": len(posts),
        "multi_posts_per_s": round(multi, 1),
        "single_posts_per_s": round(single, 1),
        "runs": {k: [round(r, 1) for r in v] for k, v in rates.items()},
        # Time per post, all tasks ÷ one task: the cost of labeling four tasks, end to end.
        "cost_ratio": single / multi,
    }


async def _feed(
    bootstrap: str,
    sides: Mapping[str, tuple[RoleGroup, RoleProcess]],
    cfg: MultitaskConfig,
    posts: Sequence[str],
    console: Console,
) -> dict[str, list[float]]:
    drivers = {}
    for name, (group, worker) in sides.items():
        assert worker.proc is not None
        drivers[name] = StreamDriver(bootstrap, group.topic, worker.proc.pid)
        await drivers[name].start()
    rates: dict[str, list[float]] = {name: [] for name in sides}
    try:
        with progress_bar(console=console) as progress:
            for name, driver in drivers.items():  # start-up is not throughput
                with stage(progress, f"{name} worker warm-up", cfg.batch_size) as advance:
                    await driver.run(posts[: cfg.batch_size], None, cfg.timeout_s, advance)
            for r in range(1, cfg.repeats + 1):
                for name, driver in drivers.items():
                    with stage(progress, f"[{r}/{cfg.repeats}] {name}", len(posts)) as advance:
                        run = await driver.run(posts, None, cfg.timeout_s, advance)
                    rates[name].append(run.sent / run.seconds)
    finally:
        for driver in drivers.values():
            await driver.stop()
    return rates


def inference(
    multi: TaskJuries, texts: Sequence[str], cfg: MultitaskConfig, console: Console
) -> dict[str, Any]:
    """In-process seconds per repeat: every task at once, and each task's jury alone."""
    times: dict[str, list[float]] = {"multi": [], **{t: [] for t in cfg.tasks}}
    with progress_bar(console=console) as progress:
        for r in range(1, cfg.repeats + 1):
            with stage(progress, f"[{r}/{cfg.repeats}] inference", 1 + len(cfg.tasks)) as advance:
                times["multi"].append(_timed(multi.decide, texts, cfg.batch_size))
                advance(1)
                for task, jury in multi.juries.items():
                    times[task].append(_timed(jury.decide, texts, cfg.batch_size))
                    advance(1)
    median = {k: statistics.median(v) for k, v in times.items()}
    one_task = statistics.median(median[t] for t in cfg.tasks)
    return {
        "texts": len(texts),
        "seconds": {k: round(v, 3) for k, v in median.items()},
        "multi_over_one_task": median["multi"] / one_task,
        "multi_over_four_deployments": median["multi"] / sum(median[t] for t in cfg.tasks),
    }


def run_multitask(
    settings: Settings,
    cfg: MultitaskConfig,
    workdir: Path,
    console: Console | None = None,
    log: Log = print,
) -> MultitaskResult:
    console = console or Console(stderr=True)
    began = time.monotonic()
    stream, _ = load_stream(settings.data_root, cfg.tasks, cfg.val_size)
    dirs = ensure_jurors(settings.data_root, cfg, workdir / "jurors", log)
    cores = usable_cores()
    pool = InferencePool(cores)
    log(f"stream: {len(stream.texts)} val posts of {', '.join(cfg.tasks)}; {cores} cores")
    thresholds = calibrated_thresholds(dirs, cfg, stream.texts)
    log(f"thresholds: {thresholds}")
    try:
        multi = task_juries(dirs, cfg, pool, thresholds)
        decisions = decide_all(multi, stream.texts, cfg.batch_size)
        single = {
            t: [
                d
                for i in range(0, len(stream.texts), cfg.batch_size)
                for d in jury.decide(stream.texts[i : i + cfg.batch_size])
            ]
            for t, jury in multi.juries.items()
        }
        result = MultitaskResult(
            config={**asdict(cfg), "thresholds": thresholds},
            jurors={name: load_juror(d).version for name, d in dirs.items()},
            stream_posts=len(stream.texts),
        )
        result.quality = score_quality(stream, decisions, single, cfg.tasks)
        result.inference = inference(multi, stream.texts, cfg, console)
    finally:
        pool.close()
    result.review = review_cost(settings, stream, decisions, cfg)
    posts = cycle(stream.texts, cfg.messages)
    result.end_to_end = end_to_end(dirs, cfg, thresholds, posts, workdir / "e2e", cores, console)
    result.seconds = round(time.monotonic() - began, 1)
    return result


def to_dict(result: MultitaskResult) -> dict[str, Any]:
    data = asdict(result)
    data["quality"] = [{**asdict(r), "f1_drop_points": r.f1_drop_points} for r in result.quality]
    data["headline"] = result.headline()
    return data


def write_json(result: MultitaskResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(result), indent=2, default=str) + "\n")
    return path


def markdown(result: MultitaskResult) -> str:
    """The tables BENCHMARKS.md shows."""
    inf, e2e, rev = result.inference, result.end_to_end, result.review
    lines = [
        f"{result.stream_posts} val posts of {', '.join(result.config['tasks'])}, each labeled on "
        f"every task; jurors {', '.join(f'{k} v{v}' for k, v in result.jurors.items())}; "
        f"policy {result.config['policy']}, thresholds {result.config['thresholds']} "
        f"(each task escalating at most {result.config['escalation']} of the stream); "
        "reviewer: oracle.",
        "",
        "| inference cost (medians of "
        f"{result.config['repeats']}) | all tasks at once | one task alone | ratio |",
        "|---|---:|---:|---:|",
        f"| end to end (worker on the embedded broker), posts/s | {e2e['multi_posts_per_s']} | "
        f"{e2e['single_posts_per_s']} | {e2e['cost_ratio']:.2f}× |",
        f"| in-process jury, s per {inf['texts']} posts | {inf['seconds']['multi']} | "
        f"{statistics.median(inf['seconds'][t] for t in result.config['tasks']):.3f} | "
        f"{inf['multi_over_one_task']:.2f}× |",
        "",
        f"Four single-task deployments would spend {1 / inf['multi_over_four_deployments']:.2f}× "
        "the multi-task jury's inference time.",
        "",
        "| task | posts | escalated | multi-task accuracy / macro-F1 | "
        "single-task accuracy / macro-F1 | drop (F1 points) |",
        "|---|---:|---:|---|---|---:|",
    ]
    for r in result.quality:
        lines.append(
            f"| {r.task} | {r.posts} | {100 * r.escalation:.1f}% | "
            f"{100 * r.multi_accuracy:.1f}% / {r.multi_f1:.3f} | "
            f"{100 * r.single_accuracy:.1f}% / {r.single_f1:.3f} | {r.f1_drop_points:.2f} |"
        )
    lines += [
        "",
        "| review | posts | multi-task: calls / USD | one call per task: calls / USD | ratio |",
        "|---|---:|---|---|---:|",
    ]
    for row in rev["rows"]:
        lines.append(
            f"| {row['what']} | {row['posts']} | {row['multi_calls']} / {row['multi_usd']:.4f} | "
            f"{row['single_calls']} / {row['single_usd']:.4f} | {row['ratio']:.2f}× |"
        )
    lines += ["", "Headline: `" + json.dumps(result.headline()) + "`"]
    return "\n".join(lines)


def plot(result: MultitaskResult, path: Path) -> Path:
    """Per-task macro-F1 of both deployments, and the two cost ratios against their targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = [r.task for r in result.quality]
    x = np.arange(len(tasks))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.bar(x - 0.2, [r.multi_f1 for r in result.quality], 0.4, label="four tasks, one stream")
    ax1.bar(x + 0.2, [r.single_f1 for r in result.quality], 0.4, label="single-task deployment")
    ax1.set(xticks=x, xticklabels=tasks, ylabel="macro-F1 (jury + oracle review)")
    ax1.set_title("Quality per task")
    ax1.legend(fontsize=8)
    headline = result.headline()
    bars = {
        "inference\n(4 tasks ÷ 1)": (headline["inference_cost_ratio"], 1.6),
        "review\n(1 call ÷ 1 per task)": (headline["reviewer_cost_ratio"], 0.5),
    }
    ax2.bar(range(len(bars)), [v for v, _ in bars.values()], 0.5, color=["C2", "C3"])
    for i, (_, target) in enumerate(bars.values()):
        ax2.hlines(target, i - 0.3, i + 0.3, colors="k", linestyles="--")
    ax2.set(xticks=range(len(bars)), xticklabels=list(bars), ylabel="cost ratio (target dashed)")
    ax2.set_title("Cost")
    fig.suptitle("jurystream bench multitask")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
