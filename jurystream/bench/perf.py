"""``jurystream bench perf``: how fast the jury labels, in process and through Kafka, in one run.

Everything is measured on the same machine, the same texts and the same jurors, interleaved in
every repeat, so a neighbour's burst of CPU hits all of them alike and the ratios stay fair:

- machine limit: raw onnxruntime throughput of the jurors (tokenizing included, no vote, no
  Kafka) using every core, the best of batch sizes × two ways to use the cores (intra-op
  threads per session, or ``models.parallel``'s pool); every other line is a ratio to it;
- ceiling: ``Jury.decide`` on one thread in the worker's batch size (the reference before the
  worker used every core), and every core: the same with the worker's inference pool;
- PyTorch: the same jurors' checkpoints as ``transformers`` pipelines plus the same vote, i.e.
  what a user would write without this project (same thread count as onnxruntime);
- cascade: the same jurors with the cascade policy (cheapest first, stop when confident);
- end-to-end: a real ``jurystream worker`` subprocess on the embedded broker; N posts are
  produced and the clock stops when the last output (label, review or dead letter) is read
  back. Nothing is subtracted: broker, serialisation, batching and polling are all included.

Then the worker is driven by a paced producer at 25/50/75% of the measured end-to-end capacity
for p50/p99 latency (send → output read back), and its resident memory is sampled throughout.
Medians over repeats; ratios are medians of the per-repeat ratios.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import (
    Progress,
)
from rich.table import Table

from jurystream.config import Settings, Topic
from jurystream.models.rules.voting import POLICIES, Decision
from jurystream.models.serving.juror import Juror, load_juror, read_manifest
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.kinds import kept_checkpoint
from jurystream.models.serving.parallel import InferencePool, usable_cores
from jurystream.models.training.datasets import LabeledSet
from jurystream.progress import progress_bar
from jurystream.stream.broker import EmbeddedBroker, ensure_topics, free_port
from jurystream.stream.processes import RoleGroup
from jurystream.stream.security import client_kwargs
from jurystream.stream.transport import FETCH_MAX_WAIT_MS

# The targets the project holds the worker to, each reported as met or not, with its value.
TARGET_E2E_OVER_LIMIT = 0.85
TARGET_P99_MS = {0.25: 50.0, 0.5: 100.0}  # p99 end-to-end latency at a share of capacity
TARGET_ONNX_OVER_TORCH = 5.0
TARGET_CASCADE_SPEEDUP = 1.8
TARGET_CASCADE_LOSS_POINTS = 0.5
TARGET_RSS_MB = 300.0  # three int8 MiniLM jurors
# Worker stages read from its own metrics (jurystream_stage_latency_seconds).
STAGES = ("batch_wait", "inference", "produce")

Advance = Callable[[int], None]


@dataclass(frozen=True)
class PerfConfig:
    """Sizes of one run; the defaults take a few minutes on 2 cores."""

    texts: int = 256  # texts per in-process throughput measurement
    messages: int = 1000  # posts per end-to-end repeat
    repeats: int = 3
    batch_size: int = 32  # the worker's micro-batch (settings.jury.batch_size)
    threads: int = 1  # onnxruntime (and torch) threads per juror (settings.jury.threads)
    inference_threads: int | None = None  # the worker's pool; None: usable cores
    limit_batches: tuple[int, ...] = (8, 16, 32, 64)  # batch sizes tried for the machine limit
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS  # the worker's and the bench consumer's
    linger_ms: int = 2  # the worker's and the bench producer's
    policy: str = "unanimous"  # the worker's policy for the ceiling and end-to-end runs
    threshold: float = 0.7
    cascade_threshold: float = 0.9  # a cascade tier answers alone when this sure
    loads: tuple[float, ...] = (0.25, 0.5, 0.75)
    latency_seconds: float = 8.0  # paced sending per load level
    timeout_s: float = 180.0  # per stream run: a stuck worker fails the bench, not hangs it


@dataclass
class RepeatResult:
    limit: float
    limit_config: str  # which batch size and way of using the cores reached it
    ceiling: float
    every_core: float
    torch: float
    cascade: float
    end_to_end: float

    def ratios(self) -> dict[str, float]:
        return {
            "e2e_over_limit": self.end_to_end / self.limit,
            "e2e_over_ceiling": self.end_to_end / self.ceiling,
            "every_core_over_ceiling": self.every_core / self.ceiling,
            "onnx_over_torch": self.ceiling / self.torch,
            "cascade_over_full": self.cascade / self.every_core,
        }


@dataclass
class LatencyResult:
    load: float
    rate_per_s: float
    messages: int
    achieved_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float  # posts per batch the worker scored
    stages_ms: dict[str, float]  # mean per post (batch_wait) or per batch (inference, produce)


@dataclass
class Target:
    name: str
    goal: str
    value: float
    met: bool


@dataclass
class PerfResult:
    machine: dict[str, Any]
    config: dict[str, Any]
    jurors: list[dict[str, Any]]
    repeats: list[RepeatResult]
    throughput: dict[str, float]
    ratios: dict[str, float]
    accuracy: dict[str, float]
    latency: list[LatencyResult]
    rss_mb: dict[str, float]
    # Share of one core the broker and the worker burn with no posts flowing: what a short
    # fetch wait costs in idle polling.
    idle_cpu: dict[str, float] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headlines(self) -> dict[str, float]:
        """The headline figures, under the keys docs/benchmarks/perf.json keeps."""
        p99 = {row.load: row.p99_ms for row in self.latency}
        out = {"e2e_over_limit": self.ratios["e2e_over_limit"], "peak_rss_mb": self.rss_mb["peak"]}
        for load, key in ((0.25, "p99_ms_at_25"), (0.5, "p99_ms_at_50")):
            if load in p99:
                out[key] = p99[load]
        return out


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, including how busy the machine was."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import onnxruntime

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
    }


# -- in-process measurements -------------------------------------------------------------------


def _batches(texts: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(texts), size):
        yield texts[i : i + size]


def onnx_rate(
    jury: Jury,
    texts: Sequence[str],
    batch_size: int,
    advance: Advance | None = None,
    vote: bool = True,
) -> float:
    """Texts per second of ``Jury.decide`` (or, without ``vote``, of the jurors' probabilities
    alone) in batches of ``batch_size``, tokenizing included."""
    score = jury.decide if vote else jury.probabilities
    score(texts[:batch_size])  # warm-up: first-call allocations are not throughput
    started = time.perf_counter()
    for batch in _batches(texts, batch_size):
        score(batch)
        if advance:
            advance(len(batch))
    return len(texts) / (time.perf_counter() - started)


def machine_limit(
    one_thread: Jury,
    intra_op: Jury,
    pool: InferencePool,
    texts: Sequence[str],
    batches: Sequence[int],
    advance: Advance | None = None,
) -> tuple[float, str]:
    """The jurors' raw throughput on every core: the best of each batch size × (every core as
    intra-op threads of each session, jurors in turn | the worker's pool, one thread per
    session). ``one_thread`` and ``intra_op`` hold the same jurors loaded with 1 and with
    ``pool.threads`` intra-op threads."""
    pooled = replace(one_thread, pool=pool)
    best = (0.0, "")
    for batch in batches:
        for name, jury in ((f"{pool.threads} intra-op threads", intra_op), ("pool", pooled)):
            rate = onnx_rate(jury, texts, batch, advance, vote=False)
            best = max(best, (rate, f"batch {batch}, {name}"))
    return best


class TorchJury:
    """The same jurors as ``transformers`` text-classification pipelines, voting like the jury.

    This is the baseline a user would write: load each fine-tuned checkpoint with
    ``transformers.pipeline`` (fp32 PyTorch), score every text with each, apply the same policy.
    """

    def __init__(
        self,
        names: Sequence[str],
        checkpoints: Sequence[Path],
        labels: Sequence[str],
        policy: str,
        threads: int,
    ) -> None:
        import torch
        from transformers import pipeline

        torch.set_num_threads(threads)
        self.labels = tuple(labels)
        self.names = list(names)
        self.policy = POLICIES[policy]
        self.pipes = [
            pipeline("text-classification", model=str(p), tokenizer=str(p), device=-1, top_k=None)
            for p in checkpoints
        ]

    def probabilities(self, texts: Sequence[str], max_length: int = 128) -> np.ndarray:
        """Shape (texts, jurors, labels), labels in the jury's order."""
        out = np.zeros((len(texts), len(self.pipes), len(self.labels)), dtype=np.float32)
        for k, pipe in enumerate(self.pipes):
            answers: Any = pipe(
                list(texts), batch_size=len(texts), truncation=True, max_length=max_length
            )
            for i, scores in enumerate(answers):
                for item in scores:
                    out[i, k, self.labels.index(item["label"])] = item["score"]
        return out

    def decide(self, texts: Sequence[str], threshold: float) -> list[Decision]:
        return [
            self.policy(p, self.names, self.labels, threshold) for p in self.probabilities(texts)
        ]


def torch_rate(
    jury: TorchJury,
    texts: Sequence[str],
    batch_size: int,
    threshold: float,
    advance: Advance | None = None,
) -> float:
    jury.decide(texts[:batch_size], threshold)
    started = time.perf_counter()
    for batch in _batches(texts, batch_size):
        jury.decide(batch, threshold)
        if advance:
            advance(len(batch))
    return len(texts) / (time.perf_counter() - started)


def decision_accuracy(decisions: Sequence[Decision], gold: Sequence[str]) -> float:
    """Accuracy of the jury's label (its best guess, escalated or not) against gold."""
    return float(np.mean([d.label == g for d, g in zip(decisions, gold, strict=True)]))


def batched_decide(jury: Jury, texts: Sequence[str], batch_size: int) -> list[Decision]:
    return [d for batch in _batches(texts, batch_size) for d in jury.decide(batch)]


# -- through the broker ------------------------------------------------------------------------


def stage_totals(metrics_url: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of the worker's stage-latency and batch-size histograms, read from its
    /metrics endpoint: differences between two reads give a load level's means."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    with urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("jurystream_stage_latency_seconds", "jurystream_batch_size"):
            continue
        for sample in family.samples:
            key = sample.labels.get("stage", "batch_size")
            if sample.name.endswith("_sum"):
                sums[key] = sample.value
            elif sample.name.endswith("_count"):
                counts[key] = sample.value
    return {k: (sums[k], counts.get(k, 0.0)) for k in sums}


def mean_between(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], key: str
) -> float:
    total, count = after.get(key, (0.0, 0.0))
    total0, count0 = before.get(key, (0.0, 0.0))
    return (total - total0) / (count - count0) if count > count0 else float("nan")


@dataclass
class StreamRun:
    sent: int
    seconds: float  # first send → last output read back
    latencies_ms: list[float]


class StreamDriver:
    """Sends posts to a running worker and reads its outputs back, timing every message."""

    def __init__(
        self,
        bootstrap: str,
        topic: Callable[[Topic], str],
        worker_pid: int,
        fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
        linger_ms: int = 2,
    ) -> None:
        self.bootstrap = bootstrap
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.linger_ms = linger_ms
        self.topic = topic
        self.worker = psutil.Process(worker_pid)
        self.rss_peak = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._runs = 0

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            self.topic(Topic.LABELS),
            self.topic(Topic.REVIEW),
            self.topic(Topic.DEAD_LETTERS),
            **client_kwargs(self.bootstrap),
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            # The instrument must not add latency: Tansu holds a fetch for the whole wait.
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        self._producer = AIOKafkaProducer(**client_kwargs(self.bootstrap), linger_ms=self.linger_ms)
        await self._consumer.start()
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._consumer is not None:
            await self._consumer.stop()

    def sample_rss(self) -> int:
        rss = int(self.worker.memory_info().rss)
        self.rss_peak = max(self.rss_peak, rss)
        return rss

    async def run(
        self,
        texts: Sequence[str],
        rate: float | None,
        timeout_s: float,
        advance: Advance | None = None,
    ) -> StreamRun:
        """Send ``texts`` (as fast as possible, or paced at ``rate``/s) and await every output."""
        assert self._producer is not None and self._consumer is not None
        self._runs += 1
        ids = [f"bench{self._runs}-{i:07d}" for i in range(len(texts))]
        sent_at: dict[str, float] = {}
        done_at: dict[str, float] = {}
        started = time.monotonic()

        async def send() -> None:
            assert self._producer is not None
            for i, (post_id, text) in enumerate(zip(ids, texts, strict=True)):
                if rate is not None:
                    ahead = started + i / rate - time.monotonic()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                value = json.dumps({"id": post_id, "text": text}).encode()
                sent_at[post_id] = time.monotonic()
                await self._producer.send(
                    self.topic(Topic.POSTS), value=value, key=post_id.encode()
                )
            await self._producer.flush()

        sending = asyncio.create_task(send())
        last_sample = 0.0
        try:
            while len(done_at) < len(ids):
                if time.monotonic() - started > timeout_s:
                    raise TimeoutError(
                        f"worker produced {len(done_at)}/{len(ids)} outputs in {timeout_s:.0f}s"
                    )
                if not self.worker.is_running() or self.worker.status() == psutil.STATUS_ZOMBIE:
                    raise RuntimeError("the worker process exited during the run")
                batches = await self._consumer.getmany(timeout_ms=50, max_records=10_000)
                now = time.monotonic()
                fresh = 0
                for messages in batches.values():
                    for m in messages:
                        key = m.key.decode() if m.key is not None else ""
                        if key in sent_at and key not in done_at:
                            done_at[key] = now
                            fresh += 1
                if advance and fresh:
                    advance(fresh)
                if now - last_sample > 0.2:
                    self.sample_rss()
                    last_sample = now
            await sending
        finally:
            sending.cancel()
        end = max(done_at.values())
        return StreamRun(len(ids), end - started, [(done_at[k] - sent_at[k]) * 1000 for k in ids])


# -- the whole bench ---------------------------------------------------------------------------


@contextmanager
def stage(progress: Progress, description: str, total: int) -> Iterator[Advance]:
    task = progress.add_task(description, total=total)
    yield lambda n: progress.advance(task, n)
    progress.update(task, completed=total)


def cycle(texts: Sequence[str], n: int) -> list[str]:
    return [texts[i % len(texts)] for i in range(n)]


def checkpoints_of(juror_dirs: Sequence[Path]) -> list[Path]:
    """The HF checkpoints kept with transformer jurors (the PyTorch baseline loads them)."""
    out = []
    for directory in juror_dirs:
        checkpoint = kept_checkpoint(directory, read_manifest(directory).kind)
        if checkpoint is None:
            raise ValueError(
                f"{directory}: the perf bench needs transformer jurors exported with their "
                "checkpoint (the PyTorch baseline runs the same weights)"
            )
        out.append(checkpoint)
    return out


def run_perf(
    juror_dirs: Sequence[Path],
    data: LabeledSet,
    settings: Settings,
    config: PerfConfig,
    workdir: Path,
    console: Console | None = None,
) -> PerfResult:
    """Run every measurement of the perf bench once, interleaved over ``config.repeats``."""
    console = console or Console(stderr=True)
    began = time.monotonic()
    machine = machine_info()
    jurors: list[Juror] = [load_juror(d, threads=config.threads) for d in juror_dirs]
    labels = tuple(jurors[0].labels)
    if tuple(data.label_names) != labels:
        raise ValueError(f"data labels {list(data.label_names)} differ from jurors' {list(labels)}")
    cores = config.inference_threads or usable_cores()
    pool = InferencePool(cores)
    full = Jury(tuple(jurors), config.policy, config.threshold)
    intra_op = Jury(
        tuple(load_juror(d, threads=cores) for d in juror_dirs), config.policy, config.threshold
    )
    cascade = Jury(tuple(jurors), "cascade", config.cascade_threshold, pool=pool)
    torch_jury = TorchJury(
        [j.name for j in jurors], checkpoints_of(juror_dirs), labels, config.policy, config.threads
    )
    texts = cycle(data.texts, config.texts)
    # The stream gets the very texts the ceiling is measured on (cycled): batches are padded to
    # their longest text, so other texts would mean another workload, not another pipeline.
    posts = cycle(texts, config.messages)

    full_decisions = batched_decide(full, data.texts, config.batch_size)
    cascade_decisions = batched_decide(cascade, data.texts, config.batch_size)
    gold = data.gold()
    accuracy = {
        "texts": len(data),
        "full_jury": decision_accuracy(full_decisions, gold),
        "cascade": decision_accuracy(cascade_decisions, gold),
        "cascade_juror_calls_per_text": float(np.mean([len(d.votes) for d in cascade_decisions])),
    }
    accuracy["cascade_loss_points"] = 100 * (accuracy["full_jury"] - accuracy["cascade"])

    repeats: list[RepeatResult] = []
    latency: list[LatencyResult] = []
    metrics_port = free_port()
    with EmbeddedBroker() as broker:
        group = RoleGroup(broker.bootstrap, workdir, env=settings.role_env())
        asyncio.run(
            ensure_topics(
                broker.bootstrap,
                [
                    group.topic(t)
                    for t in (Topic.POSTS, Topic.LABELS, Topic.REVIEW, Topic.DEAD_LETTERS)
                ],
                settings.topics.partitions,
            )
        )
        juror_args = [a for d in juror_dirs for a in ("--juror", str(d))]
        worker = group.start(
            "worker",
            *juror_args,
            "--policy",
            config.policy,
            "--threshold",
            str(config.threshold),
            "--batch-size",
            str(config.batch_size),
            env={
                "JURYSTREAM_JURY__THREADS": str(config.threads),
                "JURYSTREAM_JURY__INFERENCE_THREADS": str(cores),
                "JURYSTREAM_METRICS__PORT": str(metrics_port),
                "JURYSTREAM_METRICS__HOST": "127.0.0.1",
                "JURYSTREAM_BROKER__FETCH_MAX_WAIT_MS": str(config.fetch_max_wait_ms),
                "JURYSTREAM_BROKER__LINGER_MS": str(config.linger_ms),
            },
        )
        try:
            assert worker.proc is not None
            repeats, latency, rss, idle_cpu = asyncio.run(
                _measure(
                    broker.bootstrap,
                    group,
                    (worker.proc.pid, f"http://127.0.0.1:{metrics_port}/metrics", broker.pid),
                    (full, intra_op, cascade, torch_jury),
                    pool,
                    texts,
                    posts,
                    config,
                    console,
                )
            )
        except Exception as exc:
            raise RuntimeError(f"{exc}\nworker log:\n{group.logs()}") from exc
        finally:
            group.stop_all()
            pool.close()

    def median(name: str) -> float:
        return statistics.median(getattr(r, name) for r in repeats)

    ratios = {
        key: statistics.median(r.ratios()[key] for r in repeats) for key in repeats[0].ratios()
    }
    result = PerfResult(
        machine={**machine, "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        config={**asdict(config), "inference_threads": cores},
        jurors=[
            {"name": j.name, "version": j.version, "kind": read_manifest(d).kind}
            for j, d in zip(jurors, juror_dirs, strict=True)
        ],
        repeats=repeats,
        throughput={
            "limit": median("limit"),
            "ceiling": median("ceiling"),
            "every_core": median("every_core"),
            "end_to_end": median("end_to_end"),
            "torch": median("torch"),
            "cascade": median("cascade"),
        },
        ratios=ratios,
        accuracy=accuracy,
        latency=latency,
        rss_mb=rss,
        idle_cpu=idle_cpu,
        seconds=round(time.monotonic() - began, 1),
    )
    result.targets = targets(result)
    return result


async def _measure(
    bootstrap: str,
    group: RoleGroup,
    worker: tuple[int, str, int | None],
    juries: tuple[Jury, Jury, Jury, TorchJury],
    pool: InferencePool,
    texts: list[str],
    posts: list[str],
    config: PerfConfig,
    console: Console,
) -> tuple[list[RepeatResult], list[LatencyResult], dict[str, float], dict[str, float]]:
    full, intra_op, cascade, torch_jury = juries
    worker_pid, metrics_url, broker_pid = worker
    driver = StreamDriver(
        bootstrap, group.topic, worker_pid, config.fetch_max_wait_ms, config.linger_ms
    )
    await driver.start()
    repeats = []
    latency = []
    try:
        with progress_bar(console=console) as progress:
            # The worker has loaded its jurors and joined the group once a warm-up batch is
            # labeled; its start-up is not throughput.
            with stage(progress, "worker warm-up", config.batch_size) as advance:
                await driver.run(posts[: config.batch_size], None, config.timeout_s, advance)
            rss_idle = driver.sample_rss()
            idle_cpu = await _idle_cpu({"worker": worker_pid, "broker": broker_pid})
            for r in range(1, config.repeats + 1):
                tag = f"[{r}/{config.repeats}]"
                n = len(texts)
                grid = 2 * len(config.limit_batches) * n
                with stage(progress, f"{tag} machine limit (raw ONNX)", grid) as advance:
                    limit, limit_config = machine_limit(
                        full, intra_op, pool, texts, config.limit_batches, advance
                    )
                with stage(progress, f"{tag} ceiling (ONNX jury, 1 thread)", n) as advance:
                    ceiling = onnx_rate(full, texts, config.batch_size, advance)
                with stage(progress, f"{tag} every core (ONNX jury, pool)", n) as advance:
                    every_core = onnx_rate(
                        replace(full, pool=pool), texts, config.batch_size, advance
                    )
                with stage(progress, f"{tag} PyTorch pipelines", n) as advance:
                    torch = torch_rate(
                        torch_jury, texts, config.batch_size, config.threshold, advance
                    )
                with stage(progress, f"{tag} cascade", n) as advance:
                    fast = onnx_rate(cascade, texts, config.batch_size, advance)
                with stage(progress, f"{tag} end-to-end (worker)", len(posts)) as advance:
                    run = await driver.run(posts, None, config.timeout_s, advance)
                repeats.append(
                    RepeatResult(
                        limit,
                        limit_config,
                        ceiling,
                        every_core,
                        torch,
                        fast,
                        run.sent / run.seconds,
                    )
                )
            capacity = statistics.median(r.end_to_end for r in repeats)
            for load in config.loads:
                rate = load * capacity
                n = max(config.batch_size, int(rate * config.latency_seconds))
                with stage(progress, f"latency at {load:.0%} ({rate:.0f}/s)", n) as advance:
                    before = stage_totals(metrics_url)
                    run = await driver.run(cycle(posts, n), rate, config.timeout_s, advance)
                    after = stage_totals(metrics_url)
                lat = np.asarray(run.latencies_ms)
                latency.append(
                    LatencyResult(
                        load,
                        rate,
                        n,
                        n / run.seconds,
                        float(np.percentile(lat, 50)),
                        float(np.percentile(lat, 99)),
                        mean_between(before, after, "batch_size"),
                        {k: 1000 * mean_between(before, after, k) for k in STAGES},
                    )
                )
    finally:
        await driver.stop()
    rss = {"idle_after_load": rss_idle / 2**20, "peak": driver.rss_peak / 2**20}
    return repeats, latency, rss, idle_cpu


async def _idle_cpu(pids: dict[str, int | None], seconds: float = 5.0) -> dict[str, float]:
    """CPU seconds per second of each process while nothing is sent."""
    procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid is not None}
    before = {name: sum(p.cpu_times()[:2]) for name, p in procs.items()}
    await asyncio.sleep(seconds)
    return {name: (sum(p.cpu_times()[:2]) - before[name]) / seconds for name, p in procs.items()}


def targets(result: PerfResult) -> list[Target]:
    """The targets against what was measured; ``met`` is never assumed."""
    r, acc = result.ratios, result.accuracy
    loss = acc["cascade_loss_points"]
    speedup = r["cascade_over_full"]
    out = [
        Target(
            "end-to-end vs machine limit",
            f"≥ {TARGET_E2E_OVER_LIMIT}×",
            r["e2e_over_limit"],
            r["e2e_over_limit"] >= TARGET_E2E_OVER_LIMIT,
        )
    ]
    for row in result.latency:
        if row.load in TARGET_P99_MS:
            goal = TARGET_P99_MS[row.load]
            out.append(
                Target(
                    f"p99 latency at {row.load:.0%} load (ms)",
                    f"≤ {goal:.0f}",
                    row.p99_ms,
                    row.p99_ms <= goal,
                )
            )
    return [
        *out,
        Target(
            "ONNX jury vs PyTorch pipelines (1 thread each)",
            f"≥ {TARGET_ONNX_OVER_TORCH}×",
            r["onnx_over_torch"],
            r["onnx_over_torch"] >= TARGET_ONNX_OVER_TORCH,
        ),
        Target(
            "cascade vs full jury throughput",
            f"≥ {TARGET_CASCADE_SPEEDUP}×",
            speedup,
            speedup >= TARGET_CASCADE_SPEEDUP,
        ),
        Target(
            "cascade accuracy loss (points)",
            f"≤ {TARGET_CASCADE_LOSS_POINTS}",
            loss,
            loss <= TARGET_CASCADE_LOSS_POINTS,
        ),
        Target(
            "worker peak RSS (MB)",
            f"< {TARGET_RSS_MB:.0f}",
            result.rss_mb["peak"],
            result.rss_mb["peak"] < TARGET_RSS_MB,
        ),
    ]


def write_json(result: PerfResult, path: Path) -> Path:
    """The whole result with its headline keys on top; keys other benches keep in the same file
    (``bench scale``'s) are left as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(path.read_text()) if path.is_file() else {}
    fresh = {**result.headlines(), **result.to_dict()}
    ours = set(fresh) | set(PerfResult.__dataclass_fields__)
    merged = {**{k: v for k, v in kept.items() if k not in ours}, **fresh}
    path.write_text(json.dumps(merged, indent=2) + "\n")
    return path


def _throughput_rows(result: PerfResult) -> list[tuple[str, float, str]]:
    t, r, acc = result.throughput, result.ratios, result.accuracy
    limit_config = result.repeats[0].limit_config if result.repeats else ""
    cores = result.config["inference_threads"]
    return [
        (f"machine limit: raw ONNX jurors on {cores} cores ({limit_config})", t["limit"], "1.00×"),
        (
            "end-to-end through Kafka (worker subprocess)",
            t["end_to_end"],
            f"{r['e2e_over_limit']:.2f}× limit",
        ),
        (
            f"every core: ONNX jury in process, {cores}-thread pool",
            t["every_core"],
            f"{r['every_core_over_ceiling']:.2f}× one thread",
        ),
        (
            "ceiling before: ONNX jury in process, 1 thread",
            t["ceiling"],
            f"e2e = {r['e2e_over_ceiling']:.2f}× this",
        ),
        (
            "PyTorch `transformers` pipelines, same jurors, 1 thread",
            t["torch"],
            f"ONNX 1 thread = {r['onnx_over_torch']:.2f}× this",
        ),
        (
            f"cascade, every core (acc {acc['cascade']:.1%} vs {acc['full_jury']:.1%})",
            t["cascade"],
            f"{r['cascade_over_full']:.2f}× full jury",
        ),
    ]


def tables(result: PerfResult) -> list[Table]:
    """Rich tables: throughput and ratios side by side, latency with its stages, targets."""
    speed = Table(title=f"throughput (texts/s, median of {len(result.repeats)} repeats)")
    for col in ("measurement", "texts/s", "ratio"):
        speed.add_column(col, justify="right" if col != "measurement" else "left")
    for name, rate, ratio in _throughput_rows(result):
        speed.add_row(name, f"{rate:.0f}", ratio)
    lat = Table(title="end-to-end latency under a paced producer")
    columns = ("load", "rate/s", "achieved/s", "p50 ms", "p99 ms", "batch", *STAGE_COLUMNS)
    for col in columns:
        lat.add_column(col, justify="right")
    for row in result.latency:
        lat.add_row(*_latency_cells(row))
    goals = Table(title="targets")
    for col in ("target", "goal", "measured", "met"):
        goals.add_column(col)
    for g in result.targets:
        mark = "[green]yes[/]" if g.met else "[red]no[/]"
        goals.add_row(g.name, g.goal, f"{g.value:.2f}", mark)
    return [speed, lat, goals]


STAGE_COLUMNS = ("wait ms/post", "score ms/batch", "produce ms/batch")


def _latency_cells(row: LatencyResult) -> list[str]:
    return [
        f"{row.load:.0%}",
        f"{row.rate_per_s:.0f}",
        f"{row.achieved_per_s:.0f}",
        f"{row.p50_ms:.0f}",
        f"{row.p99_ms:.0f}",
        f"{row.mean_batch:.1f}",
        *(f"{row.stages_ms[k]:.1f}" for k in STAGES),
    ]


def markdown(result: PerfResult) -> str:
    """The BENCHMARKS.md tables: throughput and ratios, latency, targets, memory."""
    acc = result.accuracy
    m = result.machine
    lines = [
        f"{m['cpu']}, {m['usable_cores']} cores, load average {m['load_average_start'][0]} at "
        f"start / {m['load_average_end'][0]} at end; jurors "
        + ", ".join(f"{j['name']} ({j['kind']})" for j in result.jurors)
        + f"; batch {result.config['batch_size']}, {result.config['inference_threads']} "
        f"inference threads; medians of {len(result.repeats)} repeats.",
        "",
        "| measurement | texts/s | ratio |",
        "|---|---:|---:|",
    ]
    lines += [f"| {n} | {rate:.0f} | {ratio} |" for n, rate, ratio in _throughput_rows(result)]
    lines += [
        "",
        f"Accuracy on {acc['texts']} texts: full jury {acc['full_jury']:.2%}, cascade "
        f"{acc['cascade']:.2%} ({acc['cascade_loss_points']:+.2f} points lost), "
        f"{acc['cascade_juror_calls_per_text']:.2f} juror calls per text in the cascade.",
        "",
        "| load | rate/s | achieved/s | p50 ms | p99 ms | posts/batch | "
        + " | ".join(STAGE_COLUMNS)
        + " |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(_latency_cells(x)) + " |" for x in result.latency]
    lines += [
        "",
        f"Worker RSS: {result.rss_mb['idle_after_load']:.0f} MB after loading, "
        f"{result.rss_mb['peak']:.0f} MB peak. Idle (no posts, fetch wait "
        f"{result.config['fetch_max_wait_ms']} ms): "
        + ", ".join(f"{k} {v:.1%} of a core" for k, v in result.idle_cpu.items())
        + ".",
        "",
        "| target | goal | measured | met |",
        "|---|---|---:|---|",
    ]
    lines += [
        f"| {g.name} | {g.goal} | {g.value:.2f} | {'yes' if g.met else '**no**'} |"
        for g in result.targets
    ]
    return "\n".join(lines)
