"""`jurystream bench loop`: its per-segment arithmetic, and one small run of the real roles."""

from __future__ import annotations

from pathlib import Path

import pytest

from jurystream.bench.loop import (
    LoopConfig,
    markdown,
    plot,
    rescore,
    run_loop,
    run_registry,
    segment_stats,
    split_halves,
    write_json,
)
from jurystream.config import Settings
from tests.test_bootstrap import data_root

HEADLINE_KEYS = {
    "f1_gain_points",
    "escalation_last_over_first",
    "accepted_accuracy_first",
    "accepted_accuracy_last",
    "combined_accuracy",
    "combined_macro_f1",
    "combined_escalation",
    "audit_covers_gold",
}


def test_val_halves_are_disjoint_and_cover_the_split() -> None:
    gate, score = split_halves(101)
    assert not set(gate) & set(score) and sorted(gate + score) == list(range(101))
    assert split_halves(101) == (gate, score)  # the same halves in every run


def test_segment_stats_score_the_final_labels_and_the_audits_against_gold() -> None:
    ids = [f"p{i}" for i in range(10)]
    gold = {i: ("pos" if n < 5 else "neg") for n, i in enumerate(ids)}
    labels = {
        i: {"label": gold[i], "source": "jury", "threshold": 0.7, "model_versions": {"j": "2"}}
        for i in ids
    }
    labels["p0"] = {"label": "neg", "source": "jury", "threshold": 0.7}  # a wrong jury label
    labels["p9"] = {"label": "neg", "source": "oracle"}  # an escalation the reviewer answered
    audits = {"p0": "pos", "p1": "pos"}  # the reviewer disagreed once, agreed once
    stats = segment_stats(ids, gold, labels, audits, ["neg", "pos"])
    assert stats["escalation"] == pytest.approx(0.1)
    assert stats["accepted_labels"] == 9
    assert stats["jury_gold_accuracy"] == pytest.approx(8 / 9)
    assert stats["all_accuracy"] == pytest.approx(0.9)
    assert stats["audits"] == 2 and stats["audit_accuracy"] == pytest.approx(0.5)
    assert stats["audit_low"] < 8 / 9 < stats["audit_high"] and stats["audit_covers_gold"]
    assert stats["threshold"] == 0.7 and stats["versions"] == {"j": "2"}


def test_a_run_registry_holds_only_the_jurors_of_the_run(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for name in ("minilm-0", "minilm-1", "minilm-2", "tfidf"):
        (cache / name / "1").mkdir(parents=True)
        (cache / name / "serving.json").write_text('{"version": "1"}')
    registry = run_registry(cache, ["minilm-0", "tfidf"], tmp_path / "run" / "registry")
    assert sorted(p.name for p in Path(registry.root).iterdir()) == ["minilm-0", "tfidf"]
    assert (Path(registry.root) / "tfidf" / "serving.json").is_file()


@pytest.mark.slow
def test_loop_bench_runs_the_real_roles_segment_by_segment(tmp_path: Path) -> None:
    """TF-IDF jurors only (MiniLM rounds take minutes): 2 segments of real offensive posts."""
    settings = Settings(data_root=data_root())
    cfg = LoopConfig(seed_size=200, feed_size=600, segments=2, transformers=0, audit_rate=0.1)
    result = run_loop(settings, cfg, tmp_path, log=lambda _: None)

    assert [s.posts for s in result.segments] == [300, 300]
    for seg in result.segments:
        assert 0.0 < seg.escalation < 1.0
        assert seg.audits > 0 and seg.audit_low <= seg.audit_accuracy <= seg.audit_high
        assert seg.reviewer_calls >= round(seg.escalation * seg.posts) and seg.reviewer_usd > 0
        assert seg.threshold is not None and set(seg.versions) == {"tfidf"}
    # The trainer ran rounds on what the oracle reviewed, and the gate judged them.
    assert result.rounds and {r["outcome"] for r in result.rounds} <= {"promoted", "rejected"}
    alone = result.baselines["reviewer_alone"]
    assert alone["calls"] == 600 and alone["accuracy"] == 1.0  # the oracle
    assert result.baselines["learning_loop"]["usd"] < alone["usd"]
    assert set(result.headline) == HEADLINE_KEYS
    for stage in ("before", "after"):
        assert 0.0 < result.val[stage]["combined"]["escalation"] <= 0.2 + 1e-9
    assert markdown(result).count("\n| 1 |") == 1
    assert plot(result, tmp_path / "loop.png").read_bytes()[:4] == b"\x89PNG"
    # Scoring a finished run again from the registry it left gives the same figures.
    again = rescore(settings, write_json(result, tmp_path / "loop.json"), tmp_path)
    assert again.val == result.val and again.headline == result.headline
    assert [s.escalation for s in again.segments] == [s.escalation for s in result.segments]
