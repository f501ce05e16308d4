"""`jurystream bench recipe`: the data a round would get, the recipe grid, the table's medians
and the verdict; and one small real run that refines MiniLM (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jurystream.bench.recipe import (
    BOOTSTRAP,
    LEARNING_RATES,
    Recipe,
    RecipeConfig,
    default_recipe,
    markdown,
    neighbours,
    one_factor_grid,
    plot,
    reviewed_examples,
    round_examples,
    run_recipes,
    summarize,
    verdict,
    write_json,
)
from jurystream.cli import app
from jurystream.config import Settings, TrainerSettings
from jurystream.models.rules.audit import is_audited
from jurystream.models.rules.continual import Example
from tests.test_bootstrap import data_root


def test_reviewed_examples_are_the_escalations_and_the_audited_accepted_posts() -> None:
    ids = [f"offensive-{i}" for i in range(400)]
    escalated = [i % 4 == 0 for i in range(400)]
    labels = ["OFF" if i % 3 else "NOT" for i in range(400)]
    out = reviewed_examples(ids, [f"t{i}" for i in range(400)], labels, escalated, 0.1)

    hard = [e for e in out if e.origin == "hard"]
    audits = [e for e in out if e.origin == "audit"]
    assert [e.id for e in hard] == [i for i, esc in zip(ids, escalated, strict=True) if esc]
    # The worker's own audit sample: the hash of the post id, accepted posts only.
    expected = [i for i, esc in zip(ids, escalated, strict=True) if not esc and is_audited(i, 0.1)]
    assert [e.id for e in audits] == expected and 10 < len(audits) < 60
    assert all(e.source == "oracle" and e.text == f"t{e.id.split('-')[1]}" for e in out)
    assert all(e.label == labels[int(e.id.split("-")[1])] for e in out)
    assert not [e for e in reviewed_examples(ids, ids, labels, [False] * 400, 0.0)]


def test_round_examples_replay_like_a_trainer_round() -> None:
    new = [Example(f"n{i}", "x", "OFF", "hard", "oracle") for i in range(10)]
    earlier = [Example(f"seed:{i}", "y", ["NOT", "OFF"][i % 2], "seed", "seed") for i in range(40)]
    assert round_examples(new, earlier, None, 1) == [*new, *earlier]  # replay all
    assert round_examples(new, earlier, 0.0, 1) == new
    half = round_examples(new, earlier, 0.5, 1)
    assert half[:10] == new and len(half) == 15 and set(half[10:]) <= set(earlier)
    assert round_examples(new, earlier, 0.5, 1) == half  # the round id seeds the sample


def test_grid_varies_one_setting_at_a_time_around_the_trainer_default() -> None:
    default = default_recipe(TrainerSettings())
    grid = one_factor_grid(default, epochs=(1, 2, 3), replay_ratios=(0.0, None))
    assert grid[0] == default and len(set(grid)) == len(grid)  # the default's duplicates drop
    for recipe in grid[1:]:
        changed = [
            k
            for k in ("start", "epochs", "learning_rate", "replay_ratio")
            if getattr(recipe, k) != getattr(default, k)
        ]
        assert len(changed) == 1 or recipe.start == "base"
    assert {r.epochs for r in grid} >= {1, 2, 3} and {r.replay_ratio for r in grid} == {0.0, None}
    assert [r.name for r in grid if r.start == "base"] == ["from base, 4 ep, lr 1e-04, replay all"]
    assert Recipe("serving", 2, 3e-5, 0.5).name == "2 ep, lr 3e-05, replay 0.5"


def test_grid_follows_the_default_to_its_neighbouring_settings() -> None:
    measured = one_factor_grid(Recipe("serving", 2, 3e-5, None), from_base=False)
    assert [(r.epochs, r.learning_rate, r.replay_ratio) for r in measured] == [
        (2, 3e-5, None),
        (1, 3e-5, None),
        (3, 3e-5, None),
        (2, 1e-5, None),
        (2, 1e-4, None),
        (2, 3e-5, 0.0),
        (2, 3e-5, 1.0),
    ]
    moved = one_factor_grid(Recipe("serving", 1, 1e-4, 1.0), from_base=False)
    assert {r.epochs for r in moved} == {1, 2} and {r.replay_ratio for r in moved} == {0.0, 1.0}
    assert {r.learning_rate for r in moved} == {3e-5, 1e-4, 3e-4}
    assert neighbours(1e-5, LEARNING_RATES) == (3e-5,)
    assert neighbours(2e-4, LEARNING_RATES) == (1e-4, 3e-4)


def _run(recipe: str, seed: int, f1: float) -> dict[str, object]:
    return {
        "recipe": recipe,
        "start": "serving",
        "epochs": 2,
        "learning_rate": 3e-5,
        "replay_ratio": None,
        "seed": seed,
        "examples": 100,
        "seconds": 10.0 + seed,
        "accuracy": f1 + 0.1,
        "macro_f1": f1,
    }


def test_table_takes_medians_and_spreads_and_only_a_gap_beyond_the_seeds_counts() -> None:
    runs = [
        _run("default", 1, 0.70),
        _run("default", 2, 0.72),
        _run("slightly better", 1, 0.715),
        _run("slightly better", 2, 0.735),  # +1.5 points, but the seeds spread 2 points
        _run("clearly better", 1, 0.75),
        _run("clearly better", 2, 0.76),  # +4.5 points, seeds spread 1
        _run("worse", 1, 0.60),
        _run("worse", 2, 0.61),
    ]
    rows = summarize(runs, "default")
    assert [r["recipe"] for r in rows] == ["default", "slightly better", "clearly better", "worse"]
    d, slight, clear, worse = rows
    assert d["macro_f1_median"] == pytest.approx(0.71) and d["macro_f1_spread"] == pytest.approx(
        0.02
    )
    assert d["seconds_median"] == pytest.approx(11.5) and d["seeds"] == 2
    assert not d["beyond_seed_spread"] and not slight["beyond_seed_spread"]
    assert clear["delta_vs_default"] == pytest.approx(0.045) and clear["beyond_seed_spread"]
    assert worse["beyond_seed_spread"] and worse["delta_vs_default"] < 0
    assert verdict(rows, "default") == {
        "default": "default",
        "change": True,
        "best": "clearly better",
        "delta_points": 4.5,
    }
    # Without the clear winner the default stays, though a recipe's median is higher.
    kept = verdict(summarize(runs[:4] + runs[6:], "default"), "default")
    assert kept["change"] is False and kept["best"] == "default"
    with pytest.raises(ValueError, match="default recipe"):
        summarize(runs[2:], "default")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--replay", "half"], "--replay takes a number or 'all'"), (["--seeds", "0"], "--seeds")],
)
def test_recipe_command_refuses_bad_options_before_any_work(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app, ["bench", "recipe", "--workdir", str(tmp_path), *args], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2 and message in result.output
    assert not list(tmp_path.iterdir())  # nothing bootstrapped, nothing written


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_recipe_bench_refines_minilm_and_scores_each_recipe(tmp_path: Path) -> None:
    """Real MiniLM at tiny sizes: a 40-label bootstrap, 80 feed posts reviewed, 1-epoch recipes."""
    settings = Settings(data_root=data_root())
    default = Recipe("serving", 1, 3e-5, None)
    cfg = RecipeConfig(
        seed_size=40,
        feed_size=80,
        escalation=0.5,
        audit_rate=0.2,
        seeds=(1,),
        transformers=1,
        score_size=100,
        recipes=(default, Recipe("serving", 1, 1e-4, 0.0)),
    )
    result = run_recipes(
        settings.model_copy(update={"trainer": TrainerSettings(epochs=1, learning_rate=3e-5)}),
        cfg,
        tmp_path,
        log=lambda _: None,
        progress=False,
    )

    assert result.default == default.name and result.reviewed > 0 and result.score_examples == 100
    assert [r["recipe"] for r in result.rows] == [default.name, "1 ep, lr 1e-04, replay 0"]
    # Replay all adds the 40 seed labels to the reviewed posts; replay 0 trains on those alone.
    assert [r["examples"] for r in result.rows] == [result.reviewed + 40, result.reviewed]
    for run in result.runs:
        assert 0.0 <= run["macro_f1"] <= 1.0 and 0.0 <= run["accuracy"] <= 1.0
    assert 0.0 <= result.bootstrap["macro_f1"] <= 1.0 and BOOTSTRAP in markdown(result)
    path = write_json(result.headline(), tmp_path / "docs" / "recipe.json")
    saved = json.loads(path.read_text())
    assert [r["recipe"] for r in saved["rows"]] == [r["recipe"] for r in result.rows]
    assert [r["learning_rate"] for r in saved["rows"]] == [3e-5, 1e-4]  # not rounded away
    assert plot(result, tmp_path / "docs" / "recipe.png").read_bytes()[:4] == b"\x89PNG"
