"""``jurystream bench scale``: how throughput grows with workers, reviewer concurrency and data.

Three measurements, each of the real code on the embedded broker or the real round runner:

- scale-out: 1, 2, 4 ``jurystream worker`` processes (same jury, same settings) in one consumer
  group on a 4-partition posts topic. Once every worker reports partitions on /readyz and a
  warm-up feed has come back, a fixed feed is produced as fast as possible; the clock runs from
  the first send to the last output (label, review case or dead letter) read back. Throughput
  and p50/p99 latency of that burst (a post's wait in the backlog included), medians over
  repeats; ``scale_N_over_1`` is the median throughput with N workers over that with one. On a
  machine with fewer cores than workers the ratio measures contention, not scaling: the usable
  cores are recorded next to it.
- reviewer: one ``jurystream reviewer`` process with the openai tier against the project's
  OpenAI-compatible test server answering every request after a fixed latency, at each
  concurrency. Cases are produced to the review topic as fast as possible; cases/s is counted
  up to the last label read back. The ideal is ``concurrency / latency``.
- training: one refinement round (``RoundRunner.run``, gate evaluation included) per juror kind
  on a fixed number of labeled samples, reported as seconds per 1,000 samples.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from jurystream.bench.perf import StreamDriver, cycle, machine_info, stage
from jurystream.config import Settings, Topic, TopicSettings, TrainerSettings
from jurystream.models.rules.continual import Example
from jurystream.models.serving.juror import read_manifest
from jurystream.models.serving.registry import Registry
from jurystream.models.training.datasets import LabeledSet
from jurystream.models.training.rounds import RoundRunner
from jurystream.models.training.store import TrainingStore
from jurystream.progress import progress_bar
from jurystream.stream.broker import EmbeddedBroker, ensure_topics
from jurystream.stream.processes import RoleGroup, RoleProcess
from jurystream.stream.security import client_kwargs
from jurystream.stream.transport import FETCH_MAX_WAIT_MS
from jurystream.testing.openai_server import OpenAIServer, Reply

HEADLINE_KEYS = ("reviewer_over_ideal", "scale_2_over_1", "scale_4_over_1")
TARGET_REVIEWER_OVER_IDEAL = 0.8  # of concurrency ÷ latency: the reviewer keeps its calls busy
BENCH_KEY_ENV = "JURYSTREAM_BENCH_OPENAI_KEY"  # the reviewer's key variable; the server ignores it
BENCH_MODEL = "bench-model"
READY_TIMEOUT_S = 120.0

Advance = Callable[[int], None]


@dataclass(frozen=True)
class ScaleConfig:
    """Sizes of one run; the defaults take about ten minutes on 2 cores (MiniLM round included)."""

    workers: tuple[int, ...] = (1, 2, 4)
    partitions: int = 4
    messages: int = 2000  # posts per scale-out repeat
    repeats: int = 3
    batch_size: int = 32
    threads: int = 1
    policy: str = "unanimous"
    threshold: float = 0.7
    concurrencies: tuple[int, ...] = (8, 32, 64)
    # Latency at one offered load for every worker count: this share of the 1-worker throughput.
    paced_load: float = 0.5
    paced_seconds: float = 6.0
    review_latency_s: float = 0.3  # the test server's answer delay
    review_seconds: float = 8.0  # cases per concurrency: the ideal rate × this
    train_samples: int = 1000
    gold_size: int = 200  # held-out texts the round's gate scores both versions on
    minilm: bool = True
    timeout_s: float = 300.0


@dataclass
class WorkerScale:
    workers: int
    throughput: list[float]  # posts/s per repeat
    p50_ms: list[float]
    p99_ms: list[float]
    paced: dict[str, float] = field(default_factory=dict)  # rate_per_s, p50_ms, p99_ms

    @property
    def median(self) -> float:
        return statistics.median(self.throughput)

    def summary(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "throughput_per_s": self.median,
            "p50_ms": statistics.median(self.p50_ms),
            "p99_ms": statistics.median(self.p99_ms),
            "paced": self.paced,
            "repeats": {
                "throughput_per_s": self.throughput,
                "p50_ms": self.p50_ms,
                "p99_ms": self.p99_ms,
            },
        }


@dataclass
class ReviewerRate:
    concurrency: int
    latency_s: float
    cases: int
    seconds: float  # first case sent → last label read back
    steady_per_s: float  # between the 10th and the 90th percentile label: no start, no drain
    max_in_flight_seen: int  # the most requests the server held at once
    cpu_seconds: float  # the reviewer process's CPU during the burst: near ``seconds`` = CPU-bound

    @property
    def cases_per_s(self) -> float:
        return self.cases / self.seconds

    @property
    def ideal_per_s(self) -> float:
        return self.concurrency / self.latency_s

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "cases_per_s": self.cases_per_s,
            "ideal_per_s": self.ideal_per_s,
            "over_ideal": self.cases_per_s / self.ideal_per_s,
            "steady_over_ideal": self.steady_per_s / self.ideal_per_s,
            "cpu_ms_per_case": 1000 * self.cpu_seconds / self.cases,
            "cpu_share": self.cpu_seconds / self.seconds,
        }


@dataclass
class RoundTime:
    juror: str
    kind: str
    samples: int
    seconds: float
    outcome: str

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "seconds_per_1000": per_thousand(self.seconds, self.samples)}


@dataclass
class ScaleResult:
    machine: dict[str, Any]
    config: dict[str, Any]
    command: str
    jurors: list[str]
    workers: list[dict[str, Any]]
    reviewer: list[dict[str, Any]]
    training: list[dict[str, Any]]
    headline: dict[str, float]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- pure figures ------------------------------------------------------------------------------


def scale_ratios(throughput: Mapping[int, float]) -> dict[str, float]:
    """``scale_N_over_1`` for every N > 1 measured: throughput with N workers ÷ with one."""
    if 1 not in throughput or throughput[1] <= 0:
        raise ValueError("scale ratios need a positive throughput with 1 worker")
    return {f"scale_{n}_over_1": throughput[n] / throughput[1] for n in sorted(throughput) if n > 1}


def reviewer_over_ideal(rates: Sequence[ReviewerRate]) -> float:
    """The headline: the worst measured ÷ ideal over the concurrencies (a target must hold at
    every concurrency, not at the best one)."""
    if not rates:
        raise ValueError("no reviewer measurement")
    return min(r.cases_per_s / r.ideal_per_s for r in rates)


def steady_rate(arrivals: Sequence[float]) -> float:
    """Labels per second between the 10th and 90th percentile arrival (sorted seconds): the
    rate once the first requests are answered and before the last wave drains."""
    n = len(arrivals)
    lo, hi = n // 10, n - 1 - n // 10
    if hi <= lo or arrivals[hi] <= arrivals[lo]:
        raise ValueError(f"too few labels ({n}) for a steady rate")
    return (hi - lo) / (arrivals[hi] - arrivals[lo])


def per_thousand(seconds: float, samples: int) -> float:
    return seconds * 1000 / samples


def review_cases_for(concurrency: int, latency_s: float, seconds: float) -> int:
    """Enough cases to keep the reviewer at its ideal rate for ``seconds`` (at least 4 rounds of
    its concurrency, so start and drain are a small part of the run)."""
    return max(4 * concurrency, int(np.ceil(concurrency / latency_s * seconds)))


def update_headlines(path: Path, figures: Mapping[str, float]) -> dict[str, Any]:
    """Set ``figures`` at the top level of the JSON file at ``path``, keeping everything else.

    Several benches own keys of docs/benchmarks/perf.json (perf: e2e and latency, scale: the
    scale-out and reviewer ratios); each writes its own and must not drop the others'.
    """
    data: dict[str, Any] = {}
    if path.is_file():
        loaded = json.loads(path.read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} does not hold a JSON object; move it aside and rerun")
        data = loaded
    data.update({k: float(v) for k, v in figures.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return int(reply.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(roles: Sequence[tuple[RoleProcess, int]], timeout_s: float) -> None:
    """Until every role's /readyz answers 200 at once: each has joined the group and holds
    partitions, so the rebalances of the start-up are over before anything is timed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(not role.alive for role, _ in roles):
            raise RuntimeError("a role exited while starting")
        if all(_ready(port) for _, port in roles):
            return
        time.sleep(0.3)
    raise TimeoutError(f"roles not ready (partitions assigned) within {timeout_s:.0f}s")


def _start_role(
    group: RoleGroup, args: Sequence[str], env: dict[str, str]
) -> tuple[RoleProcess, int]:
    """The role with its /readyz on a free loopback port (the port is returned with it)."""
    port = free_port()
    metrics = {"JURYSTREAM_METRICS__PORT": str(port), "JURYSTREAM_METRICS__HOST": "127.0.0.1"}
    return group.start(*args, env={**env, **metrics}), port


def _topics(group: RoleGroup, partitions: int) -> None:
    """Every topic of the group with ``partitions`` before a role creates one with its own."""
    names = TopicSettings(prefix=group.prefix).all_names()
    asyncio.run(ensure_topics(group.bootstrap, names, partitions))


# -- scale-out ---------------------------------------------------------------------------------


def measure_workers(
    bootstrap: str,
    juror_dirs: Sequence[Path],
    posts: Sequence[str],
    n_workers: int,
    config: ScaleConfig,
    workdir: Path,
    progress: Progress,
    reference_per_s: float | None,
) -> WorkerScale:
    """``n_workers`` worker processes in one group on fresh topics: ``config.repeats`` bursts,
    then posts paced at ``config.paced_load`` × ``reference_per_s`` (the 1-worker throughput;
    None: this group's own) for latency at the same offered load whatever the worker count."""
    group = RoleGroup(bootstrap, workdir / f"workers-{n_workers}")
    _topics(group, config.partitions)
    env = {
        "JURYSTREAM_JURY__THREADS": str(config.threads),
        "JURYSTREAM_TOPICS__PARTITIONS": str(config.partitions),
    }
    args = ["worker", *[a for d in juror_dirs for a in ("--juror", str(d))]]
    args += ["--policy", config.policy, "--threshold", str(config.threshold)]
    args += ["--batch-size", str(config.batch_size)]
    try:
        workers = [_start_role(group, args, env) for _ in range(n_workers)]
        wait_ready(workers, READY_TIMEOUT_S)
        first = workers[0][0].proc
        assert first is not None
        return asyncio.run(
            _bursts(group, first.pid, posts, n_workers, config, progress, reference_per_s)
        )
    except Exception as exc:
        raise RuntimeError(f"{exc}\nworker logs:\n{group.logs()}") from exc
    finally:
        group.stop_all()


async def _bursts(
    group: RoleGroup,
    pid: int,
    posts: Sequence[str],
    n_workers: int,
    config: ScaleConfig,
    progress: Progress,
    reference_per_s: float | None,
) -> WorkerScale:
    driver = StreamDriver(group.bootstrap, group.topic, pid)
    await driver.start()
    result = WorkerScale(n_workers, [], [], [])
    tag = f"{n_workers} worker(s):"
    try:
        # Every worker labels a batch of its own partitions before the clock starts.
        warm_up = cycle(posts, config.batch_size * config.partitions)
        with stage(progress, f"{tag} warm-up", len(warm_up)) as advance:
            await driver.run(warm_up, None, config.timeout_s, advance)
        total = len(posts) * config.repeats
        with stage(progress, f"{tag} {config.repeats} bursts", total) as advance:
            for _ in range(config.repeats):
                run = await driver.run(posts, None, config.timeout_s, advance)
                lat = np.asarray(run.latencies_ms)
                result.throughput.append(run.sent / run.seconds)
                result.p50_ms.append(float(np.percentile(lat, 50)))
                result.p99_ms.append(float(np.percentile(lat, 99)))
        rate = config.paced_load * (reference_per_s or result.median)
        n = max(config.batch_size, int(rate * config.paced_seconds))
        with stage(progress, f"{tag} paced at {rate:.0f}/s", n) as advance:
            run = await driver.run(cycle(posts, n), rate, config.timeout_s, advance)
        lat = np.asarray(run.latencies_ms)
        result.paced = {
            "rate_per_s": rate,
            "messages": n,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
        }
    finally:
        await driver.stop()
    return result


# -- reviewer ----------------------------------------------------------------------------------


def review_case(i: int, run: str) -> dict[str, Any]:
    """An escalated post as the worker writes it to the review topic."""
    return {
        "id": f"{run}-{i:07d}",
        "text": f"post {i} of the reviewer bench",
        "jury_label": "offensive",
        "jury_confidence": 0.55,
        "votes": [
            {"juror": "a", "label": "offensive", "confidence": 0.55},
            {"juror": "b", "label": "not-offensive", "confidence": 0.6},
        ],
        "reason": "jurors disagree",
        "model_versions": {"a": "1", "b": "1"},
        "received_ms": time.time() * 1000,
    }


REVIEW_LABELS = {"not-offensive": "anything else", "offensive": "insults, slurs or profanity"}


def measure_reviewer(
    bootstrap: str,
    server: OpenAIServer,
    concurrency: int,
    config: ScaleConfig,
    workdir: Path,
    advance: Advance,
) -> ReviewerRate:
    """One reviewer process at ``concurrency`` on fresh topics; one burst of cases."""
    group = RoleGroup(bootstrap, workdir / f"reviewer-{concurrency}")
    _topics(group, config.partitions)
    env = {
        BENCH_KEY_ENV: "sk-bench",
        "JURYSTREAM_TOPICS__PARTITIONS": str(config.partitions),
        "JURYSTREAM_REVIEWER__CHAIN": '["openai"]',
        "JURYSTREAM_REVIEWER__BASE_URL": server.base_url,
        "JURYSTREAM_REVIEWER__MODEL": BENCH_MODEL,
        "JURYSTREAM_REVIEWER__API_KEY_ENV": BENCH_KEY_ENV,
        "JURYSTREAM_REVIEWER__PRICES": json.dumps({BENCH_MODEL: {"input": 0.15, "output": 0.6}}),
        "JURYSTREAM_REVIEWER__LABEL_DESCRIPTIONS": json.dumps(REVIEW_LABELS),
        "JURYSTREAM_REVIEWER__CONCURRENCY": str(concurrency),
    }
    cases = review_cases_for(concurrency, config.review_latency_s, config.review_seconds)
    try:
        reviewer = _start_role(group, ["reviewer"], env)
        wait_ready([reviewer], READY_TIMEOUT_S)
        # Warm-up: the client's connections are open and the partitions fetched once.
        asyncio.run(_review_burst(group, 0, concurrency, config.timeout_s, None))
        server.max_in_flight = 0
        assert reviewer[0].proc is not None
        process = psutil.Process(reviewer[0].proc.pid)
        cpu_before = sum(process.cpu_times()[:2])
        arrivals = asyncio.run(_review_burst(group, 1, cases, config.timeout_s, advance))
        cpu_seconds = sum(process.cpu_times()[:2]) - cpu_before
    except Exception as exc:
        raise RuntimeError(f"{exc}\nreviewer log:\n{group.logs()}") from exc
    finally:
        group.stop_all()
    return ReviewerRate(
        concurrency,
        config.review_latency_s,
        cases,
        arrivals[-1],
        steady_rate(arrivals),
        server.max_in_flight,
        cpu_seconds,
    )


async def _review_burst(
    group: RoleGroup, run: int, n: int, timeout_s: float, advance: Advance | None
) -> list[float]:
    """Produce ``n`` cases as fast as possible; when each label was read back, in seconds from
    the first send, in order."""
    consumer = AIOKafkaConsumer(
        group.topic(Topic.LABELS),
        group.topic(Topic.DEAD_LETTERS),
        **client_kwargs(group.bootstrap),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    producer = AIOKafkaProducer(**client_kwargs(group.bootstrap), linger_ms=2)
    await consumer.start()
    await producer.start()
    tag = f"r{run}"
    cases = [review_case(i, tag) for i in range(n)]
    wanted = {c["id"] for c in cases}
    seen: set[str] = set()
    arrivals: list[float] = []
    dead = 0
    started = time.monotonic()

    async def send() -> None:
        for case in cases:
            key = case["id"].encode()
            await producer.send(group.topic(Topic.REVIEW), json.dumps(case).encode(), key=key)
        await producer.flush()

    sending = asyncio.create_task(send())
    try:
        while len(seen) < n:
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"reviewer labeled {len(seen)}/{n} cases in {timeout_s:.0f}s")
            batches = await consumer.getmany(timeout_ms=50, max_records=10_000)
            fresh = 0
            for tp, messages in batches.items():
                for m in messages:
                    key = m.key.decode() if m.key is not None else ""
                    if key in wanted and key not in seen:
                        seen.add(key)
                        arrivals.append(time.monotonic() - started)
                        fresh += 1
                        dead += tp.topic == group.topic(Topic.DEAD_LETTERS)
            if advance and fresh:
                advance(fresh)
        await sending
    finally:
        sending.cancel()
        await producer.stop()
        await consumer.stop()
    if dead:
        raise RuntimeError(f"{dead} of {n} review cases went to dead-letters")
    return arrivals


def latency_answer(latency_s: float) -> Callable[[dict[str, Any]], Reply]:
    """Every request answered "offensive" after ``latency_s``: the provider's think time."""
    content = json.dumps({"label": "offensive", "confidence": 0.9})
    return lambda body: Reply(content, delay_s=latency_s)


# -- training ----------------------------------------------------------------------------------


def time_round(
    juror_dir: Path,
    kind: str,
    samples: LabeledSet,
    gold: Sequence[tuple[str, str]],
    trainer: TrainerSettings,
    workdir: Path,
) -> RoundTime:
    """One round for one juror on ``samples`` as new reviewed samples (no seed replay), timed
    from start to the gate's decision (and publication when promoted)."""
    registry = Registry(workdir / "registry")
    registry.publish(juror_dir)
    name = read_manifest(juror_dir).name
    store = TrainingStore(workdir / "trainer.sqlite")
    store.add_hard_samples(
        Example(f"s{i}", text, samples.label_names[y], "hard", "oracle", 1.0)
        for i, (text, y) in enumerate(zip(samples.texts, samples.labels, strict=True))
    )
    runner = RoundRunner(store, registry, trainer, gold, workdir / "work")
    started = time.perf_counter()
    result = runner.run("bench")
    seconds = time.perf_counter() - started
    if result is None:
        raise RuntimeError("the round found no new samples")
    (candidate,) = result.candidates
    if candidate.outcome == "failed":
        raise RuntimeError(f"round for {candidate.juror} failed: {candidate.reason}")
    return RoundTime(name, kind, len(samples), seconds, candidate.outcome)


# -- the whole bench ---------------------------------------------------------------------------


def run_scale(
    juror_dirs: Sequence[Path],
    posts: Sequence[str],
    train_jurors: Mapping[str, Path],
    samples: LabeledSet,
    gold: Sequence[tuple[str, str]],
    settings: Settings,
    config: ScaleConfig,
    workdir: Path,
    command: str,
    console: Console | None = None,
) -> ScaleResult:
    """Scale-out, reviewer and training measurements, one after the other.

    ``train_jurors``: kind → juror dir (e.g. ``{"tfidf": …, "minilm": …}``), each refined once.
    """
    console = console or Console(stderr=True)
    for directory in [*juror_dirs, *train_jurors.values()]:
        read_manifest(directory)  # a wrong path fails here, not in a worker's log minutes later
    began = time.monotonic()
    machine = machine_info()
    feed = cycle(posts, config.messages)
    trainer = settings.trainer.model_copy(
        update={"jurors": [], "replay_ratio": None, "seed_data": None}
    )
    workers: list[WorkerScale] = []
    rates: list[ReviewerRate] = []
    rounds: list[RoundTime] = []
    with progress_bar(console=console) as progress, EmbeddedBroker() as broker:
        for n in config.workers:
            one = next((w.median for w in workers if w.workers == 1), None)
            measured = measure_workers(
                broker.bootstrap, juror_dirs, feed, n, config, workdir, progress, one
            )
            workers.append(measured)
        with OpenAIServer(latency_answer(config.review_latency_s)) as server:
            for c in config.concurrencies:
                cases = review_cases_for(c, config.review_latency_s, config.review_seconds)
                with stage(progress, f"reviewer at concurrency {c}", cases) as advance:
                    rates.append(
                        measure_reviewer(broker.bootstrap, server, c, config, workdir, advance)
                    )
    with progress_bar(console=console) as progress:
        for kind, directory in train_jurors.items():
            task = progress.add_task(f"training round: {kind} on {len(samples)} samples", total=1)
            rounds.append(
                time_round(directory, kind, samples, gold, trainer, workdir / f"round-{kind}")
            )
            progress.update(task, completed=1)

    by_workers = {w.workers: w.median for w in workers}
    headline: dict[str, float] = {}
    if 1 in by_workers:
        headline.update(scale_ratios(by_workers))
    if rates:
        headline["reviewer_over_ideal"] = reviewer_over_ideal(rates)
    usable = machine["usable_cores"]
    notes = [
        "reviewer_over_ideal is the minimum over the concurrencies measured",
        "worker latency is that of a burst produced as fast as possible: the wait in the "
        "backlog is included, it is not latency at a given load",
    ]
    if usable < max(config.workers, default=1):
        notes.append(
            f"{usable} usable cores for up to {max(config.workers)} worker processes: "
            "beyond the cores the ratios measure contention, not scale-out"
        )
    return ScaleResult(
        machine={**machine, "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        config=asdict(config),
        command=command,
        jurors=[str(d) for d in juror_dirs],
        workers=[w.summary() for w in workers],
        reviewer=[r.summary() for r in rates],
        training=[r.summary() for r in rounds],
        headline=headline,
        seconds=round(time.monotonic() - began, 1),
        notes=notes,
    )


def write_json(result: ScaleResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return path


def plot(result: ScaleResult, path: Path) -> Path:
    """Throughput and p99 against workers; reviewer cases/s against concurrency, ideal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    n = [w["workers"] for w in result.workers]
    left.plot(n, [w["throughput_per_s"] for w in result.workers], "o-", label="posts/s")
    left.set_xlabel("worker processes (4 partitions)")
    left.set_ylabel("throughput (posts/s)")
    left.set_xticks(n)
    left.set_ylim(bottom=0)
    p99 = left.twinx()
    p99.plot(n, [w["p99_ms"] for w in result.workers], "s--", color="tab:red", label="p99, burst")
    paced = [w["paced"]["p99_ms"] for w in result.workers]
    rate = result.workers[0]["paced"]["rate_per_s"] if result.workers else 0.0
    p99.plot(n, paced, "^:", color="tab:red", label=f"p99 at {rate:.0f} posts/s")
    p99.set_ylabel("p99 latency (ms)", color="tab:red")
    p99.set_yscale("log")
    lines = left.get_legend_handles_labels()
    more = p99.get_legend_handles_labels()
    left.legend(lines[0] + more[0], lines[1] + more[1], loc="center right")
    cores = result.machine["usable_cores"]
    left.set_title(f"scale-out ({cores} usable cores)")
    c = [r["concurrency"] for r in result.reviewer]
    right.plot(c, [r["cases_per_s"] for r in result.reviewer], "o-", label="measured")
    right.plot(c, [r["ideal_per_s"] for r in result.reviewer], "k:", label="ideal: c ÷ latency")
    right.set_xlabel("reviewer concurrency")
    right.set_ylabel("cases/s")
    right.set_xticks(c)
    right.set_ylim(bottom=0)
    latency_ms = 1000 * result.config["review_latency_s"]
    right.set_title(f"reviewer against a {latency_ms:.0f} ms endpoint")
    right.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def tables(result: ScaleResult) -> list[Table]:
    scale = Table(title="scale-out: workers on 4 partitions (medians)")
    paced = result.workers[0]["paced"]["rate_per_s"] if result.workers else 0.0
    columns = ("workers", "posts/s", "× 1 worker", "burst p50 ms", "burst p99 ms")
    for col in (*columns, f"p50 ms at {paced:.0f}/s", f"p99 ms at {paced:.0f}/s"):
        scale.add_column(col, justify="right")
    base = result.workers[0]["throughput_per_s"] if result.workers else 0.0
    for w in result.workers:
        ratio = w["throughput_per_s"] / base if base else float("nan")
        scale.add_row(
            str(w["workers"]),
            f"{w['throughput_per_s']:.0f}",
            f"{ratio:.2f}",
            f"{w['p50_ms']:.0f}",
            f"{w['p99_ms']:.0f}",
            f"{w['paced']['p50_ms']:.0f}",
            f"{w['paced']['p99_ms']:.0f}",
        )
    review = Table(title="reviewer against the test server")
    for col in ("concurrency", "cases", "cases/s", "steady/s", "ideal/s", "measured ÷ ideal"):
        review.add_column(col, justify="right")
    for r in result.reviewer:
        review.add_row(
            str(r["concurrency"]),
            str(r["cases"]),
            f"{r['cases_per_s']:.1f}",
            f"{r['steady_per_s']:.1f}",
            f"{r['ideal_per_s']:.1f}",
            f"{r['over_ideal']:.2f}",
        )
    train = Table(title="training round")
    for col in ("juror", "kind", "samples", "seconds", "s per 1,000", "outcome"):
        train.add_column(col)
    for t in result.training:
        train.add_row(
            t["juror"],
            t["kind"],
            str(t["samples"]),
            f"{t['seconds']:.1f}",
            f"{t['seconds_per_1000']:.1f}",
            t["outcome"],
        )
    return [scale, review, train]
