"""`jurystream demo` end to end: every message accounted for, a summary, and a chart."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from jurystream.bench.multitask import MultitaskConfig, ensure_jurors
from jurystream.config import Settings
from jurystream.demo import Ledger, Supervisor, _tasks_table
from jurystream.demo_jurors import COMPLETE, JurorRecipe, cached_jurors
from jurystream.demo_tasks import (
    gold_samples,
    interleave,
    prepare_tasks,
    start_thresholds,
    task_data,
    task_feed,
)
from jurystream.models.serving.registry import Registry
from jurystream.models.training.datasets import LabeledSet, tweeteval_dir
from jurystream.stream.processes import RoleGroup
from jurystream.stream.roles import load_task_juries

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    root = Settings().data_root
    return root if root.is_absolute() else REPO / root


def _demo(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jurystream.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "JURYSTREAM_APP_ID": "demo-test", "COLUMNS": "120", **(env or {})},
    )


def _fates(workdir: Path) -> list[dict[str, str]]:
    with (workdir / "fates.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("extra", "env", "reviewer"),
    [
        # No data root: the demo says so and falls back to the generated feed.
        (["--reviewer", "oracle"], {"JURYSTREAM_DATA_ROOT": "/nonexistent"}, "oracle"),
        (["--data", "generated"], {}, "reviewer:openai:gpt-4o-mini"),
    ],
)
def test_demo_accounts_for_every_message(
    tmp_path: Path, extra: list[str], env: dict[str, str], reviewer: str
) -> None:
    workdir = tmp_path / "demo"
    args = ["--count", "300", "--bad-every", "30", "--workdir", str(workdir), "--rate", "300"]
    result = _demo([*args, *extra], env)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    if env:
        assert "running on the generated feed instead" in result.stderr
    assert "what happened to every message" in result.stdout
    rows = _fates(workdir)
    assert len(rows) == 300 and len({r["id"] for r in rows}) == 300
    outcomes = Counter(r["outcome"] for r in rows)
    assert outcomes["dead-letter"] == 10
    assert outcomes["labeled"] == 290, outcomes
    sources = Counter(r["source"] for r in rows if r["outcome"] == "labeled")
    assert sources["jury"] > 0 and sources[reviewer] > 0, sources
    if reviewer != "oracle":  # a priced reviewer: the demo reports spend and the saving
        assert "cost if all reviewed" in result.stdout
    png = (workdir / "demo.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_demo_on_real_posts_measures_the_jury_by_audits(tmp_path: Path) -> None:
    """The default feed (TweetEval offensive from the data root), a TF-IDF-only jury to keep
    it quick, every post audited or reviewed so the audit line fills."""
    workdir = tmp_path / "demo"
    result = _demo(
        [
            *("--minilm", "0", "--count", "200", "--rate", "100", "--every-samples", "60"),
            *("--workdir", str(workdir), "--cache-dir", str(tmp_path / "cache")),
        ],
        {"JURYSTREAM_JURY__AUDIT_RATE": "0.5", "JURYSTREAM_DATA_ROOT": str(data_root())},
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    said = " ".join(result.stdout.split())  # the console wraps long lines
    assert "bootstrapping a TF-IDF jurors from 400 seed labels" in said
    rows = _fates(workdir)
    assert len(rows) == 200 and Counter(r["outcome"] for r in rows) == {"labeled": 200}
    assert {r["gold"] for r in rows} == {"offensive", "not-offensive"}
    assert "audit: reviewer agrees with jury" in said
    assert " audited" in said  # at least one audit came back measured


def test_bootstrapped_jurors_are_cached_and_rebuilt_when_broken(tmp_path: Path) -> None:
    recipe = JurorRecipe(tweeteval_dir(data_root(), "offensive"), seed_size=100, minilm=0)
    notes: list[str] = []
    first = cached_jurors(recipe, tmp_path, notes.append)
    assert Registry(str(first)).serving_version("tfidf") == "1"
    assert any(n.startswith("bootstrapping a TF-IDF jurors from 100 seed labels") for n in notes)

    notes.clear()
    assert cached_jurors(recipe, tmp_path, notes.append) == first
    assert notes == [f"reusing the jurors cached in {tmp_path / recipe.key}"]

    for path in (first / "tfidf").rglob("*.onnx"):  # a juror's model gone from the cache
        path.unlink()
    notes.clear()
    assert Registry(str(cached_jurors(recipe, tmp_path, notes.append))).load("tfidf")
    assert "unusable" in notes[0] and "bootstrapping the jurors again" in notes[0]

    (tmp_path / recipe.key / COMPLETE).unlink()  # as if a bootstrap had been interrupted
    notes.clear()
    cached_jurors(recipe, tmp_path, notes.append)
    assert "no finished bootstrap there" in notes[0]
    assert not list(tmp_path.glob(".*building*"))  # nothing half-built left behind


def test_ledger_follows_audits_escalation_threshold_and_versions() -> None:
    ledger = Ledger({"a": "offensive", "b": "not-offensive", "c": "offensive"})
    versions = {"minilm-0": "1", "tfidf": "1"}
    jury = {"source": "jury", "threshold": 0.6, "model_versions": versions}
    ledger.apply("labels", {"id": "a", "label": "offensive", "audit": True, **jury})
    audit = {"id": "a", "kind": "audit", "label": "not-offensive", "jury_label": "offensive"}
    ledger.apply("hard_samples", audit)
    ledger.apply("review", {"id": "b", "reason": "split vote"})
    assert ledger.counts == {"labeled": 1, "in-review": 1}
    reviewer = {"source": "reviewer:openai:gpt-4o-mini", "cost_usd": 0.0002, "threshold": 0.6}
    ledger.apply("labels", {"id": "b", "label": "not-offensive", **reviewer})
    hard = {"id": "b", "kind": "hard", "label": "not-offensive", "jury_label": "offensive"}
    ledger.apply("hard_samples", hard)  # a hard sample is no audit
    assert ledger.audit_accuracy() == 0.0 and len(ledger.audits) == 1
    assert ledger.escalation(slice(None)) == 0.5 and ledger.cost_usd == 0.0002
    assert ledger.pending() == ["c"] and not ledger.settled()

    newer = {"source": "jury", "threshold": 0.55, "model_versions": {"minilm-0": "2"}}
    ledger.apply("labels", {"id": "c", "label": "offensive", **newer})
    assert ledger.threshold == 0.55 and ledger.versions == {"minilm-0": "2", "tfidf": "1"}
    assert ledger.settled() and ledger.accuracy() == 1.0


def test_a_role_that_exits_is_restarted_and_then_named(tmp_path: Path) -> None:
    group = RoleGroup("127.0.0.1:1", tmp_path)
    role = group.start("worker", "--juror", str(tmp_path / "no-such-juror"))
    supervisor = Supervisor(group, limit=1)
    started = []
    for _ in range(2):
        assert role.proc is not None
        started.append(role.proc)
        role.proc.wait(timeout=120)
        said = supervisor.check()
    assert started[0] is not started[1]  # restarted once, then it exited again
    assert said is not None and said.startswith("the worker exited (code ")
    assert "after 1 restarts" in said and str(role.log_path) in said


def test_ledger_reads_each_post_on_its_own_task_of_a_multi_task_record() -> None:
    ledger = Ledger({"o": "offensive", "h": "not-hate"}, origin={"o": "offensive", "h": "hate"})
    ledger.start_thresholds = {"offensive": 0.5335, "hate": 0.5567}  # calibrated at the start
    jury_off = {"label": "offensive", "source": "jury", "threshold": 0.6}
    llm = "reviewer:openai:gpt-4o-mini"
    reviewed_hate = {"label": "hate", "source": llm, "threshold": 0.55, "jury_label": "not-hate"}
    # Top-level fields mirror the first task; the ledger must read the post's own task.
    ledger.apply(
        "labels",
        {
            "id": "h",
            "label": "offensive",
            "source": "jury",
            "tasks": {"offensive": jury_off, "hate": reviewed_hate},
            "cost_usd": 0.0003,
        },
    )
    jury_hate = {"label": "not-hate", "source": "jury", "threshold": 0.55}
    ledger.apply(
        "labels",
        {
            "id": "o",
            "label": "offensive",
            "source": "jury",
            "tasks": {"offensive": jury_off, "hate": jury_hate},
        },
    )
    assert ledger.fates["h"].label == "hate" and ledger.fates["h"].source == llm
    assert ledger.accuracy("hate") == 0.0 and ledger.accuracy("offensive") == 1.0
    assert ledger.accuracy() == 0.5 and ledger.tasks == ["offensive", "hate"]
    assert ledger.task_escalation("hate") == 0.5 and ledger.task_escalation("offensive") == 0.0
    assert ledger.escalation(slice(None)) == 0.5  # a post reviewed on any task is one call
    assert ledger.task_thresholds == {"offensive": 0.6, "hate": 0.55}
    shown = Console(width=120, record=True)
    shown.print(_tasks_table(ledger))
    rows = shown.export_text()
    assert "0.53 → 0.60" in rows and "0.56 → 0.55" in rows  # the calibrated start, the latest
    for task, label in (("offensive", "offensive"), ("hate", "hate")):
        audit = {"id": "o", "kind": "audit", "task": task, "label": label}
        ledger.apply("hard_samples", {**audit, "jury_label": "offensive"})
    assert ledger.audits == {"o#offensive": True, "o#hate": False}
    assert ledger.settled() and ledger.cost_usd == 0.0003


def test_the_multi_task_feed_interleaves_tasks_and_scripts_gold_on_the_own_task_only() -> None:
    rests = {
        "offensive": LabeledSet(["a", "b", "c"], [0, 1, 0], ("not-offensive", "offensive")),
        "hate": LabeledSet(["x", "b"], [1, 0], ("not-hate", "hate")),
    }
    posts = interleave(rests, 4)
    assert [(t, text) for t, text, _ in posts] == [
        ("offensive", "a"),
        ("hate", "x"),
        ("offensive", "b"),
        ("hate", "b"),
    ]
    guessed = [{"offensive": "offensive", "hate": "not-hate"}] * 4
    feed = task_feed(posts, guessed)
    assert feed.origin == {
        "demo-offensive-000000": "offensive",
        "demo-hate-000001": "hate",
        "demo-offensive-000002": "offensive",
        "demo-hate-000003": "hate",
    }
    # The gold on a post's own task, the juror's label elsewhere; "b" came from both tasks,
    # so both of its answers are gold.
    assert feed.answers["a"] == {"offensive": "not-offensive", "hate": "not-hate"}
    assert feed.answers["x"] == {"offensive": "offensive", "hate": "hate"}
    assert feed.answers["b"] == {"offensive": "offensive", "hate": "not-hate"}
    assert [i.gold for i in feed.items] == ["not-offensive", "hate", "offensive", "not-hate"]


def test_each_task_starts_calibrated_to_the_review_share_on_posts_never_streamed(
    tmp_path: Path, encoder_base: Path
) -> None:
    """The settings every role gets put each task's jury on policy threshold at its own
    threshold, calibrated to the review share on the tasks' held-out val posts: served as the
    worker serves those settings, no task escalates more than the share of them (the split
    votes of the old unanimous default escalated nearly every post on some task)."""
    notes: list[str] = []
    registry = tmp_path / "registry"
    demo = prepare_tasks(
        ("irony", "emotion"),
        data_root(),
        count=20,
        train_size=60,
        gold_size=60,
        policy="threshold",
        review_share=0.2,
        workdir=tmp_path,
        cache_dir=tmp_path / "cache",
        registry=Registry(str(registry)),
        log=notes.append,
        base=encoder_base,  # the tiny encoder, as bench multitask's test
        min_int8_agreement=0.9,
    )
    tasks = json.loads(demo.tasks_json)
    assert {t: (s["policy"], s["threshold"]) for t, s in tasks.items()} == {
        t: ("threshold", demo.thresholds[t]) for t in ("irony", "emotion")
    }
    assert all(0.0 < th < 1.0 for th in demo.thresholds.values()), demo.thresholds
    said = " ".join(notes)
    assert "policy threshold, starting thresholds calibrated to escalate at most 20% of 120" in said
    assert f"irony {demo.thresholds['irony']:.4f}, emotion {demo.thresholds['emotion']:.4f}" in said
    # The held-out posts: each task's gold sample (the trainer's too), none of them streamed.
    held_out = []
    for spec in tasks.values():
        with open(spec["gold_data"], encoding="utf-8") as fh:
            held_out += [json.loads(line)["text"] for line in fh]
    streamed = set(demo.feed.answers)  # every text the feed carries
    assert len(held_out) == 120 and not streamed & set(held_out)
    juries = load_task_juries(Settings(registry=str(registry), tasks=tasks))
    decisions = [d for i in range(0, 120, 32) for d in juries.decide(held_out[i : i + 32])]
    for task in tasks:
        share = sum(d[task].escalated for d in decisions) / len(decisions)
        assert 0.0 < share <= 0.2, (task, share)
    # --policy unanimous escalates every split vote whatever the threshold: the demo says
    # which tasks it cannot bring under a share below their split votes.
    cfg = MultitaskConfig(("irony", "emotion"), 60, "unanimous", 0.01, base=encoder_base)
    dirs = ensure_jurors(data_root(), cfg, tmp_path / "cache" / "tasks-irony-emotion")
    data = {t: task_data(data_root(), t, 60) for t in cfg.tasks}
    notes.clear()
    assert start_thresholds(dirs, cfg, gold_samples(data, 60), notes.append) == {
        "irony": 0.0,
        "emotion": 0.0,
    }
    assert "under policy unanimous, irony, emotion: more than 1% of posts escalate" in notes[-1]


@pytest.mark.slow  # trains a small multi-head MiniLM juror (two heads, 100 posts each)
def test_multi_task_demo_labels_every_post_on_every_task(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = _demo(
        [
            *("--tasks", "offensive,hate", "--seed-size", "100", "--count", "40"),
            *("--rate", "20", "--every-samples", "20"),
            *("--workdir", str(workdir), "--cache-dir", str(tmp_path / "cache")),
        ],
        {"JURYSTREAM_DATA_ROOT": str(data_root())},
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-3000:]
    rows = _fates(workdir)
    # Every post exactly one fate: one row per id, settled, from one label record.
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40
    assert Counter(r["outcome"] for r in rows) == {"labeled": 40}
    assert {r["label_records"] for r in rows} == {"1"}
    assert Counter(r["task"] for r in rows) == {"offensive": 20, "hate": 20}
    for row in rows:  # every label carries every task; the row's label is its own task's
        labels = json.loads(row["labels"])
        assert set(labels) == {"offensive", "hate"}, row
        assert labels[row["task"]]["label"] == row["label"]
    said = " ".join(result.stdout.split())
    assert "per task" in said and "reviewer: scripted." in said
    assert "starting thresholds calibrated to escalate at most 15% of 600 held-out" in said
    assert (workdir / "demo.png").read_bytes().startswith(b"\x89PNG")
    # The review share is the budget of each task's controller: it never chose a threshold
    # escalating more than the share of the task's gold.
    trainer = next((workdir / "logs").glob("trainer*.log")).read_text()
    decided = re.findall(r"controller of task (\w+): .*escalation ([\d.]+)\)", trainer)
    assert {task for task, _ in decided} == {"offensive", "hate"}, trainer[-3000:]
    assert all(float(share) <= 0.15 for _, share in decided), decided


def test_unknown_tasks_or_tasks_with_data_are_refused_with_what_to_do(tmp_path: Path) -> None:
    env = {"JURYSTREAM_DATA_ROOT": str(data_root())}
    result = _demo(["--tasks", "offensive,sarcasm", "--workdir", str(tmp_path)], env)
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2, said
    assert "unknown task(s) sarcasm; choose among offensive, hate, emotion, irony" in said
    result = _demo(["--tasks", "hate", "--data", "generated", "--workdir", str(tmp_path)], env)
    assert result.returncode == 2 and "leave --data out" in result.stdout + result.stderr
    result = _demo(["--review-share", "0.2", "--workdir", str(tmp_path)], env)
    said = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2 and "--review-share calibrates the juries of --tasks" in said
    assert not (tmp_path / "fates.csv").exists()
