"""``bench scale``: its pure figures, and one small real run through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jurystream.bench.scale import (
    ReviewerRate,
    per_thousand,
    review_cases_for,
    reviewer_over_ideal,
    scale_ratios,
    steady_rate,
    update_headlines,
)
from jurystream.cli import app
from tests.test_bench import feed_set, write_tweeteval


def test_scale_ratios_divide_by_one_worker() -> None:
    assert scale_ratios({1: 100.0, 2: 150.0, 4: 120.0}) == {
        "scale_2_over_1": 1.5,
        "scale_4_over_1": 1.2,
    }
    with pytest.raises(ValueError, match="1 worker"):
        scale_ratios({2: 150.0})


def test_reviewer_headline_is_the_worst_concurrency() -> None:
    rates = [
        ReviewerRate(8, 0.3, 200, 8.0, 26.0, 8, 0.8),  # 25/s of an ideal 26.7/s
        ReviewerRate(64, 0.3, 1000, 10.0, 120.0, 64, 5.0),  # 100/s of 213/s
    ]
    assert rates[0].summary()["over_ideal"] == pytest.approx(25 / (8 / 0.3))
    assert rates[1].summary()["cpu_ms_per_case"] == 5.0
    assert rates[1].summary()["cpu_share"] == 0.5
    assert reviewer_over_ideal(rates) == pytest.approx(100 / (64 / 0.3))


def test_steady_rate_leaves_out_start_and_drain() -> None:
    # 100 labels: a slow first and last tenth, 80 labels a second in between.
    arrivals = [1.0 + i / 80 for i in range(100)]
    arrivals[:10] = [0.5 + 0.05 * i for i in range(10)]
    arrivals[90:] = [arrivals[89] + 0.5 * (i + 1) for i in range(10)]
    assert steady_rate(arrivals) == pytest.approx(80.0)
    with pytest.raises(ValueError, match="too few"):
        steady_rate([1.0])


def test_sizes_and_per_thousand() -> None:
    assert review_cases_for(8, 0.3, 8.0) == 214  # 26.7/s for 8 s
    assert review_cases_for(64, 0.3, 0.5) == 256  # never under 4 rounds of the concurrency
    assert per_thousand(30.0, 500) == 60.0


def test_update_headlines_keeps_every_other_key(tmp_path: Path) -> None:
    path = tmp_path / "perf.json"
    before = {"e2e_over_limit": 0.9, "machine": {"cores": 2}, "scale_2_over_1": 0}
    path.write_text(json.dumps(before))
    data = update_headlines(path, {"scale_2_over_1": 1.4, "reviewer_over_ideal": 0.95})
    assert (
        json.loads(path.read_text())
        == data
        == {
            "e2e_over_limit": 0.9,
            "machine": {"cores": 2},
            "scale_2_over_1": 1.4,
            "reviewer_over_ideal": 0.95,
        }
    )
    fresh = update_headlines(tmp_path / "new" / "perf.json", {"scale_4_over_1": 2.0})
    assert fresh == {"scale_4_over_1": 2.0}
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not hold a JSON object"):
        update_headlines(path, {"scale_4_over_1": 2.0})


@pytest.mark.timeout(180)
def test_scale_bench_small_real_run(sklearn_jurors: list[Path], tmp_path: Path) -> None:
    data = write_tweeteval(
        tmp_path / "data",
        "offensive",
        {"train": feed_set(300, seed=11), "val": feed_set(150, seed=12)},
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "perf.json").write_text(json.dumps({"e2e_over_limit": 0.5, "peak_rss_mb": 200}))
    args = ["bench", "scale", "-j", str(sklearn_jurors[0]), "-j", str(sklearn_jurors[1])]
    args += ["--tfidf-juror", str(sklearn_jurors[2]), "--no-minilm"]
    args += ["-w", "1", "-w", "2", "--messages", "200", "--repeats", "1", "--paced-load", "0.5"]
    args += ["--concurrency", "4", "--review-latency", "0.05", "--review-seconds", "1"]
    args += ["--train-samples", "200", "--data", str(data / "tweeteval" / "offensive")]
    args += ["--workdir", str(tmp_path / "bench"), "--out", str(docs)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    saved = json.loads((docs / "scale.json").read_text())
    assert [w["workers"] for w in saved["workers"]] == [1, 2]
    assert all(w["throughput_per_s"] > 0 and w["p99_ms"] > 0 for w in saved["workers"])
    # Latency at one offered load: half the 1-worker throughput, for both worker counts.
    rate = saved["workers"][0]["throughput_per_s"] / 2
    for w in saved["workers"]:
        assert w["paced"]["rate_per_s"] == pytest.approx(rate)
        assert 0 < w["paced"]["p50_ms"] <= w["paced"]["p99_ms"]
    (review,) = saved["reviewer"]
    assert review["concurrency"] == 4 and review["cases_per_s"] > 0
    assert review["ideal_per_s"] == pytest.approx(80.0)
    assert 0 < review["max_in_flight_seen"] <= 4  # the server saw the concurrency, not more
    (round_time,) = saved["training"]
    assert round_time["kind"] == "tfidf" and round_time["samples"] == 200
    assert round_time["seconds_per_1000"] == pytest.approx(5 * round_time["seconds"])
    assert saved["machine"]["usable_cores"] >= 1
    assert len(saved["machine"]["load_average_end"]) == 3
    assert saved["command"].startswith("jurystream bench scale -j ")
    assert "--no-minilm" in saved["command"]
    ratio = saved["headline"]["scale_2_over_1"]
    assert ratio == pytest.approx(
        saved["workers"][1]["throughput_per_s"] / saved["workers"][0]["throughput_per_s"]
    )
    headlines = json.loads((docs / "perf.json").read_text())
    assert headlines["e2e_over_limit"] == 0.5 and headlines["peak_rss_mb"] == 200
    assert headlines["scale_2_over_1"] == ratio
    assert math.isfinite(headlines["reviewer_over_ideal"]) and headlines["reviewer_over_ideal"] > 0
    assert "scale_4_over_1" not in headlines  # not measured in this run, not invented
    assert (docs / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
