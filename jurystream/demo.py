"""`jurystream demo`: the whole pipeline on the embedded broker, watched live.

It runs the real roles as child processes (as a deployment would), feeds real posts (TweetEval
offensive from the data root, or the generated feed) at a steady rate, follows every output
topic, and accounts for every message it sent. The trainer refines the jurors during the run,
so the live view shows the loop at work: escalation, audit accuracy, spend, serving versions
and the controller's threshold moving. With ``tasks`` (``demo_tasks``) every post is labeled on
several TweetEval tasks at once, each task's jury starting at a threshold calibrated to a
review share, and the view adds each task's accuracy, escalation and threshold.
"""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from jurystream.config import Settings, Topic
from jurystream.demo_jurors import JurorRecipe, cached_jurors, copy_registry, seed_split
from jurystream.models.serving.juror import read_manifest
from jurystream.models.serving.registry import Registry
from jurystream.models.training.sklearn_juror import build_sklearn_juror
from jurystream.progress import progress_bar
from jurystream.stream.broker import EmbeddedBroker, ensure_topics
from jurystream.stream.feed import (
    LABELS,
    FeedItem,
    generate_posts,
    labeled_examples,
    posts_from_dataset,
)
from jurystream.stream.processes import RoleGroup
from jurystream.stream.records import Feedback, Post
from jurystream.stream.security import client_kwargs
from jurystream.testing.openai_server import OpenAIServer, answers_by_text

console = Console()


@dataclass
class Fate:
    """Where one message ended: a label (by whom), pending review, or a dead letter."""

    outcome: str = "pending"  # pending | labeled | in-review | dead-letter
    label: str | None = None
    source: str | None = None
    detail: str | None = None
    latency_ms: float | None = None
    tasks: dict[str, tuple[str, str]] = field(default_factory=dict)  # task -> (label, source)
    label_records: int = 0  # label records read for the post (a replay may write a second)

    @property
    def reviewed(self) -> bool:
        """Whether a reviewer labeled the post (on any of its tasks, with several)."""
        if self.tasks:
            return any(source != "jury" for _, source in self.tasks.values())
        return self.source not in (None, "jury")


@dataclass(frozen=True)
class Snapshot:
    seconds: float
    labeled: int
    by_jury: int
    accuracy: float | None
    cost_usd: float
    audit_accuracy: float | None = None
    threshold: float | None = None
    escalation: float | None = None  # over the last RECENT labels
    # Several tasks: accuracy on each task's own posts, escalation on it over the last RECENT.
    task_accuracy: dict[str, float | None] = field(default_factory=dict)
    task_escalation: dict[str, float | None] = field(default_factory=dict)


RECENT = 200  # labels the "recent escalation" share is taken over


@dataclass
class Ledger:
    """Every message sent and what became of it; the live view and the summary read it.

    Besides the fates it follows what shows the loop at work: the audits (the reviewer's
    label against the jury's on a random share of accepted posts, read from hard-samples), the
    serving versions and threshold the latest labels carry, and the spend.

    With several tasks (``origin`` maps each post to the task its gold is for) a post's label
    and source are those of its own task in the record's ``tasks``; every task's label and
    source are kept, for the share escalated per task.
    """

    gold: dict[str, str | None]
    origin: dict[str, str] = field(default_factory=dict)
    sent: int = 0
    fates: dict[str, Fate] = field(default_factory=dict)
    cost_usd: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    first_versions: dict[str, str] = field(default_factory=dict)
    threshold: float | None = None
    audits: dict[str, bool] = field(default_factory=dict)  # post id (#task) -> reviewer agreed
    task_thresholds: dict[str, float] = field(default_factory=dict)  # several tasks, latest
    start_thresholds: dict[str, float] = field(default_factory=dict)  # several: calibrated
    order: list[str] = field(default_factory=list)  # labeled ids, in the order labels came
    started: float = field(default_factory=time.monotonic)
    history: list[Snapshot] = field(default_factory=list)

    def apply(self, kind: Topic, value: dict[str, object]) -> None:
        """Take in one output record of the topic ``kind``."""
        key = str(value.get("id") or "")
        if key not in self.gold:
            return
        if kind == Topic.HARD_SAMPLES:
            if value.get("kind") == "audit" and isinstance(value.get("jury_label"), str):
                task = value.get("task")
                audited = f"{key}#{task}" if isinstance(task, str) else key
                self.audits[audited] = value.get("label") == value["jury_label"]
            return
        fate = self.fates.setdefault(key, Fate())
        if kind == Topic.DEAD_LETTERS:
            fate.outcome, fate.detail = "dead-letter", str(value.get("error"))
        elif kind == Topic.REVIEW and fate.outcome == "pending":
            fate.outcome, fate.detail = "in-review", str(value.get("reason"))
        elif kind == Topic.LABELS:
            fate.label_records += 1
            if fate.outcome != "labeled":
                self.order.append(key)
            fate.outcome = "labeled"
            fate.label, fate.source = str(value["label"]), str(value["source"])
            latency = value.get("latency_ms")
            fate.latency_ms = float(latency) if isinstance(latency, int | float) else None
            cost = value.get("cost_usd")
            self.cost_usd += float(cost) if isinstance(cost, int | float) else 0.0
            versions = value.get("model_versions")
            if isinstance(versions, dict):
                self.versions.update({str(k): str(v) for k, v in versions.items()})
                self.first_versions = self.first_versions or dict(self.versions)
            threshold = value.get("threshold")
            if value.get("source") == "jury" and isinstance(threshold, int | float):
                self.threshold = float(threshold)
            self._apply_tasks(key, fate, value.get("tasks"))

    def _apply_tasks(self, key: str, fate: Fate, tasks: object) -> None:
        """A multi-task record: every task's label and source; the post's own task's as its."""
        if not isinstance(tasks, dict):
            return
        for task, result in tasks.items():
            if not isinstance(result, dict):
                continue
            fate.tasks[str(task)] = (str(result.get("label")), str(result.get("source")))
            # A reviewed task keeps the threshold the jury escalated it at.
            threshold = result.get("threshold")
            if isinstance(threshold, int | float):
                self.task_thresholds[str(task)] = float(threshold)
        own = fate.tasks.get(self.origin.get(key, ""))
        if own is not None:
            fate.label, fate.source = own

    @property
    def counts(self) -> Counter[str]:
        return Counter(f.outcome for f in self.fates.values())

    def accuracy(self, task: str | None = None) -> float | None:
        """Labels vs gold; with ``task``, on the posts that came from that task only."""
        scored = [
            f.label == self.gold[k]
            for k, f in self.fates.items()
            if f.outcome == "labeled"
            and self.gold[k] is not None
            and (task is None or self.origin.get(k) == task)
        ]
        return sum(scored) / len(scored) if scored else None

    @property
    def tasks(self) -> list[str]:
        """The tasks of a multi-task run, in the order posts first came from them."""
        return list(dict.fromkeys(self.origin.values()))

    def task_escalation(self, task: str, window: slice = slice(None)) -> float | None:
        """The share of labels in ``window`` (posts from any task) whose ``task`` label a
        reviewer gave."""
        sources = [self.fates[k].tasks[task][1] for k in self.order[window]]
        return sum(s != "jury" for s in sources) / len(sources) if sources else None

    def audit_accuracy(self) -> float | None:
        """The share of audited jury labels the reviewer agreed with (None before any)."""
        return sum(self.audits.values()) / len(self.audits) if self.audits else None

    def escalation(self, window: slice) -> float | None:
        """The share of labels in ``window`` (of all labels, in arrival order) that the
        reviewer gave."""
        part = [self.fates[k].reviewed for k in self.order[window]]
        return sum(part) / len(part) if part else None

    def jury_accuracy(self, window: slice) -> float | None:
        """Accuracy vs gold of the jury's own labels in ``window`` (what the audits estimate)."""
        part = [
            self.fates[k].label == self.gold[k]
            for k in self.order[window]
            if self.fates[k].source == "jury" and self.gold[k] is not None
        ]
        return sum(part) / len(part) if part else None

    def pending(self) -> list[str]:
        """Ids not settled yet (no label and no dead letter), in feed order."""
        done = ("labeled", "dead-letter")
        return [k for k in self.gold if self.fates.get(k, Fate()).outcome not in done]

    def settled(self) -> bool:
        done = sum(1 for f in self.fates.values() if f.outcome in ("labeled", "dead-letter"))
        return done == len(self.gold)

    def snapshot(self) -> None:
        by_jury = sum(1 for f in self.fates.values() if f.outcome == "labeled" and not f.reviewed)
        self.history.append(
            Snapshot(
                time.monotonic() - self.started,
                self.counts["labeled"],
                by_jury,
                self.accuracy(),
                self.cost_usd,
                self.audit_accuracy(),
                self.threshold,
                self.escalation(slice(-RECENT, None)),
                {t: self.accuracy(t) for t in self.tasks},
                {t: self.task_escalation(t, slice(-RECENT, None)) for t in self.tasks},
            )
        )


def bootstrap_demo_jurors(directory: Path, seed_size: int) -> list[Path]:
    """Three diverse TF-IDF jurors from a small seed set of the generated feed (seconds)."""
    texts, labels = labeled_examples(seed_size, seed=1)
    specs = [(0, 1), (1, 2), (2, 2)]
    with progress_bar(console=console) as progress:
        task = progress.add_task("bootstrapping jurors", total=len(specs))
        out = []
        for seed, ngram in specs:
            out.append(
                build_sklearn_juror(
                    texts,
                    labels,
                    LABELS,
                    directory / f"tfidf{seed}",
                    name=f"tfidf{seed}",
                    seed=seed,
                    bootstrap=True,
                    ngram_max=ngram,
                )
            )
            progress.advance(task)
    return out


def _share(part: int, whole: int) -> str:
    return f"{part} ({part / max(whole, 1):.1%})"


def _view(ledger: Ledger, total: int) -> Group:
    counts = ledger.counts
    elapsed = max(time.monotonic() - ledger.started, 1e-6)
    labeled = counts["labeled"]
    settled = labeled + counts["dead-letter"]
    jury = sum(1 for f in ledger.fates.values() if f.outcome == "labeled" and not f.reviewed)
    escalated = sum(1 for f in ledger.fates.values() if f.outcome == "labeled" and f.reviewed)
    escalated += counts["in-review"]
    latencies = sorted(f.latency_ms for f in ledger.fates.values() if f.latency_ms is not None)
    table = Table(title="jurystream demo", show_header=False, min_width=60)
    table.add_row("sent / settled / total", f"{ledger.sent} / {settled} / {total}")
    table.add_row("throughput", f"{settled / elapsed:,.1f} msg/s")
    # Several tasks: a post is one reviewer call if any of its tasks escalated.
    every, any_task = (" on every task", " on any task") if ledger.origin else ("", "")
    table.add_row(f"labeled by jury{every}", str(jury))
    table.add_row(f"escalated{any_task}", _share(escalated, settled))
    recent = ledger.escalation(slice(-RECENT, None))
    if recent is not None:
        shown = min(RECENT, len(ledger.order))
        table.add_row(f"escalated{any_task}, last {shown} labels", f"{recent:.1%}")
    table.add_row("waiting in review", str(counts["in-review"]))
    table.add_row("dead letters", str(counts["dead-letter"]))
    acc = ledger.accuracy()
    table.add_row("accuracy vs gold", "—" if acc is None else f"{acc:.1%}")
    audit = ledger.audit_accuracy()
    table.add_row(
        "audit: reviewer agrees with jury",
        "—" if audit is None else f"{audit:.1%} of {len(ledger.audits)} audited",
    )
    if latencies:
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        table.add_row("latency p50 / p99", f"{p50:.0f} ms / {p99:.0f} ms")
    table.add_row("reviewer cost", f"${ledger.cost_usd:.4f}")
    reviewed = labeled - jury
    if reviewed and ledger.cost_usd:
        # What sending every labeled message to the reviewer would have cost, at the measured
        # cost per reviewed case.
        everything = ledger.cost_usd / reviewed * labeled
        saved = 1 - ledger.cost_usd / everything
        table.add_row("cost if all reviewed", f"${everything:.4f} (saved {saved:.0%})")
    table.add_row("model versions", _versions(ledger.versions))
    if ledger.origin:
        # The empty line ends the live view's last line, which the summary would continue.
        return Group(table, _tasks_table(ledger), Text(SCRIPTED_NOTE), Text(""))
    table.add_row("jury threshold", "—" if ledger.threshold is None else f"{ledger.threshold:.2f}")
    return Group(table)


SCRIPTED_NOTE = (
    "reviewer: scripted. On a post's own task it answers the gold label; on the other tasks "
    "there is no gold, so it answers the multi-head juror's own label."
)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _tasks_table(ledger: Ledger) -> Table:
    """Per task: accuracy vs gold on the posts from that task, the share of all labeled posts
    a reviewer labeled on it, and the jury's threshold for it: the calibrated one it started
    at and the latest the labels carry (the controller's)."""
    table = Table(title="per task")
    columns = ("task", "posts from it", "accuracy vs gold", "escalated on it")
    for col in (*columns, "threshold: start → latest"):
        table.add_column(col)
    for task in ledger.tasks:
        posts = sum(1 for t in ledger.origin.values() if t == task)
        start, latest = ledger.start_thresholds.get(task), ledger.task_thresholds.get(task)
        table.add_row(
            task,
            str(posts),
            _pct(ledger.accuracy(task)),
            _pct(ledger.task_escalation(task)),
            f"{_threshold(start)} → {_threshold(latest)}",
        )
    return table


def _threshold(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


WARMUP_ID = "demo-warmup"
WARMUP_TEXT = "warming up the jury"
FOLLOWED = (Topic.LABELS, Topic.REVIEW, Topic.DEAD_LETTERS, Topic.HARD_SAMPLES)


class DemoStopped(RuntimeError):
    """The run cannot finish (a role exited, or nothing settles any more); says what to read."""


def gets_feedback(key: bytes, share: float) -> bool:
    """Whether a post's gold label is sent as feedback: a stable hash of its id, so a replay of
    the same feed gives feedback on the same posts."""
    return zlib.crc32(key) % 10_000 < share * 10_000


@dataclass(frozen=True)
class Pacing:
    """How the feed is sent and how long the run may wait."""

    rate: float  # posts per second
    feedback_share: float  # share of posts whose gold label goes to the feedback topic
    timeout_s: float  # the whole run
    stall_s: float = 120.0  # no message settles for this long while some are pending: stop


async def _drive(
    bootstrap: str,
    settings: Settings,
    items: list[FeedItem],
    ledger: Ledger,
    pacing: Pacing,
    watch: Callable[[], str | None],
) -> None:
    """Feed at ``pacing.rate`` once the roles answer a probe; follow outputs until all settle.

    ``watch`` restarts roles that exited and says when one keeps exiting: the run stops at
    once with that, instead of waiting for labels that cannot come. A run in which nothing
    settles for ``stall_s`` stops too, naming the messages it still waits for.
    """
    topics = settings.topics
    kinds = {topics.name(k): k for k in FOLLOWED}
    consumer = AIOKafkaConsumer(
        *kinds,
        **client_kwargs(bootstrap),
        group_id=None,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(**client_kwargs(bootstrap), linger_ms=5, acks="all")
    await consumer.start()
    await producer.start()
    ready = asyncio.Event()

    async def feed() -> None:
        # Every send's delivery is checked: a post the broker did not take would otherwise
        # leave the run waiting for a label that can never come.
        probe = Post.of(WARMUP_ID, WARMUP_TEXT)
        await producer.send_and_wait(
            topics.name(Topic.POSTS), key=WARMUP_ID.encode(), value=probe.to_bytes()
        )
        await ready.wait()  # the worker has joined its group and scored the probe
        ledger.started = time.monotonic()
        ledger.history.clear()
        start = time.monotonic()
        deliveries = []
        for item in items:
            deliveries.append(
                await producer.send(topics.name(Topic.POSTS), key=item.key, value=item.value)
            )
            if item.gold is not None and gets_feedback(item.key, pacing.feedback_share):
                # gold feedback, as a moderation team would send it for some of the posts
                post_id = item.key.decode()
                gold = Feedback.of(post_id, item.gold, task=ledger.origin.get(post_id)).to_bytes()
                await producer.send(topics.name(Topic.FEEDBACK), key=item.key, value=gold)
            ledger.sent += 1
            ahead = ledger.sent / pacing.rate - (time.monotonic() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
        await asyncio.gather(*deliveries)  # raises the first failed delivery

    feeding = asyncio.create_task(feed())
    deadline = time.monotonic() + pacing.timeout_s
    last_snapshot = 0.0
    progress = (0, time.monotonic())  # (settled count, when it last moved)
    try:
        with Live(_view(ledger, len(items)), console=console, refresh_per_second=4) as live:
            while not (feeding.done() and ledger.settled()):
                if feeding.done() and (failed := feeding.exception()) is not None:
                    raise DemoStopped(f"feeding the posts topic failed: {failed!r}") from failed
                if (exited := watch()) is not None:
                    raise DemoStopped(exited)
                if time.monotonic() > deadline:
                    raise DemoStopped(f"not settled within {pacing.timeout_s:.0f}s")
                batches = await consumer.getmany(timeout_ms=250, max_records=5000)
                for tp, messages in batches.items():
                    for m in messages:
                        value = json.loads(m.value or b"{}")
                        if m.key == WARMUP_ID.encode():
                            ready.set()
                        if isinstance(value, dict):
                            ledger.apply(kinds[tp.topic], value)
                settled = len(ledger.gold) - len(ledger.pending())
                if settled != progress[0]:
                    progress = (settled, time.monotonic())
                elif time.monotonic() - progress[1] > pacing.stall_s:
                    if not ready.is_set():
                        raise DemoStopped(
                            f"the worker did not answer the probe within {pacing.stall_s:.0f}s"
                        )
                    raise DemoStopped(_stall_report(ledger, pacing.stall_s))
                if ready.is_set() and time.monotonic() - last_snapshot >= 1.0:
                    ledger.snapshot()
                    last_snapshot = time.monotonic()
                live.update(_view(ledger, len(items)))
            ledger.snapshot()
    finally:
        feeding.cancel()
        await producer.stop()
        await consumer.stop()


def _stall_report(ledger: Ledger, stall_s: float) -> str:
    pending = ledger.pending()
    where = Counter(ledger.fates.get(k, Fate()).outcome for k in pending)
    states = ", ".join(f"{n} {state}" for state, n in sorted(where.items()))
    return (
        f"nothing settled for {stall_s:.0f}s; {len(pending)} messages wait ({states}), "
        f"e.g. {pending[:5]}"
    )


def plot_history(ledger: Ledger, path: Path) -> Path:
    """Accuracy, escalation rate (with the jury's threshold) and reviewer spend, as a PNG.

    The escalation rate is over the last labels (a window, not the whole run), so the effect
    of each training round and threshold change shows where it happens.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = ledger.history
    fig, (top, mid, bottom) = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    acc = [(s.seconds, s.accuracy * 100) for s in h if s.accuracy is not None]
    top.plot(
        [a for a, _ in acc], [b for _, b in acc], color="tab:green", label="all labels vs gold"
    )
    colors = dict(zip(ledger.tasks, TASK_COLORS, strict=False))
    for task in ledger.tasks:  # several tasks: each on the posts that came from it
        shown = _task_series(h, "task_accuracy", task)
        top.plot(*shown, lw=1, color=colors.get(task), label=f"{task} vs gold")
    audit = [(s.seconds, s.audit_accuracy * 100) for s in h if s.audit_accuracy is not None]
    top.plot(
        [a for a, _ in audit],
        [b for _, b in audit],
        color="tab:blue",
        label="audit: reviewer agrees with jury",
    )
    top.set_ylabel("accuracy (%)")
    top.legend(loc="lower right", fontsize=8 if ledger.tasks else None)
    top.set_title("jurystream demo")
    esc = [(s.seconds, s.escalation * 100) for s in h if s.escalation is not None]
    any_task = " on any task" if ledger.tasks else ""
    mid.plot([x for x, _ in esc], [y for _, y in esc], color="tab:orange", label=any_task[1:])
    for task in ledger.tasks:
        shown = _task_series(h, "task_escalation", task)
        mid.plot(*shown, lw=1, color=colors.get(task), label=f"on {task}")
    if ledger.tasks:
        mid.legend(loc="lower left", fontsize=8)
    mid.set_ylabel(f"sent to reviewer,\nlast {RECENT} labels (%)")
    thresholds = [(s.seconds, s.threshold) for s in h if s.threshold is not None]
    if thresholds and not ledger.origin:  # several tasks have a threshold each
        twin = mid.twinx()
        twin.step([x for x, _ in thresholds], [y for _, y in thresholds], color="tab:gray")
        twin.set_ylabel("jury threshold", color="tab:gray")
    bottom.plot([s.seconds for s in h], [s.cost_usd for s in h], color="tab:red")
    bottom.set_ylabel("reviewer spend (USD)")
    bottom.set_xlabel("seconds since the feed started")
    for ax in (top, mid, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


TASK_COLORS = ("tab:purple", "tab:brown", "tab:pink", "tab:cyan", "tab:olive", "tab:gray")


def _task_series(history: list[Snapshot], what: str, task: str) -> tuple[list[float], list[float]]:
    """(seconds, percent) of ``task``'s ``what`` (a per-task field of the snapshots), where
    known."""
    points = [(s.seconds, getattr(s, what).get(task)) for s in history]
    known = [(x, 100 * y) for x, y in points if y is not None]
    return [x for x, _ in known], [y for _, y in known]


def _summary(ledger: Ledger, workdir: Path) -> Path:
    path = workdir / "fates.csv"
    several = bool(ledger.origin)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        # With several tasks: the task the gold is for, and every task's label and source.
        extra = ["task", "labels", "label_records"] if several else []
        writer.writerow(["id", "outcome", "label", "source", "gold", "detail", *extra])
        for key, gold in ledger.gold.items():
            f = ledger.fates.get(key, Fate())
            row = [key, f.outcome, f.label, f.source, gold, f.detail]
            if several:
                labels = {t: {"label": label, "source": src} for t, (label, src) in f.tasks.items()}
                row += [ledger.origin.get(key), json.dumps(labels), str(f.label_records)]
            writer.writerow(row)
    table = Table(title="what happened to every message")
    for col in ("outcome", "source", "messages", "accuracy vs gold"):
        table.add_column(col)
    groups: dict[tuple[str, str], list[str]] = {}
    for key in ledger.gold:
        f = ledger.fates.get(key, Fate())
        groups.setdefault((f.outcome, f.source or "—"), []).append(key)
    for (outcome, source), keys in sorted(groups.items()):
        golds = [(ledger.fates[k].label, ledger.gold[k]) for k in keys if k in ledger.fates]
        scored = [label == gold for label, gold in golds if gold is not None and label]
        acc = f"{sum(scored) / len(scored):.1%}" if scored else "—"
        table.add_row(outcome, source, str(len(keys)), acc)
    console.print(table)
    if several:
        console.print(_tasks_table(ledger))
        console.print(SCRIPTED_NOTE)
    if len(ledger.order) >= 2 * RECENT:
        console.print(_loop_table(ledger))
    return path


def _versions(versions: dict[str, str]) -> str:
    return ", ".join(f"{k}@{v}" for k, v in sorted(versions.items()))


def _loop_table(ledger: Ledger) -> Table:
    """The first and the last labels side by side: what the rounds and the controller did."""
    first, last = slice(0, RECENT), slice(-RECENT, None)
    thresholds = [s.threshold for s in ledger.history if s.threshold is not None]

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value:.1%}"

    table = Table(title=f"the loop: first and last {RECENT} labels")
    for col in ("", "first", "last"):
        table.add_column(col)
    table.add_row(
        "escalated to the reviewer" + (" (on any task)" if ledger.origin else ""),
        pct(ledger.escalation(first)),
        pct(ledger.escalation(last)),
    )
    table.add_row(
        "jury labels vs gold", pct(ledger.jury_accuracy(first)), pct(ledger.jury_accuracy(last))
    )
    if thresholds and not ledger.origin:  # several tasks: each its own, in the per-task table
        table.add_row("jury threshold", f"{thresholds[0]:.2f}", f"{thresholds[-1]:.2f}")
    table.add_row("serving versions", _versions(ledger.first_versions), _versions(ledger.versions))
    return table


@dataclass(frozen=True)
class DemoOptions:
    """One demo run. ``data`` None is the generated feed; ``every_samples`` None lets the feed
    choose (rounds take seconds on the generated feed, minutes with MiniLM jurors)."""

    count: int
    seed_size: int
    workdir: Path
    data: Path | None = None
    bad_every: int = 50
    reviewer: str = "scripted-llm"  # or "oracle"
    rate: float = 100.0
    feedback_share: float = 0.25
    every_samples: int | None = None
    minilm: int = 2
    cache_dir: Path = Path("var/demo-cache")
    timeout_s: float = 900.0
    target_accuracy: float = 0.85  # of accepted labels, held by the threshold controller
    # Several TweetEval tasks on one stream (``demo_tasks``); empty: one task, as before.
    tasks: tuple[str, ...] = ()
    train_size: int = 2000  # train posts per task the multi-task jurors learn from
    # Each task's jury: this policy, its starting threshold calibrated so that it escalates at
    # most ``review_share`` of the tasks' held-out val posts (as a review budget would set it).
    task_policy: str = "threshold"
    review_share: float = 0.15
    gold_size: int = 300  # val posts per task the trainer's gate and controller judge on


@dataclass(frozen=True)
class DemoSetup:
    """What the roles need: jurors in a registry, the feed, and the trainer's data."""

    jurors: list[str]
    items: list[FeedItem]
    trainer_args: list[str]
    trainer_env: dict[str, str]
    # Several tasks: each post's origin task, what the scripted reviewer answers per text, and
    # the environment every role gets (JURYSTREAM_TASKS).
    origin: dict[str, str] = field(default_factory=dict)
    answers: dict[str, dict[str, str]] = field(default_factory=dict)
    role_env: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)  # each task's calibrated start


def _write_jsonl(path: Path, texts: Sequence[str], labels: Sequence[str]) -> str:
    with path.open("w") as fh:
        for text, label in zip(texts, labels, strict=True):
            fh.write(json.dumps({"text": text, "label": label}) + "\n")
    return str(path)


def _generated_setup(options: DemoOptions, registry: Registry) -> DemoSetup:
    """TF-IDF jurors from a small seed set of the generated feed; rounds take seconds."""
    workdir, seed_size = options.workdir, options.seed_size
    dirs = bootstrap_demo_jurors(workdir / "jurors", seed_size)
    names = []
    for directory in dirs:
        registry.publish(directory)
        names.append(read_manifest(directory).name)
    seed_texts, seed_labels = labeled_examples(seed_size, seed=1)
    gold_texts, gold_labels = labeled_examples(400, seed=99)
    seed = _write_jsonl(workdir / "seed.jsonl", seed_texts, [LABELS[y] for y in seed_labels])
    gold = _write_jsonl(workdir / "gold.jsonl", gold_texts, [LABELS[y] for y in gold_labels])
    items = list(
        generate_posts(options.count, seed=7, bad_every=options.bad_every, id_prefix="demo")
    )
    every = options.every_samples or 100
    return DemoSetup(
        names,
        items,
        ["--every-samples", str(every), "--seed-data", seed, "--gold-data", gold],
        {
            "JURYSTREAM_TRAINER__SEED_SIZE": str(seed_size),
            "JURYSTREAM_TRAINER__GOLD_SIZE": "400",
            "JURYSTREAM_CONTROLLER__TARGET_ACCURACY": str(options.target_accuracy),
        },
    )


def _dataset_setup(options: DemoOptions, data: Path, registry: Registry) -> DemoSetup:
    """MiniLM + TF-IDF jurors from a seed sample of ``data``'s train split (cached).

    The stream is the rest of the train split (texts no juror has seen); the gate and the
    threshold controller judge on the val split, which is never streamed, so nothing the
    jurors learn from leaks into it.
    """
    recipe = JurorRecipe(data, options.seed_size, options.minilm)
    cached = cached_jurors(recipe, options.cache_dir, log=console.print)
    copy_registry(cached, Path(registry.root))
    _, rest, _ = seed_split(data, options.seed_size)
    stream = rest.subset(range(min(options.count, len(rest))))
    every = options.every_samples or 100
    return DemoSetup(
        recipe.names,
        list(posts_from_dataset(stream.texts, stream.gold(), id_prefix="demo")),
        ["--every-samples", str(every), "--seed-data", str(data), "--gold-data", str(data)],
        {
            "JURYSTREAM_TRAINER__SEED_SIZE": str(options.seed_size),
            "JURYSTREAM_TRAINER__GOLD_SIZE": "300",
            # The trainer is niced below the worker, so it may take both cores when they idle.
            "JURYSTREAM_TRAINER__THREADS": "2",
            # Rounds short enough to land during the run (about two minutes on two cores): one
            # pass over the new samples and as many replayed ones.
            "JURYSTREAM_TRAINER__REPLAY_RATIO": "1.0",
            "JURYSTREAM_TRAINER__EPOCHS": "1",
            # The demo's reviewers are always right, so the default target (the reviewer's
            # accuracy minus 5 points: 95 %) would send most posts to review and the bill would
            # rise as the jurors improve. A team sets its own; 85 % is what `bench loop` holds.
            "JURYSTREAM_CONTROLLER__TARGET_ACCURACY": str(options.target_accuracy),
        },
    )


def _tasks_setup(options: DemoOptions, settings: Settings, registry: Registry) -> DemoSetup:
    """Several TweetEval tasks on one stream (``demo_tasks``): the multi-head and per-task
    TF-IDF jurors (cached), the interleaved feed, and the tasks every role is given; the
    trainer refines each task's jurors from its own seed set, gated on its own val sample."""
    from jurystream.demo_tasks import prepare_tasks

    demo = prepare_tasks(
        options.tasks,
        settings.data_root,
        count=options.count,
        train_size=options.train_size,
        gold_size=options.gold_size,
        policy=options.task_policy,
        review_share=options.review_share,
        workdir=options.workdir,
        cache_dir=options.cache_dir,
        registry=registry,
        log=console.print,
    )
    every = options.every_samples or 100
    return DemoSetup(
        demo.jurors,
        demo.feed.items,
        ["--every-samples", str(every)],
        {
            "JURYSTREAM_TRAINER__SEED_SIZE": str(options.train_size),
            "JURYSTREAM_TRAINER__GOLD_SIZE": str(options.gold_size),
            "JURYSTREAM_TRAINER__THREADS": "2",
            "JURYSTREAM_TRAINER__REPLAY_RATIO": "1.0",
            "JURYSTREAM_TRAINER__EPOCHS": "1",
            "JURYSTREAM_CONTROLLER__TARGET_ACCURACY": str(options.target_accuracy),
            # The review share is the budget each task's threshold controller keeps within
            # (the trainer reads jury.review_budget nowhere else). Without it the controller's
            # first decision, seconds in, would undo the calibration to chase the target:
            # irony met 85 % only by escalating 88 % of posts. The worker gets no budget:
            # every escalated post is reviewed.
            "JURYSTREAM_JURY__REVIEW_BUDGET": str(options.review_share),
        },
        origin=demo.feed.origin,
        answers=demo.feed.answers,
        role_env={"JURYSTREAM_TASKS": demo.tasks_json},
        thresholds=demo.thresholds,
    )


def _scripted_llm(setup: DemoSetup) -> OpenAIServer:
    """The project's OpenAI-compatible test server answering each post's gold label (several
    tasks: ``setup.answers``, the gold on a post's own task and a juror's label on the others).

    It lets the demo run the real `openai` reviewer tier (prompts, retries, token usage, USD
    from the price table) with no network; its answers are as good as the gold labels.
    """
    answers: dict[str, str | dict[str, str]]
    if setup.answers:
        answers = dict(setup.answers)
        first = next(iter(setup.answers.values()))
        # The probe may be escalated too: any valid label of each task.
        answers[WARMUP_TEXT] = dict(first)
    else:
        items = setup.items
        answers = {json.loads(i.value)["text"]: i.gold for i in items if i.gold is not None}
        answers[WARMUP_TEXT] = sorted(str(a) for a in answers.values())[0]
    server = OpenAIServer(answers_by_text(answers))
    server.start()
    console.print(f"scripted LLM reviewer (OpenAI API, priced as gpt-4o-mini) at {server.base_url}")
    return server


def _scripted_llm_env(setup: DemoSetup) -> dict[str, str]:
    key = {"OPENAI_API_KEY": "demo-key-for-the-local-test-server"}
    if setup.origin:  # several tasks: their labels are described in JURYSTREAM_TASKS
        return key
    labels = sorted({i.gold for i in setup.items if i.gold is not None})
    descriptions = {label: f"the post is {label}" for label in labels}
    return {**key, "JURYSTREAM_REVIEWER__LABEL_DESCRIPTIONS": json.dumps(descriptions)}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@dataclass
class Supervisor:
    """Restarts a role that exits, as a deployment's supervisor (Kubernetes, systemd) would.

    The roles are built to crash on what they cannot handle in place (a worker whose produce
    failed exits 70 without committing, a reviewer case that raises crashes the reviewer) and
    to replay on restart. Without restarts one such crash leaves the run waiting for labels
    that can never come; with them the crash costs a replay. A role that keeps exiting stops
    the run, naming its log.
    """

    group: RoleGroup
    limit: int = 3  # restarts per role
    restarts: Counter[str] = field(default_factory=Counter)

    def check(self) -> str | None:
        """Restart what exited; the reason to stop the run, or None."""
        for role in self.group.started:
            if role.alive:
                continue
            name = role.args[0]
            code = role.proc.returncode if role.proc is not None else None
            if self.restarts[name] >= self.limit:
                return (
                    f"the {name} exited (code {code}) after {self.limit} restarts; "
                    f"its log: {role.log_path}"
                )
            self.restarts[name] += 1
            console.print(
                f"[yellow]the {name} exited (code {code}); restarting it "
                f"({self.restarts[name]} of {self.limit}); its log: {role.log_path}[/]"
            )
            role.start()
        return None


def run_demo(settings: Settings, options: DemoOptions) -> int:
    workdir = options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    # SIGTERM (a supervisor, `timeout`, docker stop) stops everything like Ctrl-C does: the
    # roles run in their own sessions and would otherwise outlive the demo.
    signal.signal(signal.SIGTERM, _interrupt)
    with EmbeddedBroker() as broker:
        console.print(f"embedded broker at [bold]{broker.bootstrap}[/]")
        asyncio.run(
            ensure_topics(broker.bootstrap, settings.topics.all_names(), settings.topics.partitions)
        )
        registry = Registry(str((workdir / "registry").resolve()))
        if options.tasks:
            setup = _tasks_setup(options, settings, registry)
        elif options.data is None:
            setup = _generated_setup(options, registry)
        else:
            setup = _dataset_setup(options, options.data, registry)
        ledger = Ledger({i.key.decode(): i.gold for i in setup.items}, setup.origin)
        ledger.start_thresholds = setup.thresholds
        group = RoleGroup(
            broker.bootstrap,
            workdir,
            prefix=settings.topics.prefix,
            env={
                **settings.role_env(),
                "JURYSTREAM_APP_ID": settings.app_id,
                "JURYSTREAM_REGISTRY": registry.url,
                **setup.role_env,
            },
        )
        port = settings.metrics.port

        def metrics(offset: int) -> list[str]:
            return ["--metrics-port", str(port + offset)] if port else []

        llm = _scripted_llm(setup) if options.reviewer == "scripted-llm" else None
        stopped: str | None = None
        pacing = Pacing(options.rate, options.feedback_share, options.timeout_s)
        try:
            # Several tasks: each task's jurors and policy are in JURYSTREAM_TASKS.
            juror_args = [] if options.tasks else ["--policy", settings.jury.policy]
            juror_args += [a for j in setup.jurors for a in ("--juror", j) if not options.tasks]
            group.start("worker", *juror_args, *metrics(0))
            if llm is None:
                tiers = [a for t in settings.reviewer.chain for a in ("--tier", t)]
                group.start("reviewer", *tiers, *metrics(1))
            else:
                tiers = ["--tier", "openai", "--base-url", llm.base_url]
                group.start("reviewer", *tiers, *metrics(1), env=_scripted_llm_env(setup))
            group.start("monitor", *metrics(2))
            group.start("trainer", *setup.trainer_args, *metrics(3), env=setup.trainer_env)
            if port:
                console.print(
                    f"metrics: http://127.0.0.1:{port}/metrics (worker), +1 reviewer, +2 monitor, "
                    "+3 trainer"
                )
            watch = Supervisor(group).check
            asyncio.run(_drive(broker.bootstrap, settings, setup.items, ledger, pacing, watch))
        except DemoStopped as exc:
            stopped = str(exc)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: stopping the roles and the broker[/]")
            return 130
        finally:
            with console.status("stopping roles"):
                group.stop_all()
                if llm is not None:
                    llm.stop()
    path = _summary(ledger, workdir)
    chart = plot_history(ledger, workdir / "demo.png")
    missing = [k for k in ledger.gold if k not in ledger.fates]
    console.print(
        f"sent {ledger.sent}, accounted for {len(ledger.fates)}; per-message fates in {path}"
    )
    console.print(f"accuracy and cost over time: {chart}")
    if stopped is not None or missing:
        if stopped is not None:
            console.print(f"[red]stopped:[/] {stopped}")
        if missing:
            console.print(f"[red]{len(missing)} messages unaccounted for[/], e.g. {missing[:5]}")
        console.print(group.logs())
        return 1
    return 0
