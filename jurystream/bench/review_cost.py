"""What one multi-task review call costs against one single-task call per escalated task
(``jurystream bench review-cost``, BENCHMARKS.md "Multi-task review").

Both sides are the reviewer's real prompts (``prompt.messages`` per task, ``prompt.
multitask_messages`` for the post) with k-NN demonstrations from each task's TweetEval gold
pool and jury votes on every asked task, plus the answer each call is expected to return.
Tokens are the project's estimate (``cost.estimate_tokens``, what the test server bills, plus
4 tokens of framing per chat message as ``bench quality`` counts them), so the ratio compares
like with like; no endpoint is called.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jurystream.models.reviewer import prompt
from jurystream.models.reviewer.base import Case, TaskQuestion, TaskSpec
from jurystream.models.reviewer.cost import CallTokens, Price, multitask_cost_ratio
from jurystream.models.reviewer.knn import KnnDemonstrations
from jurystream.models.rules.voting import Vote
from jurystream.models.training.datasets import load_dataset, tweeteval_dir

# TweetEval's four classification tasks as a deployment would describe them.
TWEETEVAL_TASKS: dict[str, TaskSpec] = {
    "offensive": TaskSpec(
        "offensive",
        "Is the post offensive?",
        ("not-offensive", "offensive"),
        {
            "not-offensive": "no insult, threat or profanity",
            "offensive": "insults, threats, profanity or targeted abuse",
        },
    ),
    "hate": TaskSpec(
        "hate",
        "Is the post hate speech against immigrants or women?",
        ("not-hate", "hate"),
        {
            "not-hate": "anything else, including criticism without hatred",
            "hate": "attacks or incites hatred against immigrants or women",
        },
    ),
    "emotion": TaskSpec(
        "emotion",
        "Which emotion does the post express most?",
        ("anger", "joy", "optimism", "sadness"),
        {},
    ),
    "irony": TaskSpec(
        "irony",
        "Is the post ironic?",
        ("non_irony", "irony"),
        {"irony": "says the opposite of what it means, or mocks by overstatement"},
    ),
}
JURORS = ("tfidf", "minilm-a", "minilm-b")
CONFIDENCE = 0.87  # the answers' confidence; its digits are part of the output tokens
PER_MESSAGE_TOKENS = 4  # a chat message's framing, as `bench quality` counts it


@dataclass(frozen=True)
class ReviewCostResult:
    """Ratios (multi-task ÷ single-task calls) per number of escalated tasks."""

    k: int  # demonstrations per single-task call
    multitask_k: int  # demonstrations per task in a multi-task call
    posts: int
    price: Price
    tokens: dict[int, float] = field(default_factory=dict)
    usd: dict[int, float] = field(default_factory=dict)
    multi_tokens: dict[int, float] = field(default_factory=dict)  # mean per post
    single_tokens: dict[int, float] = field(default_factory=dict)  # mean per post, all tasks


def _votes(spec: TaskSpec, rng: random.Random) -> tuple[Vote, ...]:
    """A split jury, as on an escalated task."""
    return tuple(
        Vote(juror, rng.choice(spec.labels), round(rng.uniform(0.5, 0.8), 2)) for juror in JURORS
    )


def _single_answer(label: str) -> str:
    return json.dumps({"label": label, "confidence": CONFIDENCE})


def _multi_answer(labels: Mapping[str, str]) -> str:
    return json.dumps(
        {t: {"label": label, "confidence": CONFIDENCE} for t, label in labels.items()}
    )


def post_calls(
    case: Case,
    specs: Mapping[str, TaskSpec],
    knn: Mapping[str, KnnDemonstrations],
    answers: Mapping[str, str],
    multitask_k: int | None = None,
) -> tuple[CallTokens, list[CallTokens]]:
    """The tokens of one multi-task call for ``case`` (every task it asks), and of one
    single-task call per asked task, with the answers each would return."""
    asked = [q.task for q in case.tasks]
    demos = {t: knn[t].nearest(case.text) for t in asked if t in knn}
    multi_demos = {t: d[:multitask_k] for t, d in demos.items()}
    multi = CallTokens.of(
        prompt.multitask_messages(case, [specs[t] for t in asked], multi_demos),
        _multi_answer({t: answers[t] for t in asked}),
        PER_MESSAGE_TOKENS,
    )
    singles = []
    for q in case.tasks:
        spec = specs[q.task]
        single = Case(case.id, case.text, votes=q.votes)
        msgs = prompt.messages(
            single, spec.instruction, spec.labels, spec.descriptions, demos.get(q.task, ())
        )
        singles.append(CallTokens.of(msgs, _single_answer(answers[q.task]), PER_MESSAGE_TOKENS))
    return multi, singles


def measure(
    posts: Sequence[str],
    specs: Sequence[TaskSpec],
    knn: Mapping[str, KnnDemonstrations],
    escalated: Sequence[int],
    price: Price,
    seed: int = 0,
    multitask_k: int | None = None,
) -> ReviewCostResult:
    """For each post and each n in ``escalated``: n random tasks escalated, one multi-task call
    against n single-task calls, summed over posts (pure given the pools). ``multitask_k``:
    demonstrations per task in the multi-task call (None: as many as the single-task calls)."""
    bad = [n for n in escalated if not 1 <= n <= len(specs)]
    if bad:
        raise ValueError(f"escalated tasks {bad}: a post has 1 to {len(specs)} tasks")
    rng = random.Random(seed)
    by_name = {spec.name: spec for spec in specs}
    k = max((pool.k for pool in knn.values()), default=0)
    result = ReviewCostResult(k, k if multitask_k is None else multitask_k, len(posts), price)
    for n in escalated:
        multis: list[CallTokens] = []
        singles: list[CallTokens] = []
        for i, text in enumerate(posts):
            asked = sorted(rng.sample(list(by_name), n), key=list(by_name).index)
            questions = tuple(TaskQuestion(t, _votes(by_name[t], rng)) for t in asked)
            answers = {t: rng.choice(by_name[t].labels) for t in asked}
            multi, single = post_calls(
                Case(str(i), text, tasks=questions), by_name, knn, answers, multitask_k
            )
            multis.append(multi)
            singles.extend(single)
        multi_total = CallTokens(sum(c.input for c in multis), sum(c.output for c in multis))
        result.tokens[n] = multitask_cost_ratio(multi_total, singles)
        result.usd[n] = multitask_cost_ratio(multi_total, singles, price)
        result.multi_tokens[n] = multi_total.cost() / len(posts)
        result.single_tokens[n] = sum(c.cost() for c in singles) / len(posts)
    return result


def run_review_cost(
    data_root: Path,
    k: int,
    posts: int,
    pool_size: int,
    escalated: Sequence[int],
    price: Price,
    seed: int = 0,
    multitask_k: int | None = None,
    shared_pool: bool = False,
) -> ReviewCostResult:
    """TweetEval's four tasks: gold pools from each val split (``pool_size``, stratified),
    posts from the train splits of all four, shuffled.

    ``shared_pool``: a deployment whose tasks' gold pools hold the same posts (each labeled on
    every task): the offensive pool's texts for all four, with labels drawn at random from
    each task's set. TweetEval has no post labeled on several tasks, so those labels are
    placeholders; only the token counts are meaningful."""
    specs = list(TWEETEVAL_TASKS.values())
    pools = {
        spec.name: load_dataset(
            tweeteval_dir(data_root, spec.name), split="val", drop_empty=True
        ).sample(pool_size, seed=seed)
        for spec in specs
    }
    if shared_pool:
        texts_of_all = pools["offensive"].texts
        rng = random.Random(seed)
        knn = {
            spec.name: KnnDemonstrations(
                texts_of_all, [rng.choice(spec.labels) for _ in texts_of_all], k
            )
            for spec in specs
        }
    else:
        knn = {name: KnnDemonstrations.from_labeled_set(pool, k) for name, pool in pools.items()}
    texts: list[str] = []
    for spec in specs:
        train = load_dataset(tweeteval_dir(data_root, spec.name), split="train", drop_empty=True)
        texts.extend(train.sample(posts, seed=seed, stratified=False).texts)
    random.Random(seed).shuffle(texts)
    return measure(texts[:posts], specs, knn, escalated, price, seed, multitask_k)


def table(result: ReviewCostResult) -> str:
    """A markdown table of the ratios."""
    rows = [
        "| escalated tasks | tokens: one multi-task call | tokens: one call per task "
        "| ratio (tokens) | ratio (USD) |",
        "|---:|---:|---:|---:|---:|",
    ]
    rows.extend(
        f"| {n} | {result.multi_tokens[n]:.0f} | {result.single_tokens[n]:.0f} "
        f"| {result.tokens[n]:.2f} | {result.usd[n]:.2f} |"
        for n in result.tokens
    )
    return "\n".join(rows)
