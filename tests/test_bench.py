"""Both benches end to end at tiny sizes: the structure and sanity of what they report.

No timing assertions: the machine is shared, so only that every number exists, is finite and
positive where it must be, and that the targets are judged against measured values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jurystream.bench.perf import PerfConfig, run_perf, tables, write_json
from jurystream.bench.perf import markdown as perf_markdown
from jurystream.bench.quality import QualityConfig, markdown, plot, run_quality, table
from jurystream.cli import app
from jurystream.config import Settings
from jurystream.models.serving.registry import Registry
from jurystream.models.training.datasets import LabeledSet
from jurystream.stream.feed import LABELS, labeled_examples


def feed_set(n: int, seed: int) -> LabeledSet:
    texts, labels = labeled_examples(n, seed=seed)
    return LabeledSet(tuple(texts), tuple(labels), LABELS, "feed")


def write_tweeteval(root: Path, task: str, splits: dict[str, LabeledSet]) -> Path:
    """A TweetEval-style task dir made of generated posts (no dataset texts in the repo)."""
    directory = root / "tweeteval" / task
    directory.mkdir(parents=True)
    (directory / "mapping.txt").write_text(
        "".join(f"{i}\t{name}\n" for i, name in enumerate(LABELS))
    )
    for split, data in splits.items():
        (directory / f"{split}_text.txt").write_text("\n".join(data.texts) + "\n")
        (directory / f"{split}_labels.txt").write_text("\n".join(map(str, data.labels)) + "\n")
    return root


def test_perf_bench_reports_every_measurement_and_target(
    tiny_jurors: list[Path], tmp_path: Path
) -> None:
    config = PerfConfig(
        texts=32,
        messages=64,
        repeats=2,
        batch_size=8,
        loads=(0.25, 0.5),
        latency_seconds=1.0,
        timeout_s=120.0,
    )
    result = run_perf(tiny_jurors, feed_set(120, seed=5), Settings(), config, tmp_path)

    assert len(result.repeats) == 2
    for name in ("limit", "ceiling", "every_core", "end_to_end", "torch", "cascade"):
        assert result.throughput[name] > 0, name
    assert set(result.ratios) == {
        "e2e_over_limit",
        "e2e_over_ceiling",
        "every_core_over_ceiling",
        "onnx_over_torch",
        "cascade_over_full",
    }
    assert all(r > 0 and math.isfinite(r) for r in result.ratios.values())
    # The limit is the best of its grid, which holds the one-thread pool's batch size too.
    assert all("batch" in r.limit_config for r in result.repeats)
    assert 0.0 <= result.accuracy["cascade"] <= 1.0
    assert 1.0 <= result.accuracy["cascade_juror_calls_per_text"] <= 3.0
    assert [row.load for row in result.latency] == [0.25, 0.5]
    for row in result.latency:
        assert 0 < row.p50_ms <= row.p99_ms
        assert row.messages >= config.batch_size
        # Stages read from the worker's own metrics over this load level.
        assert 1 <= row.mean_batch <= config.batch_size
        assert set(row.stages_ms) == {"batch_wait", "inference", "produce"}
        assert all(0 < v < row.p99_ms * 10 for v in row.stages_ms.values())
    assert 0 < result.rss_mb["idle_after_load"] <= result.rss_mb["peak"]
    assert set(result.idle_cpu) == {"worker", "broker"}
    assert all(0 <= v < 4 for v in result.idle_cpu.values())
    assert [t.name for t in result.targets] == [
        "end-to-end vs machine limit",
        "p99 latency at 25% load (ms)",
        "p99 latency at 50% load (ms)",
        "ONNX jury vs PyTorch pipelines (1 thread each)",
        "cascade vs full jury throughput",
        "cascade accuracy loss (points)",
        "worker peak RSS (MB)",
    ]
    assert result.targets[0].value == result.ratios["e2e_over_limit"]
    assert result.machine["cores"] >= 1 and result.machine["cpu"]

    path = tmp_path / "perf.json"
    path.write_text(json.dumps({"scale_2_over_1": 1.7, "throughput": {"old": 1}}))
    saved = json.loads(write_json(result, path).read_text())
    assert saved["throughput"] == result.throughput
    assert saved["scale_2_over_1"] == 1.7  # another bench's headline is kept
    assert saved["e2e_over_limit"] == result.ratios["e2e_over_limit"]
    assert saved["p99_ms_at_25"] == result.latency[0].p99_ms
    assert saved["peak_rss_mb"] == result.rss_mb["peak"]
    assert isinstance(saved["targets"][0]["met"], bool)
    assert len(tables(result)) == 3
    report = perf_markdown(result)
    assert report.count("| 25% |") == 1 and "worker peak RSS" in report


def test_quality_bench_rows_costs_and_chart(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_tweeteval(
        tmp_path / "data",
        "offensive",
        {"train": feed_set(300, seed=21), "val": feed_set(120, seed=22)},
    )
    config = QualityConfig(
        tasks=("offensive",),
        seed_size=80,
        transformers=1,
        calibration_size=80,
        pool_size=100,
        base=tiny_base,
        learning_rate=2e-3,
        simulated_accuracy=0.8,
    )
    settings = Settings().model_copy(
        update={"trainer": Settings().trainer.model_copy(update={"learning_rate": 1e-3})}
    )
    result = run_quality(
        settings, config, tmp_path / "bench", data_root=root, log=lambda _: None, progress=False
    )

    systems = [(r.reviewer, r.system) for r in result.rows]
    assert ("—", "juror tfidf alone") in systems
    assert ("—", "juror minilm-0 alone") in systems
    assert ("—", "majority vote") in systems
    for reviewer in ("oracle", "simulated:0.80"):
        for budget in ("10%", "20%", "30%"):
            assert (reviewer, f"jury (threshold) + reviewer @ {budget} budget") in systems
        assert (reviewer, "reviewer alone") in systems
        assert (reviewer, "after round: majority vote") in systems
        assert (reviewer, "after round: jury (threshold) + reviewer @ 20% budget") in systems
    for row in result.rows:
        assert 0.0 <= row.accuracy <= 1.0 and 0.0 <= row.escalation_rate <= 1.0
        assert row.cost_usd >= 0 and row.reviewer_calls >= 0
        assert (row.cost_usd > 0) == (row.reviewer_calls > 0), row
    alone = {r.reviewer: r for r in result.rows if r.system == "reviewer alone"}
    assert alone["oracle"].accuracy == 1.0
    assert alone["oracle"].reviewer_calls == 120
    # The jury's whole point: a 10% budget costs a fraction of reviewing everything.
    budget10 = next(r for r in result.rows if r.reviewer == "oracle" and "10%" in r.system)
    assert budget10.cost_usd < alone["oracle"].cost_usd / 2
    assert result.price["model"] == settings.reviewer.model

    chart = plot(result, tmp_path / "quality.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert markdown(result).count("\n") == len(result.rows) + 1
    assert table(result).row_count == len(result.rows)
    # Jurors are cached: a second run reuses them instead of training again.
    registry = tmp_path / "bench" / "jurors" / f"offensive-s80-{tiny_base.name}"
    assert (registry / "minilm-0" / "serving.json").is_file()
    # The rounds refined copies: the cached jurors stay as bootstrapped for the next run.
    assert [len(Registry(registry).versions(n)) for n in ("minilm-0", "tfidf")] == [1, 1]


def test_bench_commands_are_mounted() -> None:
    runner = CliRunner()
    for command in ("perf", "scale", "quality"):
        result = runner.invoke(app, ["bench", command, "--help"])
        assert result.exit_code == 0, result.output
