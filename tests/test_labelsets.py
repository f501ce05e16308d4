"""Label sets are matched by name: same names in another order work, other names are refused."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from jurystream.cli import app
from jurystream.models.rules.labelsets import LabelSetError, align_juror, label_order
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.registry import Registry
from jurystream.models.training.bootstrap import BootstrapPlan, bootstrap_jurors
from jurystream.models.training.datasets import LabeledSet
from jurystream.models.training.sklearn_juror import build_sklearn_juror
from jurystream.stream.feed import LABELS, labeled_examples

REVERSED = tuple(reversed(LABELS))


class FixedJuror:
    """Answers the same probabilities for every text, in its own label order."""

    def __init__(self, name: str, labels: Sequence[str], row: Sequence[float]) -> None:
        self.name, self.version, self.cost = name, "1", 1.0
        self.labels = tuple(labels)
        self.row = list(row)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.row] * len(texts))


def test_label_order_maps_by_name_and_names_what_differs() -> None:
    assert label_order(["b", "a", "c"], ["a", "b", "c"]) == [1, 0, 2]
    with pytest.raises(LabelSetError, match=r"only in the first: \['hate'\].*second: \['hat'\]"):
        label_order(["hate", "not-hate"], ["hat", "not-hate"], "juror x vs the data")


def test_an_aligned_juror_answers_in_the_target_order() -> None:
    juror = FixedJuror("j", ["not-hate", "hate"], [0.9, 0.1])
    aligned = align_juror(juror, ["hate", "not-hate"])
    assert aligned.labels == ("hate", "not-hate") and aligned.name == "j"
    np.testing.assert_allclose(aligned.predict_proba(["x"]), [[0.1, 0.9]])
    assert align_juror(juror, ["not-hate", "hate"]) is juror


def test_a_jury_of_differently_ordered_jurors_votes_by_name() -> None:
    first = FixedJuror("a", ["hate", "not-hate"], [0.8, 0.2])
    other = FixedJuror("b", ["not-hate", "hate"], [0.2, 0.8])  # also says "hate"
    jury = Jury((first, other), policy="unanimous", threshold=0.7)
    assert jury.labels == ("hate", "not-hate")
    (decision,) = jury.decide(["x"])
    assert decision.label == "hate" and not decision.escalated
    swapped = jury.with_juror(FixedJuror("b", ["not-hate", "hate"], [0.9, 0.1]))
    (decision,) = swapped.decide(["x"])
    assert decision.escalated


def test_data_in_another_label_order_keeps_every_examples_label() -> None:
    data = LabeledSet(("a", "b", "c"), (0, 1, 1), ("hate", "not-hate"))
    flipped = data.with_label_order(("not-hate", "hate"))
    assert flipped.gold() == data.gold() and flipped.labels == (1, 0, 0)
    with pytest.raises(LabelSetError, match="label sets differ"):
        data.with_label_order(("hate", "none"))


def reversed_tfidf(directory: Path) -> Path:
    texts, labels = labeled_examples(300, seed=70)
    return build_sklearn_juror(
        texts, [1 - y for y in labels], REVERSED, directory, name="rev", version="1"
    )


def test_models_eval_matches_juror_and_data_labels_by_name(tmp_path: Path) -> None:
    juror = reversed_tfidf(tmp_path / "rev")
    texts, labels = labeled_examples(150, seed=71)
    data = tmp_path / "val.jsonl"  # a JSONL's label set is its sorted names: LABELS' order
    data.write_text(
        "".join(
            json.dumps({"text": t, "label": LABELS[y]}) + "\n"
            for t, y in zip(texts, labels, strict=True)
        )
    )
    args = ["models", "eval", "--juror", str(juror), "--data", str(data), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["labels"] == list(LABELS)
    assert report["jurors"]["rev"]["accuracy"] > 0.85
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "a", "label": "spam"}\n{"text": "b", "label": "ham"}\n')
    refused = CliRunner().invoke(app, [*args[:4], "--data", str(other)])
    assert refused.exit_code == 1
    assert "label sets differ" in refused.output and "'spam'" in refused.output


def test_bootstrap_scores_a_held_out_set_in_another_label_order(tmp_path: Path) -> None:
    texts, labels = labeled_examples(200, seed=72)
    seed = LabeledSet(tuple(texts), tuple(labels), LABELS)
    val_texts, val_labels = labeled_examples(150, seed=73)
    heldout = LabeledSet(tuple(val_texts), tuple(1 - y for y in val_labels), REVERSED)
    (result,) = bootstrap_jurors(
        seed,
        Registry(tmp_path / "registry"),
        BootstrapPlan(transformers=0),
        heldout=heldout,
        progress=False,
        log=lambda _: None,
    )
    assert result.metrics["accuracy"] > 0.85


def test_a_rounds_gate_scores_a_juror_against_gold_by_label_name(tmp_path: Path) -> None:
    from jurystream.models.serving.juror import load_juror
    from jurystream.models.training.rounds import evaluate_on

    juror = load_juror(reversed_tfidf(tmp_path / "rev"))
    texts, labels = labeled_examples(120, seed=74)
    metrics = evaluate_on(juror, [(t, LABELS[y]) for t, y in zip(texts, labels, strict=True)])
    assert metrics["examples"] == 120 and metrics["accuracy"] > 0.85
