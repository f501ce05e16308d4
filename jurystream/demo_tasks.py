"""`jurystream demo --tasks`: what the multi-task demo needs before its roles start.

One stream labeled on several TweetEval tasks at once (offensive, hate, emotion, irony). The
jurors are those of `bench multitask` (one multi-head MiniLM juror, a head per task, and one
TF-IDF juror per task, trained once on a train sample of each task and cached), published to
the run's registry so the trainer's rounds can refine them. The feed interleaves train posts
the jurors did not learn from, task by task; each post's gold label is known for the task it
came from only.

Each task's jury (its head and its TF-IDF juror) starts at its own threshold, calibrated as a
review budget would set it: the highest that escalates at most the review share of the tasks'
held-out val posts, which the demo never streams (``start_thresholds``).

The reviewer is scripted, and says so: on a post's own task it answers the gold label; on the
other tasks there is no gold, so it answers the multi-head juror's own label, computed once
here before the feed. Its accuracy on those tasks is therefore not measured by the demo.

The tasks reach every role as ``JURYSTREAM_TASKS`` (JSON) in their environment: it takes
precedence over the ``[tasks.*]`` of the user's config file, whose other settings still apply.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jurystream.bench.jurors import BENCH_MIN_INT8_AGREEMENT
from jurystream.bench.multitask import (
    MULTIHEAD,
    MultitaskConfig,
    calibrated_thresholds,
    ensure_jurors,
)
from jurystream.bench.review_cost import TWEETEVAL_TASKS
from jurystream.models.serving.juror import load_juror, read_manifest
from jurystream.models.serving.multihead import OnnxMultiHeadJuror
from jurystream.models.serving.registry import Registry
from jurystream.models.training.datasets import LabeledSet, load_tweeteval, tweeteval_dir
from jurystream.stream.feed import FeedItem
from jurystream.stream.records import Post

Log = Callable[[str], None]


class TasksError(ValueError):
    """The ``--tasks`` value or the data behind it cannot run; says what to do instead."""


def parse_tasks(value: str, data_root: Path) -> tuple[str, ...]:
    """``offensive,hate`` as the tasks to run, each known and present under the data root."""
    tasks = tuple(dict.fromkeys(t.strip() for t in value.split(",") if t.strip()))
    unknown = [t for t in tasks if t not in TWEETEVAL_TASKS]
    if not tasks or unknown:
        raise TasksError(
            f"unknown task(s) {', '.join(unknown) or repr(value)}; choose among "
            f"{', '.join(TWEETEVAL_TASKS)}, comma-separated"
        )
    missing = [t for t in tasks if not (tweeteval_dir(data_root, t) / "train_text.txt").is_file()]
    if missing:
        raise TasksError(
            f"no TweetEval data for {', '.join(missing)} under {data_root / 'tweeteval'}; set "
            "JURYSTREAM_DATA_ROOT to the folder holding tweeteval/"
        )
    return tasks


@dataclass(frozen=True)
class TaskData:
    """One task's train sample the jurors learn from, the rest of its train split (what the
    demo streams) and its val split (the trainer's held-out gold)."""

    seed: LabeledSet
    rest: LabeledSet
    val: LabeledSet


def task_data(data_root: Path, task: str, train_size: int) -> TaskData:
    """The same train sample ``ensure_jurors`` trains on (seed 0), and the train posts outside
    it."""
    directory = tweeteval_dir(data_root, task)
    train = load_tweeteval(directory, "train", drop_empty=True)
    seed = train.sample(train_size, seed=0)
    seen = set(seed.texts)
    rest = train.subset([i for i, t in enumerate(train.texts) if t not in seen])
    return TaskData(seed, rest, load_tweeteval(directory, "val", drop_empty=True))


def interleave(rests: Mapping[str, LabeledSet], count: int) -> list[tuple[str, str, str]]:
    """``count`` posts as (task, text, gold), taken in turn from each task's stream (a task
    that runs out drops out)."""
    streams = {t: list(zip(s.texts, s.gold(), strict=True)) for t, s in rests.items()}
    out: list[tuple[str, str, str]] = []
    for i in range(max(map(len, streams.values()), default=0)):
        out += [(t, *posts[i]) for t, posts in streams.items() if i < len(posts)]
    return out[:count]


@dataclass(frozen=True)
class TaskFeed:
    """The feed, each post's origin task, and the scripted reviewer's answers per text."""

    items: list[FeedItem]
    origin: dict[str, str]  # post id -> the task its gold label is for
    answers: dict[str, dict[str, str]]  # text -> {task: label}


def task_feed(
    posts: Sequence[tuple[str, str, str]], juror_labels: Sequence[Mapping[str, str]]
) -> TaskFeed:
    """Posts carrying the scripted answers as ``meta.gold`` (what the oracle tier reads), so
    both demo reviewers answer the same: the gold label on the post's own task, the
    multi-head juror's label on the others."""
    items: list[FeedItem] = []
    origin: dict[str, str] = {}
    answers: dict[str, dict[str, str]] = {}
    for i, ((task, text, gold), guessed) in enumerate(zip(posts, juror_labels, strict=True)):
        post_id = f"demo-{task}-{i:06d}"
        answer = {**guessed, task: gold}
        # A text streamed for two tasks (rare): both golds win over the juror's guesses.
        answer = {**answer, **{t: g for t, g in answers.get(text, {}).items() if t != task}}
        answers[text] = answer
        value = Post.of(post_id, text, meta={"gold": answer}).to_bytes()
        items.append(FeedItem(post_id.encode(), value, gold))
        origin[post_id] = task
    return TaskFeed(items, origin, answers)


def head_labels(
    juror_dir: Path, tasks: Sequence[str], texts: Sequence[str]
) -> list[dict[str, str]]:
    """The multi-head juror's label on every task for each text (one encoder pass per chunk)."""
    juror = load_juror(juror_dir)
    assert isinstance(juror, OnnxMultiHeadJuror), f"{juror_dir} is not a multi-head juror"
    probs = juror.predict_heads(list(texts), tasks=tasks)
    out: list[dict[str, str]] = [{} for _ in texts]
    for task, p in probs.items():
        labels = juror.heads[task]
        for row, k in zip(out, p.argmax(axis=1), strict=True):
            row[task] = labels[int(k)]
    return out


def _write_jsonl(path: Path, data: LabeledSet) -> str:
    with path.open("w", encoding="utf-8") as fh:
        for text, label in zip(data.texts, data.gold(), strict=True):
            fh.write(json.dumps({"text": text, "label": label}) + "\n")
    return str(path)


def gold_samples(data: Mapping[str, TaskData], gold_size: int) -> dict[str, LabeledSet]:
    """Each task's held-out gold: a val sample, never streamed. The trainer's gate and
    controller judge on it, and the starting thresholds are calibrated on its texts."""
    return {t: d.val.sample(gold_size, seed=0) for t, d in data.items()}


def tasks_settings(
    tasks: Sequence[str],
    data: Mapping[str, TaskData],
    gold: Mapping[str, LabeledSet],
    workdir: Path,
    policy: str,
    thresholds: Mapping[str, float],
) -> dict[str, Any]:
    """``Settings.tasks`` as JSON: each task's labels, reviewer instruction and descriptions,
    its jury (the multi-head juror and its TF-IDF juror, by registry name, with its own
    starting threshold) and the trainer's seed set (the sample the jurors learned from) and
    held-out gold."""
    out: dict[str, Any] = {}
    for task in tasks:
        spec = TWEETEVAL_TASKS[task]
        directory = workdir / "tasks"
        directory.mkdir(parents=True, exist_ok=True)
        out[task] = {
            "labels": list(spec.labels),
            "descriptions": dict(spec.descriptions),
            "instruction": spec.instruction,
            "jurors": [MULTIHEAD, f"tfidf-{task}"],
            "policy": policy,
            "threshold": thresholds[task],
            "seed_data": _write_jsonl(directory / f"{task}-seed.jsonl", data[task].seed),
            "gold_data": _write_jsonl(directory / f"{task}-gold.jsonl", gold[task]),
        }
    return out


def start_thresholds(
    dirs: Mapping[str, Path],
    cfg: MultitaskConfig,
    gold: Mapping[str, LabeledSet],
    log: Log,
) -> dict[str, float]:
    """Each task's starting threshold, as a review budget would set it: the highest that
    escalates at most ``cfg.escalation`` of the tasks' held-out gold posts under
    ``cfg.policy`` (``calibrated_thresholds``, as ``bench multitask`` sets them). Those
    posts are never streamed, and are taken in equal numbers from every task as the feed is,
    so the share holds on the feed up to sampling; calibrating needs no label."""
    texts = [text for sample in gold.values() for text in sample.texts]
    thresholds = calibrated_thresholds(dirs, cfg, texts)
    log(
        f"jury per task: policy {cfg.policy}, starting thresholds calibrated to escalate at most "
        f"{cfg.escalation:.0%} of {len(texts)} held-out val posts on each task: "
        + ", ".join(f"{t} {th:.4f}" for t, th in thresholds.items())
        + " (the trainer's threshold controller moves them from there)"
    )
    # 0 is what calibration gives a task its policy cannot bring under the share.
    stuck = [t for t, th in thresholds.items() if th == 0.0]
    if stuck:
        log(
            f"[yellow]note:[/] under policy {cfg.policy}, {', '.join(stuck)}: more than "
            f"{cfg.escalation:.0%} of posts escalate even at threshold 0 (every split vote "
            "does); leave --policy out (threshold) to hold the review share"
        )
    return thresholds


@dataclass(frozen=True)
class TaskDemo:
    """What `run_demo` needs for a multi-task run."""

    jurors: list[str]  # registry names
    feed: TaskFeed
    tasks_json: str  # JURYSTREAM_TASKS
    thresholds: dict[str, float]  # each task's calibrated starting threshold


def prepare_tasks(
    tasks: Sequence[str],
    data_root: Path,
    *,
    count: int,
    train_size: int,
    gold_size: int,
    policy: str,
    review_share: float,
    workdir: Path,
    cache_dir: Path,
    registry: Registry,
    log: Log,
    base: Path | None = None,
    min_int8_agreement: float = BENCH_MIN_INT8_AGREEMENT,
) -> TaskDemo:
    """Train (or reuse) the jurors, publish them to ``registry``, calibrate each task's
    starting threshold to ``review_share`` and build the feed. ``base`` and
    ``min_int8_agreement`` are the multi-head juror's encoder and int8 bar (tests: a tiny
    encoder)."""
    data = {t: task_data(data_root, t, train_size) for t in tasks}
    cfg = MultitaskConfig(
        tasks=tuple(tasks),
        train_size=train_size,
        policy=policy,
        escalation=review_share,
        base=base,
        min_int8_agreement=min_int8_agreement,
    )
    # One cache per task set: a multi-head juror has exactly the heads it was trained with.
    dirs = ensure_jurors(data_root, cfg, cache_dir / f"tasks-{'-'.join(tasks)}", log)
    names = []
    for directory in dirs.values():
        registry.publish(directory)
        names.append(read_manifest(directory).name)
    gold = gold_samples(data, gold_size)
    thresholds = start_thresholds(dirs, cfg, gold, log)
    posts = interleave({t: d.rest for t, d in data.items()}, count)
    log(
        f"scripted reviewer: the gold label on a post's own task, {MULTIHEAD}'s label on the "
        f"others (computing it for {len(posts)} posts)"
    )
    guessed = head_labels(dirs[MULTIHEAD], tasks, [text for _, text, _ in posts])
    settings = tasks_settings(tasks, data, gold, workdir, policy, thresholds)
    return TaskDemo(names, task_feed(posts, guessed), json.dumps(settings), thresholds)
