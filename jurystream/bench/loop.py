"""``jurystream bench loop``: does the learning loop pay? The real roles over a real labeled feed.

A TweetEval task's train posts that are not in the seed set stream through the real worker,
reviewer, trainer and monitor processes on the embedded broker, in segments: after each
segment the bench waits until every post has its final label, the trainer has stored what was
reviewed and finished the round that started, and the worker serves the promoted versions with
the controller's threshold. Per segment it reports escalation, the audit's estimate of the
jury's accuracy (with its 95% interval) next to the jury's gold accuracy, the accuracy of all
labels, reviewer calls and USD, and the versions and threshold that served.

In the same run, two baselines on the same feed: the reviewer labeling everything, and the
bootstrap jury with its first controller threshold and no learning. And the val split, cut in
two halves by a fixed shuffle: the trainer's gate and the controller see one (``gate``), the
before/after scores are taken on the other (``score``), which nothing in the loop ever saw.

The reviewer is the oracle (gold labels from the feed: an upper bound, always reported as
such), the simulated one (the oracle wrong on a configurable share) or any OpenAI-compatible
endpoint. Calls are priced with the real reviewer prompt's tokens estimated at 4 characters a
token (``quality.CallPricer``), the same for every reviewer, so the USD columns compare.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jurystream.bench.jurors import bench_plan, ensure_jurors
from jurystream.bench.quality import CallPricer, review
from jurystream.config import Settings, Topic
from jurystream.exporters.metrics import DEFAULT_TASK
from jurystream.models.reviewer.oracle import OracleBackend, SimulatedBackend
from jurystream.models.rules.audit import estimate
from jurystream.models.rules.scores import accuracy, macro_f1
from jurystream.models.serving.juror import Juror, load_juror
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.registry import Registry
from jurystream.models.training.datasets import LabeledSet, load_tweeteval, tweeteval_dir
from jurystream.models.training.evaluation import (
    calibrate_policy,
    juror_probabilities,
    replay_jurors,
)
from jurystream.models.training.store import TrainingStore
from jurystream.stream.broker import EmbeddedBroker, ensure_topics, free_port
from jurystream.stream.client import Record, produce, read_records
from jurystream.stream.processes import RoleGroup
from jurystream.stream.records import Post, ReviewCase

Log = Callable[[str], None]


@dataclass(frozen=True)
class LoopConfig:
    task: str = "offensive"
    seed_size: int = 400
    feed_size: int = 6000
    segments: int = 6
    transformers: int = 2  # MiniLM jurors, plus one TF-IDF juror
    reviewer: str = "oracle"  # oracle | simulated | openai
    simulated_accuracy: float = 0.9
    base_url: str | None = None  # openai reviewer
    model: str | None = None
    policy: str = "threshold"
    audit_rate: float = 0.02
    target_accuracy: float | None = None  # None: the reviewer's accuracy − margin
    margin: float = 0.05
    combined_budget: float = 0.2  # escalation budget of the "all labels" val score
    round_share: float = 0.12  # a round per this share of a segment's posts reviewed
    replay_ratio: float | None = None  # trainer.replay_ratio; None: the trainer's setting
    segment_timeout_s: float = 3600.0


@dataclass
class Segment:
    index: int
    posts: int
    escalation: float
    audits: int
    audit_accuracy: float
    audit_low: float
    audit_high: float
    jury_gold_accuracy: float
    audit_covers_gold: bool
    accepted_labels: int
    all_accuracy: float
    all_macro_f1: float
    reviewer_calls: int
    reviewer_usd: float
    versions: dict[str, str]
    threshold: float | None
    # The bootstrap jury at its first threshold, without learning, on the same posts.
    baseline_escalation: float = float("nan")
    baseline_jury_accuracy: float = float("nan")
    baseline_all_accuracy: float = float("nan")


@dataclass
class LoopResult:
    config: dict[str, Any]
    reviewer: str
    reviewer_accuracy_on_feed: float
    target_accuracy: float
    segments: list[Segment]
    rounds: list[dict[str, Any]]
    val: dict[str, Any]  # before/after on the score half
    baselines: dict[str, Any]
    headline: dict[str, Any]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- pure pieces ----------------------------------------------------------------------------


def split_halves(n: int, seed: int = 7) -> tuple[list[int], list[int]]:
    """Two disjoint halves of range(n) by a fixed shuffle: (gate, score)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    half = n // 2
    return sorted(order[:half]), sorted(order[half:])


def segment_stats(
    ids: Sequence[str],
    gold: Mapping[str, str],
    labels: Mapping[str, Mapping[str, Any]],
    audits: Mapping[str, str],
    label_names: Sequence[str],
    reviewer_accuracy: float = 1.0,
) -> dict[str, Any]:
    """What a segment's final labels and audits say, against gold.

    ``labels``: the last label record per id; ``audits``: the reviewer's label per audited id.
    The audit's agreement is corrected for a reviewer right ``reviewer_accuracy`` of the time
    (``audit.corrected_accuracy``), as the controller does with the reviewer's measured accuracy.
    """
    index = {name: i for i, name in enumerate(label_names)}
    finals = [labels[i] for i in ids]
    escalated = [r["source"] != "jury" for r in finals]
    jury_ids = [i for i, r in zip(ids, finals, strict=True) if r["source"] == "jury"]
    jury_truth = [index[gold[i]] for i in jury_ids]
    jury_pred = [index[labels[i]["label"]] for i in jury_ids]
    truth = [index[gold[i]] for i in ids]
    pred = [index[r["label"]] for r in finals]
    audited = [i for i in ids if i in audits]
    agreed = sum(audits[i] == labels[i]["label"] for i in audited)
    est = estimate(agreed, len(audited), reviewer_accuracy, len(label_names))
    jury_accuracy = accuracy(jury_truth, jury_pred) if jury_ids else float("nan")
    versions = Counter(json.dumps(r.get("model_versions", {}), sort_keys=True) for r in finals)
    thresholds = Counter(r.get("threshold") for r in finals if r["source"] == "jury")
    return {
        "escalation": float(np.mean(escalated)) if ids else float("nan"),
        "audits": len(audited),
        "audit_accuracy": est.accuracy,
        "audit_low": est.low,
        "audit_high": est.high,
        "jury_gold_accuracy": jury_accuracy,
        "audit_covers_gold": bool(audited) and est.covers(jury_accuracy),
        "accepted_labels": len(jury_ids),
        "all_accuracy": accuracy(truth, pred),
        "all_macro_f1": macro_f1(truth, pred),
        "versions": json.loads(versions.most_common(1)[0][0]) if versions else {},
        "threshold": thresholds.most_common(1)[0][0] if thresholds else None,
    }


def headline(result: LoopResult) -> dict[str, Any]:
    """The figures docs/benchmarks/loop.json carries (the keys its readers look up)."""
    first, last = result.segments[0], result.segments[-1]
    before, after = result.val["before"], result.val["after"]
    return {
        "f1_gain_points": round(100 * (after["jury_macro_f1"] - before["jury_macro_f1"]), 2),
        "escalation_last_over_first": round(last.escalation / first.escalation, 3)
        if first.escalation
        else None,
        "accepted_accuracy_first": round(first.jury_gold_accuracy, 4),
        "accepted_accuracy_last": round(last.jury_gold_accuracy, 4),
        "combined_accuracy": round(after["combined"]["accuracy"], 4),
        "combined_macro_f1": round(after["combined"]["macro_f1"], 4),
        "combined_escalation": round(after["combined"]["escalation"], 4),
        "audit_covers_gold": all(s.audit_covers_gold for s in result.segments),
    }


# --- the run --------------------------------------------------------------------------------


def _write_jsonl(path: Path, data: LabeledSet) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for text, label in zip(data.texts, data.gold(), strict=True):
            f.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


def _posts(
    ids: Sequence[str], texts: Sequence[str], gold: Sequence[str]
) -> list[tuple[bytes, bytes]]:
    return [
        (i.encode(), Post.of(i, t, meta={"gold": g}).to_bytes())
        for i, t, g in zip(ids, texts, gold, strict=True)
    ]


def _scrape(port: int) -> tuple[dict[str, str], float | None]:
    """(versions, threshold) a worker serves, from its /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
    except OSError:
        return {}, None
    versions = dict(
        re.findall(r'jurystream_model_version_info\{juror="([^"]+)",version="([^"]+)"\} 1', body)
    )
    threshold = rf'^jurystream_jury_threshold\{{task="{DEFAULT_TASK}"\}} ([0-9.eE+-]+)$'
    found = re.search(threshold, body, re.M)
    return versions, float(found.group(1)) if found else None


class LoopRun:
    """The roles of one run on one broker, and the waits between segments."""

    def __init__(
        self, group: RoleGroup, registry: Registry, store_path: Path, worker_port: int, log: Log
    ) -> None:
        self.group = group
        self.registry = registry
        self.store_path = store_path
        self.worker_port = worker_port
        self.log = log

    def read(
        self, topics: Sequence[Topic], until: Callable[[list[Record]], bool], timeout: float
    ) -> list[Record]:
        names = [self.group.topic(t) for t in topics]
        return asyncio.run(
            read_records(self.group.bootstrap, names, until=until, timeout_s=timeout)
        )

    def wait_labeled(self, ids: set[str], timeout: float) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        latest: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            records = self.read([Topic.LABELS], lambda rs: ids <= {r.key for r in rs}, 30)
            latest = {}
            for r in records:
                if r.key is not None:
                    latest[r.key] = r.value
            if ids <= set(latest):
                return latest
            self._check_alive()
        missing = len(ids - set(latest))
        raise TimeoutError(f"{missing} posts still without a label\n{self.group.logs()}")

    def wait_trainer(self, reviewed: int, every: int, timeout: float) -> None:
        """Until the trainer has stored ``reviewed`` samples and no round is due or running."""
        deadline = time.monotonic() + timeout
        store = TrainingStore(self.store_path)
        while time.monotonic() < deadline:
            self._check_alive()
            stored = store.reviewed_samples() >= reviewed
            if stored and not store.round_running() and store.pending_hard_samples() < every:
                return
            time.sleep(2)
        raise TimeoutError(f"the trainer did not settle\n{self.group.logs()}")

    def wait_worker(self, names: Sequence[str], timeout: float) -> tuple[dict[str, str], float]:
        """Until the worker serves the registry's serving versions with the threshold the
        controller announced for exactly those versions."""
        want = {n: str(self.registry.serving_version(n)) for n in names}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            updates = self.read([Topic.MODEL_UPDATES], lambda rs: False, 2)
            announced = [
                r.value
                for r in updates
                if r.value.get("kind") == "thresholds" and r.value.get("versions") == want
            ]
            if announced:
                threshold = max(announced, key=lambda v: v.get("seq", 0))["threshold"]
                versions, serving = _scrape(self.worker_port)
                if versions == want and serving is not None and abs(serving - threshold) < 1e-9:
                    return versions, serving
            time.sleep(1)
        raise TimeoutError(f"worker serves {_scrape(self.worker_port)}, not {want}")

    def _check_alive(self) -> None:
        for role in self.group.started:
            if not role.alive:
                raise RuntimeError(f"role {role.args[0]} exited\n{self.group.logs()}")


def _reviewer_labels(
    cfg: LoopConfig,
    labels: Sequence[str],
    ids: Sequence[str],
    texts: Sequence[str],
    gold: Sequence[str],
) -> list[str]:
    """What the bench's reviewer answers on these posts (for the baselines; the oracle and the
    simulated reviewer are deterministic per id, so these are the answers the stream got)."""
    if cfg.reviewer == "simulated":
        return review(SimulatedBackend(labels, cfg.simulated_accuracy), ids, texts, gold)
    if cfg.reviewer == "oracle":
        return review(OracleBackend(labels), ids, texts, gold)
    return list(gold)  # an LLM's answers are not replayable offline; baselines assume gold


def _val_scores(
    jurors: Sequence[Juror],
    policy: str,
    score: LabeledSet,
    reviewer: Sequence[str],
    budget: float,
) -> dict[str, Any]:
    """Jury and juror scores on the score half, and jury + reviewer at ``budget`` escalation.

    The budget's threshold is the highest whose escalation on the score half's own texts stays
    within ``budget``: escalation needs no label, so this is what a review budget does on a
    live stream (and a threshold calibrated on other posts lands a point or two off it).
    """
    names = list(score.label_names)
    probs = juror_probabilities(jurors, score.texts)
    replay = replay_jurors(probs, score.texts, jurors)
    truth = list(score.labels)
    best = Jury(replay, policy, 0.0).decide(score.texts)
    pred = [names.index(d.label) for d in best]
    threshold = calibrate_policy(replay, policy, score.texts, budget)
    decided = Jury(replay, policy, threshold).decide(score.texts)
    final = [
        names.index(reviewer[i]) if d.escalated else names.index(d.label)
        for i, d in enumerate(decided)
    ]
    return {
        "versions": {j.name: j.version for j in jurors},
        "jury_accuracy": accuracy(truth, pred),
        "jury_macro_f1": macro_f1(truth, pred),
        "jurors": {
            j.name: macro_f1(truth, list(probs[:, k].argmax(axis=1))) for k, j in enumerate(jurors)
        },
        "combined": {
            "threshold": threshold,
            "escalation": float(np.mean([d.escalated for d in decided])),
            "accuracy": accuracy(truth, final),
            "macro_f1": macro_f1(truth, final),
        },
    }


def score_val(
    settings: Settings, cfg: LoopConfig, before: Sequence[Juror], after: Sequence[Juror]
) -> dict[str, Any]:
    """The bootstrap and the final jury on the score half of val (never trained or gated on)."""
    val = load_tweeteval(tweeteval_dir(settings.data_root, cfg.task), "val", drop_empty=True)
    _, score_idx = split_halves(len(val))
    score = val.subset(score_idx)
    ids = [f"val-{i}" for i in score_idx]
    answers = _reviewer_labels(cfg, list(score.label_names), ids, score.texts, score.gold())
    return {
        stage: _val_scores(jurors, cfg.policy, score, answers, cfg.combined_budget)
        for stage, jurors in (("before", before), ("after", after))
    }


def rescore(settings: Settings, path: Path, workdir: Path) -> LoopResult:
    """A finished run's val scores and headline again, from the registry it left in
    ``workdir``: for when the scoring changes, without streaming the feed again."""
    data = json.loads(path.read_text())
    cfg = LoopConfig(**data["config"])
    registry = Registry(workdir / f"loop-{cfg.task}-{cfg.reviewer}" / "registry")
    jurors = {
        stage: [
            load_juror(registry.local_dir(n, v)) for n, v in data["val"][stage]["versions"].items()
        ]
        for stage in ("before", "after")
    }
    data["segments"] = [Segment(**seg) for seg in data["segments"]]
    result = LoopResult(**data)
    result.val = score_val(settings, cfg, jurors["before"], jurors["after"])
    result.headline = headline(result)
    result.notes.append("val scores recomputed from the run's registry (bench loop --rescore)")
    return result


def seed_and_feed(
    directory: Path, seed_size: int, feed_size: int
) -> tuple[LabeledSet, LabeledSet, LabeledSet, LabeledSet]:
    """(train, val, seed set, feed) of a TweetEval task: the seed labels the jurors are
    bootstrapped from, and a feed of train posts none of them saw, in a fixed shuffled order
    (the loop and recipe benches share both, so their jurors and posts are the same)."""
    train = load_tweeteval(directory, "train", drop_empty=True)
    val = load_tweeteval(directory, "val", drop_empty=True)
    seed = train.sample(seed_size, seed=0)
    seen = set(seed.texts)
    rest = [i for i in range(len(train)) if train.texts[i] not in seen]
    random.Random(1).shuffle(rest)
    if len(rest) < feed_size:
        raise ValueError(f"{directory.name} has {len(rest)} train posts outside the seed set")
    return train, val, seed, train.subset(rest[:feed_size])


def run_registry(cache: Path, names: Sequence[str], directory: Path) -> Registry:
    """A run's own registry with only its jurors: the cache may hold more (bench perf adds a
    third MiniLM), and the trainer refines and announces every juror of its registry."""
    for name in names:
        shutil.copytree(cache / name, directory / name)
    return Registry(directory)


def run_loop(settings: Settings, cfg: LoopConfig, workdir: Path, log: Log = print) -> LoopResult:
    started = time.perf_counter()
    directory = tweeteval_dir(settings.data_root, cfg.task)
    train, val, seed, feed = seed_and_feed(directory, cfg.seed_size, cfg.feed_size)
    gate = val.subset(split_halves(len(val))[0])  # the other half is only scored on
    label_names = list(train.label_names)

    plan = bench_plan(settings, cfg.transformers)
    cache = workdir / "jurors" / f"{directory.name}-s{cfg.seed_size}"
    if cfg.transformers == 0:
        cache = cache.with_name(cache.name + "-tfidf")
    bootstrap_dirs = ensure_jurors(cache, seed, val, plan, log=log)
    names = list(bootstrap_dirs)
    run_dir = workdir / f"loop-{cfg.task}-{cfg.reviewer}"
    shutil.rmtree(run_dir, ignore_errors=True)
    registry = run_registry(cache, names, run_dir / "registry")
    seed_file = _write_jsonl(run_dir / "seed.jsonl", seed)
    gate_file = _write_jsonl(run_dir / "gate.jsonl", gate)

    # The reviewer's accuracy where the bench knows it; an LLM's is unknown here, so its
    # audits report raw agreement and the target must be given.
    known = {"oracle": 1.0, "simulated": cfg.simulated_accuracy}.get(cfg.reviewer)
    target = cfg.target_accuracy
    if target is None:
        if known is None:
            raise ValueError("give --target-accuracy with an openai reviewer")
        target = max(0.0, known - cfg.margin)
    reviewer_truth = 1.0 if known is None else known
    seg_size = cfg.feed_size // cfg.segments
    every = max(20, int(seg_size * cfg.round_share))
    env = {
        **settings.role_env(),
        "JURYSTREAM_REGISTRY": str(registry.url),
        "JURYSTREAM_JURY__POLICY": cfg.policy,
        "JURYSTREAM_JURY__AUDIT_RATE": str(cfg.audit_rate),
        "JURYSTREAM_CONTROLLER__TARGET_ACCURACY": str(target),
        "JURYSTREAM_TRAINER__SEED_SIZE": str(len(seed)),
        "JURYSTREAM_TRAINER__GOLD_SIZE": str(len(gate)),
        "JURYSTREAM_TRAINER__EVERY_MINUTES": "600",
        "JURYSTREAM_REVIEWER__SIMULATED_ACCURACY": str(cfg.simulated_accuracy),
        "JURYSTREAM_REVIEWER__GOLD_POOL": str(seed_file),  # label set and k-NN demonstrations
    }
    if cfg.replay_ratio is not None:
        env["JURYSTREAM_TRAINER__REPLAY_RATIO"] = str(cfg.replay_ratio)
    pricer = CallPricer(settings, label_names, seed)
    feed_ids = [f"{cfg.task}-{i}" for i in range(len(feed))]
    gold = dict(zip(feed_ids, feed.gold(), strict=True))
    text_of = dict(zip(feed_ids, feed.texts, strict=True))
    segments: list[Segment] = []
    notes: list[str] = []
    with EmbeddedBroker(log_path=run_dir / "broker.log") as broker:
        group = RoleGroup(broker.bootstrap, run_dir, env=env)
        asyncio.run(
            ensure_topics(
                broker.bootstrap,
                group.topics.all_names(),
                settings.topics.partitions,
                1,
            )
        )
        worker_port = free_port()
        juror_args = [a for n in names for a in ("--juror", n)]
        reviewer_args = ["--tier", cfg.reviewer]
        if cfg.reviewer == "openai":
            reviewer_args += ["--base-url", str(cfg.base_url), "--model", str(cfg.model)]
        try:
            group.start(
                "trainer",
                "--seed-data",
                str(seed_file),
                "--gold-data",
                str(gate_file),
                "--every-samples",
                str(every),
            )
            group.start("worker", *juror_args, "--metrics-port", str(worker_port))
            group.start("reviewer", *reviewer_args)
            group.start("monitor")
            run = LoopRun(group, registry, run_dir / "var" / "trainer.sqlite", worker_port, log)
            run.wait_worker(names, 300)
            reviewed_total = 0
            for k in range(cfg.segments):
                ids = feed_ids[k * seg_size : (k + 1) * seg_size]
                versions, threshold = _scrape(worker_port)
                log(
                    f"segment {k + 1}/{cfg.segments}: {len(ids)} posts, threshold {threshold}, "
                    f"versions {versions}"
                )
                asyncio.run(
                    produce(
                        broker.bootstrap,
                        group.topic(Topic.POSTS),
                        _posts(ids, [text_of[i] for i in ids], [gold[i] for i in ids]),
                    )
                )
                labels = run.wait_labeled(set(ids), cfg.segment_timeout_s)
                cases = {r.key: r.value for r in run.read([Topic.REVIEW], lambda rs: False, 3)}
                hard = run.read([Topic.HARD_SAMPLES], lambda rs: False, 3)
                audits = {
                    r.key: r.value["label"]
                    for r in hard
                    if r.key in set(ids) and r.value.get("kind") == "audit"
                }
                stats = segment_stats(ids, gold, labels, audits, label_names, reviewer_truth)
                mine = [cases[i] for i in ids if i in cases]
                stats["reviewer_calls"] = len(mine)
                stats["reviewer_usd"] = sum(
                    pricer.case_cost(ReviewCase.model_validate(c).case()) for c in mine
                )
                reviewed_total = len({r.key for r in hard})
                segments.append(Segment(k + 1, len(ids), **stats))
                log(
                    f"  escalated {stats['escalation']:.1%}, jury labels "
                    f"{stats['jury_gold_accuracy']:.1%} (audit {stats['audit_accuracy']:.1%} "
                    f"[{stats['audit_low']:.1%}, {stats['audit_high']:.1%}] on "
                    f"{stats['audits']}), all labels {stats['all_accuracy']:.1%}"
                )
                if k + 1 < cfg.segments:
                    run.wait_trainer(reviewed_total, every, cfg.segment_timeout_s)
                    run.wait_worker(names, 300)
        finally:
            group.stop_all()
    store = TrainingStore(run_dir / "var" / "trainer.sqlite")
    rounds = [asdict(c) for c in store.candidates()]
    for r in rounds:
        r.pop("training", None)

    # Baselines on the same feed: the reviewer alone, and the bootstrap jury without learning.
    answers = _reviewer_labels(cfg, label_names, feed_ids, feed.texts, feed.gold())
    reviewer_accuracy = accuracy(list(feed.labels), [label_names.index(a) for a in answers])
    first_threshold = (
        segments[0].threshold if segments[0].threshold is not None else settings.jury.threshold
    )
    boot = [load_juror(bootstrap_dirs[n]) for n in names]
    probs = juror_probabilities(boot, feed.texts)
    decisions = Jury(replay_jurors(probs, feed.texts, boot), cfg.policy, first_threshold).decide(
        feed.texts
    )
    for seg in segments:
        lo = (seg.index - 1) * seg_size
        part = range(lo, lo + seg_size)
        esc = [decisions[i].escalated for i in part]
        jury_ok = [decisions[i].label == feed.gold()[i] for i in part if not decisions[i].escalated]
        final = [answers[i] if decisions[i].escalated else decisions[i].label for i in part]
        seg.baseline_escalation = float(np.mean(esc))
        seg.baseline_jury_accuracy = float(np.mean(jury_ok)) if jury_ok else float("nan")
        seg.baseline_all_accuracy = float(
            np.mean([f == feed.gold()[i] for f, i in zip(final, part, strict=True)])
        )
    alone_usd = sum(pricer.cost(t, None) for t in feed.texts)
    learned_usd = sum(s.reviewer_usd for s in segments)
    static_usd = sum(
        pricer.cost(t, d) for t, d in zip(feed.texts, decisions, strict=True) if d.escalated
    )

    val_scores = score_val(settings, cfg, boot, [registry.load(n) for n in names])
    if cfg.reviewer == "openai":
        notes.append("baselines and val scores assume gold answers for the LLM (not replayable)")
    result = LoopResult(
        config=asdict(cfg),
        reviewer=cfg.reviewer
        if cfg.reviewer != "simulated"
        else f"simulated:{cfg.simulated_accuracy:.2f}",
        reviewer_accuracy_on_feed=reviewer_accuracy,
        target_accuracy=target,
        segments=segments,
        rounds=rounds,
        val=val_scores,
        baselines={
            "reviewer_alone": {
                "calls": len(feed.texts),
                "usd": alone_usd,
                "accuracy": reviewer_accuracy,
            },
            "learning_loop": {"calls": sum(s.reviewer_calls for s in segments), "usd": learned_usd},
            "no_learning": {
                "threshold": first_threshold,
                "calls": int(sum(d.escalated for d in decisions)),
                "usd": static_usd,
            },
        },
        headline={},
        seconds=time.perf_counter() - started,
        notes=notes,
    )
    result.headline = headline(result)
    return result


# --- reporting ------------------------------------------------------------------------------


def write_json(result: LoopResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    return path


def _pct(x: float | None) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f}%"


def markdown(result: LoopResult) -> str:
    """The per-segment table, the baselines and the val scores, as BENCHMARKS.md shows them."""
    lines = [
        f"Reviewer: {result.reviewer} (accuracy on the feed "
        f"{_pct(result.reviewer_accuracy_on_feed)}); target accuracy of accepted labels "
        f"{result.target_accuracy:.3f}.",
        "",
        "| segment | escalated | audit estimate [95% CI] (n) | jury labels, gold | all labels |"
        " macro-F1 | calls | USD | threshold | versions | no learning: escalated / jury / all |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in result.segments:
        versions = " ".join(f"{k}:{v}" for k, v in sorted(s.versions.items()))
        lines.append(
            f"| {s.index} | {_pct(s.escalation)} | {_pct(s.audit_accuracy)} "
            f"[{_pct(s.audit_low)}, {_pct(s.audit_high)}] ({s.audits}) | "
            f"{_pct(s.jury_gold_accuracy)} | {_pct(s.all_accuracy)} | {s.all_macro_f1:.3f} | "
            f"{s.reviewer_calls} | {s.reviewer_usd:.4f} | {s.threshold} | {versions} | "
            f"{_pct(s.baseline_escalation)} / {_pct(s.baseline_jury_accuracy)} / "
            f"{_pct(s.baseline_all_accuracy)} |"
        )
    b = result.baselines
    lines += [
        "",
        "| system on the whole feed | reviewer calls | USD |",
        "|---|---:|---:|",
        f"| reviewer alone | {b['reviewer_alone']['calls']} | {b['reviewer_alone']['usd']:.4f} |",
        f"| bootstrap jury, no learning (escalations only) | {b['no_learning']['calls']} | "
        f"{b['no_learning']['usd']:.4f} |",
        f"| learning loop (escalations + audits) | {b['learning_loop']['calls']} | "
        f"{b['learning_loop']['usd']:.4f} |",
        "",
        "| val (score half) | jury accuracy | jury macro-F1 | jurors' macro-F1 | "
        "jury + reviewer: escalated / accuracy / macro-F1 |",
        "|---|---:|---:|---|---|",
    ]
    for stage in ("before", "after"):
        v = result.val[stage]
        jurors = ", ".join(f"{k} {f1:.3f}" for k, f1 in v["jurors"].items())
        c = v["combined"]
        lines.append(
            f"| {stage} ({', '.join(f'{k}:{x}' for k, x in v['versions'].items())}) | "
            f"{_pct(v['jury_accuracy'])} | {v['jury_macro_f1']:.3f} | {jurors} | "
            f"{_pct(c['escalation'])} / {_pct(c['accuracy'])} / {c['macro_f1']:.3f} |"
        )
    lines += ["", "Headline: `" + json.dumps(result.headline) + "`"]
    return "\n".join(lines)


def plot(result: LoopResult, path: Path) -> Path:
    """Escalation and accuracy over the feed, with the no-learning baseline and audit CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [s.index for s in result.segments]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(x, [100 * s.escalation for s in result.segments], "o-", label="learning loop")
    ax1.plot(x, [100 * s.baseline_escalation for s in result.segments], "s--", label="no learning")
    ax1.set(xlabel="feed segment", ylabel="escalated to review (%)", title="Escalation")
    ax1.set_ylim(bottom=0)
    ax1.legend()
    jury = [100 * s.jury_gold_accuracy for s in result.segments]
    audit = [100 * s.audit_accuracy for s in result.segments]
    err = [
        [100 * (s.audit_accuracy - s.audit_low) for s in result.segments],
        [100 * (s.audit_high - s.audit_accuracy) for s in result.segments],
    ]
    ax2.plot(x, jury, "o-", label="jury labels (gold)")
    ax2.errorbar(x, audit, yerr=err, fmt="x", capsize=3, label="audit estimate, 95% CI")
    ax2.plot(x, [100 * s.all_accuracy for s in result.segments], "^-", label="all labels (gold)")
    ax2.plot(
        x, [100 * s.baseline_all_accuracy for s in result.segments], "s--", label="no learning: all"
    )
    ax2.axhline(100 * result.target_accuracy, color="grey", lw=0.8, label="target (accepted)")
    ax2.set(xlabel="feed segment", ylabel="accuracy (%)", title="Accuracy")
    ax2.legend(fontsize=7)
    fig.suptitle(f"jurystream bench loop: {result.config['task']}, reviewer {result.reviewer}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
