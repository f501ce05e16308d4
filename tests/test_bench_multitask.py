"""`jurystream bench multitask`: its scoring, and one small run on real TweetEval posts."""

from __future__ import annotations

import json
from pathlib import Path

from jurystream.bench.multitask import (
    MultitaskConfig,
    Stream,
    markdown,
    plot,
    run_multitask,
    score_quality,
    write_json,
)
from jurystream.config import Settings
from jurystream.models.rules.voting import Decision
from tests.test_bootstrap import data_root


def d(label: str, escalated: bool = False) -> Decision:
    return Decision(label, 0.9, (), escalated)


def test_each_task_is_scored_on_its_own_posts_with_the_oracle_where_it_escalated() -> None:
    stream = Stream(["a", "b", "c"], ["t1", "t1", "t2"], ["x", "y", "p"])
    multi = [
        {"t1": d("x"), "t2": d("p")},
        {"t1": d("x", escalated=True), "t2": d("q")},  # the oracle gives b's gold on t1
        {"t1": d("x"), "t2": d("q")},
    ]
    single = {"t1": [d("x"), d("x"), d("x")], "t2": [d("p"), d("q"), d("q")]}
    t1, t2 = score_quality(stream, multi, single, ["t1", "t2"])
    assert (t1.posts, t1.multi_accuracy, t1.single_accuracy) == (2, 1.0, 0.5)
    assert t1.f1_drop_points < 0 and abs(t1.escalation - 1 / 3) < 1e-9
    assert (t2.posts, t2.multi_accuracy, t2.escalation) == (1, 0.0, 0.0)


def test_bench_runs_four_tasks_against_single_task_deployments(
    tmp_path: Path, encoder_base: Path
) -> None:
    """Two real tasks, a few posts each, the tiny encoder: every figure is there and the
    shared pass decides exactly as the single-task juries do."""
    cfg = MultitaskConfig(
        tasks=("irony", "emotion"),
        train_size=60,
        repeats=1,
        messages=48,
        val_size=40,
        escalation=0.5,  # half of each task's posts: several posts escalate on both
        base=encoder_base,
        min_int8_agreement=0.9,
        timeout_s=180,
    )
    result = run_multitask(Settings(data_root=data_root()), cfg, tmp_path, log=lambda _: None)
    assert result.stream_posts == 80 and [r.task for r in result.quality] == ["irony", "emotion"]
    assert all(r.posts == 40 and r.f1_drop_points == 0.0 for r in result.quality)
    # Calibrated per task on the jurors' own probabilities; the shared pass pads its chunks
    # differently, which may tip a post at the threshold: one post of margin.
    assert all(0.0 < r.escalation <= 0.5 + 1 / 80 for r in result.quality)
    assert result.end_to_end["multi_posts_per_s"] > 0 and result.end_to_end["single_posts_per_s"]
    assert result.inference["multi_over_four_deployments"] < 1.0  # one encoder pass, not two
    several = next(r for r in result.review["rows"] if r["what"] == "escalated on 2 or more")
    assert several["posts"] > 0 and several["single_calls"] >= 2 * several["multi_calls"]
    assert set(result.headline()) == {
        "inference_cost_ratio",
        "max_f1_drop_points",
        "reviewer_cost_ratio",
    }
    saved = json.loads(write_json(result, tmp_path / "m.json").read_text())
    assert saved["headline"] == result.headline()
    assert "| irony | 40 |" in markdown(result)
    assert plot(result, tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
