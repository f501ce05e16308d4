"""The chain's tiers: oracle, simulated, local ONNX, k-NN demonstrations and the chain itself,
and what they report through ``ReviewHooks`` (no Prometheus in the model layer)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from jurystream.config import ReviewerSettings
from jurystream.models.reviewer.base import Case, Failure, Forward, Verdict
from jurystream.models.reviewer.chain import Chain, build_chain
from jurystream.models.reviewer.hooks import CallOutcome
from jurystream.models.reviewer.knn import KnnDemonstrations
from jurystream.models.reviewer.local import LocalBackend
from jurystream.models.reviewer.openai_backend import ReviewerConfigError
from jurystream.models.reviewer.oracle import OracleBackend, SimulatedBackend
from jurystream.models.serving.juror import load_juror
from jurystream.models.training.datasets import load_dataset, tweeteval_dir
from jurystream.testing.openai_server import OpenAIServer, label_reply

LABELS = ("not-offensive", "offensive")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _case(i: int, gold: str | None = "offensive", text: str = "you clown") -> Case:
    return Case(id=str(i), text=text, meta={"gold": gold} if gold else {})


class Recorder:
    """A ``ReviewHooks`` that keeps what the tiers report."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, CallOutcome]] = []
        self.bills: list[tuple[str, int, int, float]] = []
        self.budgets: list[tuple[dict[str, float], bool]] = []

    def called(self, backend: str, outcome: CallOutcome) -> None:
        self.calls.append((backend, outcome))

    def billed(self, backend: str, input_tokens: int, output_tokens: int, usd: float) -> None:
        self.bills.append((backend, input_tokens, output_tokens, usd))

    def budget(self, remaining_usd: Mapping[str, float], exhausted: bool) -> None:
        self.budgets.append((dict(remaining_usd), exhausted))


async def test_oracle_answers_gold_and_reports_itself() -> None:
    hooks = Recorder()
    oracle = OracleBackend(LABELS, hooks)
    verdict = await oracle.review(_case(1))
    assert verdict == Verdict("offensive", 1.0, "oracle")
    for bad in (_case(2, gold=None), _case(3, gold="spam")):
        failure = await oracle.review(bad)
        assert isinstance(failure, Failure) and failure.permanent
    assert hooks.calls == [("oracle", "ok"), ("oracle", "error"), ("oracle", "error")]


def test_the_model_layer_reports_without_prometheus() -> None:
    tiers = ("chain", "local", "oracle", "openai_backend")
    code = (
        "import sys\n"
        + "".join(f"import jurystream.models.reviewer.{t}\n" for t in tiers)
        + "print(sorted(m for m in sys.modules "
        "if m.startswith(('prometheus_client', 'jurystream.exporters'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


async def test_simulated_reviewer_has_its_accuracy_and_replays_identically() -> None:
    sim = SimulatedBackend(LABELS, accuracy=0.8, seed=3)
    cases = [_case(i, gold=LABELS[i % 2]) for i in range(2000)]
    verdicts = [await sim.review(c) for c in cases]
    assert all(isinstance(v, Verdict) and v.source == "simulated:0.80" for v in verdicts)
    labels = [v.label for v in verdicts if isinstance(v, Verdict)]
    correct = sum(label == c.meta["gold"] for label, c in zip(labels, cases, strict=True))
    assert 0.77 < correct / len(cases) < 0.83
    again = [await sim.review(c) for c in cases[:50]]
    assert again == verdicts[:50]
    perfect = SimulatedBackend(LABELS, accuracy=1.0)
    exact = [await perfect.review(c) for c in cases[:100]]
    assert [v.label for v in exact if isinstance(v, Verdict)] == [
        c.meta["gold"] for c in cases[:100]
    ]


def test_knn_picks_similar_gold_examples_and_never_the_case_itself() -> None:
    pool = KnnDemonstrations(
        ["you are a stupid clown", "lovely sunny day", "what an idiot clown", "nice coffee"],
        ["offensive", "not-offensive", "offensive", "not-offensive"],
        k=2,
    )
    demos = pool.nearest("such a stupid clown")
    assert [d.label for d in demos] == ["offensive", "offensive"]
    assert demos[0].text == "you are a stupid clown"
    assert all(d.text != "lovely sunny day" for d in pool.nearest("lovely sunny day"))
    assert KnnDemonstrations(["a"], ["x"], k=0).nearest("a") == []


def test_knn_over_a_tweeteval_gold_pool() -> None:
    directory = tweeteval_dir(DATA, "offensive")
    assert directory.is_dir(), f"no TweetEval data at {directory}: set JURYSTREAM_DATA_ROOT"
    pool = load_dataset(directory, split="val").sample(200, seed=0)
    knn = KnnDemonstrations.from_labeled_set(pool, k=4)
    demos = knn.nearest(pool.texts[0] + " !!")
    assert len(demos) == 4 and demos[0].text == pool.texts[0]
    assert {d.label for d in demos} <= set(pool.label_names)


async def test_local_tier_decides_when_sure_and_forwards_otherwise(
    sklearn_jurors: list[Path],
) -> None:
    juror = load_juror(sklearn_jurors[0])
    sure = LocalBackend(juror, threshold=0.0)
    never = LocalBackend(juror, threshold=1.01)
    try:
        verdict = await sure.review(_case(1))
        forward = await never.review(_case(1))
    finally:
        sure.close()
        never.close()
    assert isinstance(verdict, Verdict) and verdict.label in juror.labels
    assert verdict.source == f"reviewer:local:{juror.name}@{juror.version}"
    assert isinstance(forward, Forward)


async def test_chain_asks_the_llm_only_for_what_the_local_tier_forwards(
    sklearn_jurors: list[Path], openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_KEY", "k")
    openai_server.answer = lambda body: label_reply("not-offensive")
    settings = ReviewerSettings(
        chain=["local", "openai"],
        local_model=str(sklearn_jurors[0]),
        local_threshold=0.0,
        base_url=openai_server.base_url,
        model="m",
        prices={"m": {"input": 1, "output": 1}},
        api_key_env="TEST_KEY",
        label_descriptions={"not-offensive": "", "offensive": ""},
    )
    hooks = Recorder()
    chain = build_chain(settings, hooks)
    try:
        decided = await chain.review(_case(1))
        assert isinstance(decided, Verdict) and decided.source.startswith("reviewer:local:")
        assert openai_server.requests == []
        local = chain.tiers[0]
        assert isinstance(local, LocalBackend)
        local.threshold = 1.01  # now unsure of everything
        forwarded = await chain.review(_case(2))
    finally:
        await chain.close()
    assert forwarded == Verdict("not-offensive", 0.9, "reviewer:openai:m", forwarded.cost_usd)
    assert len(openai_server.requests) == 1
    local_name = chain.tiers[0].name
    assert hooks.calls == [(local_name, "ok"), (local_name, "ok"), ("reviewer:openai:m", "ok")]
    ((backend, input_tokens, output_tokens, usd),) = hooks.bills
    assert backend == "reviewer:openai:m" and input_tokens > 0 and output_tokens > 0
    assert usd == pytest.approx(forwarded.cost_usd)
    assert hooks.budgets == [({}, False)]  # no budget windows configured, never exhausted


def test_chain_must_end_with_a_tier_that_answers(sklearn_jurors: list[Path]) -> None:
    with pytest.raises(ReviewerConfigError, match="forwards unsure cases to nobody"):
        build_chain(ReviewerSettings(chain=["local"], local_model=str(sklearn_jurors[0])))
    with pytest.raises(ReviewerConfigError, match="unknown reviewer tiers"):
        build_chain(ReviewerSettings(chain=["gpt5"]))
    with pytest.raises(ReviewerConfigError):
        Chain([])


def test_build_chain_takes_labels_and_demonstrations_from_the_gold_pool(
    openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tweeteval_dir(DATA, "offensive")
    assert directory.is_dir(), f"no TweetEval data at {directory}: set JURYSTREAM_DATA_ROOT"
    monkeypatch.setenv("TEST_KEY", "k")
    openai_server.answer = lambda body: label_reply("offensive")
    settings = ReviewerSettings(
        chain=["openai"],
        gold_pool=directory,
        gold_pool_size=100,
        knn_k=3,
        base_url=openai_server.base_url,
        model="m",
        prices={"m": {"input": 1, "output": 1}},
        api_key_env="TEST_KEY",
    )
    chain = build_chain(settings)

    async def ask() -> Verdict | Failure:
        try:
            return await chain.review(_case(1, text="@user you are such an idiot"))
        finally:
            await chain.close()

    assert isinstance(asyncio.run(ask()), Verdict)
    user = openai_server.requests[0].user
    assert user.count(" -> label: ") == 3
    assert openai_server.requests[0].body["response_format"]["json_schema"]["schema"]["properties"][
        "label"
    ]["enum"] == ["not-offensive", "offensive"]


def test_onnx_encoder_gives_padding_invariant_unit_embeddings(
    tiny_base: Path, tmp_path: Path
) -> None:
    from jurystream.exporters.onnx import export_encoder
    from jurystream.models.reviewer.knn import OnnxEncoder

    encoder = OnnxEncoder(export_encoder(tiny_base, tmp_path / "encoder"))
    short, long = "you clown", "the referee was pathetic and the whole game was a disgrace"
    alone = encoder.encode([short])
    batched = encoder.encode([short, long])
    assert batched.shape[0] == 2 and batched.shape[1] == 32  # the tiny BERT's hidden size
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    # Mean pooling honours the attention mask: padding to the longer text changes nothing.
    assert np.allclose(alone[0], batched[0], atol=1e-5)
    assert not np.allclose(batched[0], batched[1], atol=1e-3)

    pool = KnnDemonstrations(
        [short, long, "nice game", "lovely day"],
        ["offensive", "offensive", "not-offensive", "not-offensive"],
        k=3,
        encoder=encoder,
    )
    demos = pool.nearest(short)
    assert len(demos) == 3 and short not in {d.text for d in demos}
