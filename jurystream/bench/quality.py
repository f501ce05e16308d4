"""``jurystream bench quality``: labeling quality against reviewer cost, paper-style.

Per TweetEval task, with the val split as the test set:

- each juror alone and the jury's majority vote (no reviewer: cost 0);
- the AutoAnnotator rule: unanimous votes accepted, every split vote goes to the reviewer;
- jury + reviewer at escalation budgets (10/20/30%): the policy's threshold is calibrated on a
  labeled calibration sample of the train split (never on the test set) to the budget, then
  applied to the test set; the escalation rate actually reached on the test set is reported;
- the reviewer alone (it labels everything: the cost the jury saves);
- one continual-learning round: the jury labels a pool of unseen train posts at a budget, the
  reviewer labels what it escalates (the hard samples), and the trainer's round runner
  (``jurystream.models.training.rounds``) refines every juror on them plus a replay of the seed set
  (transformers from their checkpoint, exported to int8; TF-IDF refit), which are evaluated
  again — with the round's own reviewer calls and cost reported.

Two reviewers: the oracle (gold labels, accuracy 1.0) and a simulated reviewer that is wrong
on a configurable share of cases; both are the project's reviewer backends. No LLM is called:
the cost of a call is priced from the configured model's price table with the token count of
the real reviewer prompt (system + user message with the jury's votes and k-NN demonstrations
from the seed set) estimated at 4 characters per token, plus the answer JSON.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from jurystream.bench.jurors import (
    BENCH_LEARNING_RATE,
    BENCH_MIN_INT8_AGREEMENT,
    bench_plan,
    ensure_jurors,
)
from jurystream.config import Settings
from jurystream.models.reviewer.base import Case, Verdict
from jurystream.models.reviewer.cost import estimate_tokens, price_for
from jurystream.models.reviewer.knn import KnnDemonstrations
from jurystream.models.reviewer.oracle import OracleBackend, SimulatedBackend
from jurystream.models.reviewer.prompt import messages
from jurystream.models.rules.continual import Example
from jurystream.models.rules.scores import accuracy, macro_f1
from jurystream.models.rules.voting import Decision
from jurystream.models.serving.juror import Juror, load_juror
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.registry import Registry
from jurystream.models.training.datasets import LabeledSet, load_tweeteval, tweeteval_dir
from jurystream.models.training.evaluation import (
    calibrate_policy,
    juror_probabilities,
    replay_jurors,
)
from jurystream.models.training.rounds import RoundRunner
from jurystream.models.training.store import TrainingStore

Log = Callable[[str], None]


@dataclass(frozen=True)
class QualityConfig:
    """Sizes of one run. The defaults take about half an hour on 2 cores (MiniLM training)."""

    tasks: tuple[str, ...] = ("offensive", "hate")
    seed_size: int = 400  # labeled seed set the jurors are bootstrapped from
    transformers: int = 2  # MiniLM jurors, plus one TF-IDF juror: an odd jury, no tied votes
    calibration_size: int = 400  # labeled train posts (outside the seed) for thresholds
    pool_size: int = 1000  # unlabeled train posts the continual-learning round streams
    test_size: int = 0  # 0: the whole val split
    budgets: tuple[float, ...] = (0.1, 0.2, 0.3)
    policy: str = "threshold"  # the policy calibrated to the budgets
    round_budget: float = 0.2  # escalation budget while the round collects hard samples
    replay_ratio: float = 1.0  # seed examples replayed per hard sample when fine-tuning
    simulated_accuracy: float = 0.9
    base: Path | None = None  # None: the offline MiniLM weights
    learning_rate: float = BENCH_LEARNING_RATE  # bootstrap fine-tuning of the jurors
    batch_size: int = 32

    @classmethod
    def quick(cls) -> QualityConfig:
        """One MiniLM juror, smaller sets: a few minutes on 2 cores."""
        return cls(
            transformers=1, seed_size=200, calibration_size=200, pool_size=400, test_size=500
        )


@dataclass
class Row:
    task: str
    reviewer: str  # "oracle", "simulated:0.90" or "—" for rows without a reviewer
    system: str
    accuracy: float
    macro_f1: float
    escalation_rate: float
    reviewer_calls: int
    cost_usd: float
    note: str = ""


@dataclass
class QualityResult:
    config: dict[str, Any]
    price: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CallPricer:
    """USD of one reviewer call on a case: the real prompt's size, priced per the table."""

    ANSWER_CHARS = len('{"label": "not-offensive", "confidence": 0.95}')
    PER_MESSAGE_TOKENS = 4  # chat-format overhead per message

    def __init__(self, settings: Settings, labels: Sequence[str], pool: LabeledSet) -> None:
        reviewer = settings.reviewer
        self.model = reviewer.model
        self.price = price_for(reviewer.prices, reviewer.model)
        self.task = reviewer.task
        self.labels = tuple(labels)
        self.descriptions = reviewer.label_descriptions
        self.knn = KnnDemonstrations.from_labeled_set(pool, reviewer.knn_k)

    def tokens(self, text: str, decision: Decision | None) -> tuple[int, int]:
        """Input and output tokens of the call; ``decision`` None: no jury votes in the prompt."""
        votes = () if decision is None else decision.votes
        case = Case(id="-", text=text, votes=tuple(votes))
        return self.case_tokens(case)

    def case_tokens(self, case: Case) -> tuple[int, int]:
        """Input and output tokens of the call on a review case as the worker wrote it."""
        knn = self.knn.nearest(case.text)
        msgs = messages(case, self.task, self.labels, self.descriptions, knn)
        tokens_in = sum(estimate_tokens(len(m["content"])) + self.PER_MESSAGE_TOKENS for m in msgs)
        return tokens_in, estimate_tokens(self.ANSWER_CHARS)

    def cost(self, text: str, decision: Decision | None) -> float:
        return self.price.cost(*self.tokens(text, decision))

    def case_cost(self, case: Case) -> float:
        return self.price.cost(*self.case_tokens(case))


def review(
    backend: OracleBackend | SimulatedBackend,
    ids: Sequence[str],
    texts: Sequence[str],
    gold: Sequence[str],
) -> list[str]:
    """The backend's label for every case (the oracle reads gold from the case's meta)."""

    async def all_cases() -> list[str]:
        out = []
        for case_id, text, label in zip(ids, texts, gold, strict=True):
            verdict = await backend.review(Case(id=case_id, text=text, meta={"gold": label}))
            if not isinstance(verdict, Verdict):
                raise RuntimeError(f"reviewer {backend.name} failed on {case_id}: {verdict}")
            out.append(verdict.label)
        return out

    return asyncio.run(all_cases())


@dataclass
class Split:
    """A labeled split with its juror probabilities, reviewer labels and per-call costs."""

    data: LabeledSet
    probs: np.ndarray  # (texts, jurors, labels)
    jurors: tuple[Juror, ...]

    def replay(self) -> tuple[Juror, ...]:
        return replay_jurors(self.probs, self.data.texts, self.jurors)

    def decide(self, policy: str, threshold: float) -> list[Decision]:
        return Jury(self.replay(), policy, threshold).decide(self.data.texts)

    def calibrate(self, policy: str, budget: float) -> float:
        """The policy's threshold for an escalation ``budget`` on this split."""
        return calibrate_policy(self.replay(), policy, self.data.texts, budget)


def _split(jurors: Sequence[Juror], data: LabeledSet, batch_size: int) -> Split:
    return Split(data, juror_probabilities(jurors, data.texts, batch_size), tuple(jurors))


def _score(truth: Sequence[int], pred: Sequence[int]) -> tuple[float, float]:
    return accuracy(truth, pred), macro_f1(truth, pred)


class TaskBench:
    """All rows of one task: jurors, calibration, reviewers and the continual round."""

    def __init__(
        self,
        task: str,
        train: LabeledSet,
        test: LabeledSet,
        settings: Settings,
        config: QualityConfig,
        jurors_root: Path,
        log: Log,
        progress: bool,
    ) -> None:
        self.task, self.settings, self.config, self.log = task, settings, config, log
        self.labels = tuple(train.label_names)
        self.seed = train.sample(config.seed_size, seed=0)
        seen = set(self.seed.texts)
        rest = [i for i, t in enumerate(train.texts) if t not in seen]
        random.Random(1).shuffle(rest)
        self.calibration = train.subset(rest[: config.calibration_size])
        self.pool = train.subset(
            rest[config.calibration_size : config.calibration_size + config.pool_size]
        )
        self.test = test.sample(config.test_size, seed=0) if config.test_size else test
        plan = bench_plan(settings, config.transformers, config.base, config.learning_rate)
        suffix = "" if config.base is None else f"-{config.base.name}"
        registry = jurors_root / f"{task}-s{config.seed_size}{suffix}"
        self.juror_dirs = ensure_jurors(
            registry, self.seed, self.test, plan, progress=progress, log=log
        )
        self.pricer = CallPricer(settings, self.labels, self.seed)
        self.reviewers: list[OracleBackend | SimulatedBackend] = [
            OracleBackend(self.labels),
            SimulatedBackend(self.labels, config.simulated_accuracy),
        ]

    def ids(self, name: str, data: LabeledSet) -> list[str]:
        return [f"{self.task}:{name}:{i}" for i in range(len(data))]

    def rows(self) -> list[Row]:
        jurors = [load_juror(d) for d in self.juror_dirs.values()]
        test, cal = self._splits(jurors)
        rows = self._no_reviewer_rows(test, "")
        truth = list(self.test.labels)
        reviewed = {
            r.name: [
                self.labels.index(x)
                for x in review(r, self.ids("test", self.test), self.test.texts, self.test.gold())
            ]
            for r in self.reviewers
        }
        for reviewer in self.reviewers:
            labels = reviewed[reviewer.name]
            rows.extend(self._reviewed_rows(test, cal, reviewer.name, labels, ""))
            acc, f1 = _score(truth, labels)
            cost = sum(self.pricer.cost(t, None) for t in self.test.texts)
            rows.append(
                Row(self.task, reviewer.name, "reviewer alone", acc, f1, 1.0, len(truth), cost)
            )
            rows.extend(self._round(jurors, cal, reviewer, labels))
        return rows

    def _splits(self, jurors: Sequence[Juror]) -> tuple[Split, Split]:
        b = self.config.batch_size
        return _split(jurors, self.test, b), _split(jurors, self.calibration, b)

    def _no_reviewer_rows(self, test: Split, stage: str) -> list[Row]:
        truth = list(self.test.labels)
        rows = []
        if not stage:
            for k, juror in enumerate(test.jurors):
                acc, f1 = _score(truth, test.probs[:, k].argmax(axis=1))
                rows.append(Row(self.task, "—", f"juror {juror.name} alone", acc, f1, 0.0, 0, 0.0))
        pred = [self.labels.index(d.label) for d in test.decide("majority", 0.0)]
        acc, f1 = _score(truth, pred)
        rows.append(Row(self.task, "—", f"{stage}majority vote", acc, f1, 0.0, 0, 0.0))
        return rows

    def _with_reviewer(
        self, test: Split, decisions: Sequence[Decision], reviewed: Sequence[int]
    ) -> tuple[float, float, float, int, float]:
        """Accuracy, macro-F1, escalation rate, calls and cost when escalations are reviewed."""
        pred, calls, cost = [], 0, 0.0
        for text, decision, reviewer_label in zip(
            self.test.texts, decisions, reviewed, strict=True
        ):
            if decision.escalated:
                pred.append(reviewer_label)
                calls += 1
                cost += self.pricer.cost(text, decision)
            else:
                pred.append(self.labels.index(decision.label))
        acc, f1 = _score(list(self.test.labels), pred)
        return acc, f1, calls / len(pred), calls, cost

    def _reviewed_rows(
        self, test: Split, cal: Split, reviewer: str, reviewed: Sequence[int], stage: str
    ) -> list[Row]:
        rows = []
        budgets = self.config.budgets if not stage else (self.config.round_budget,)
        if not stage:
            acc, f1, rate, calls, cost = self._with_reviewer(
                test, test.decide("unanimous", 0.0), reviewed
            )
            rows.append(
                Row(
                    self.task,
                    reviewer,
                    "unanimous jury + reviewer (AutoAnnotator rule)",
                    acc,
                    f1,
                    rate,
                    calls,
                    cost,
                    "every split vote is reviewed",
                )
            )
        for budget in budgets:
            threshold = cal.calibrate(self.config.policy, budget)
            decisions = test.decide(self.config.policy, threshold)
            acc, f1, rate, calls, cost = self._with_reviewer(test, decisions, reviewed)
            rows.append(
                Row(
                    self.task,
                    reviewer,
                    f"{stage}jury ({self.config.policy}) + reviewer @ {budget:.0%} budget",
                    acc,
                    f1,
                    rate,
                    calls,
                    cost,
                    f"calibrated threshold {threshold:.3f}",
                )
            )
        return rows

    def _round(
        self,
        jurors: Sequence[Juror],
        cal: Split,
        reviewer: OracleBackend | SimulatedBackend,
        reviewed_test: Sequence[int],
    ) -> list[Row]:
        """One continual-learning round driven by ``reviewer``; rows of the jury after it."""
        pool = _split(jurors, self.pool, self.config.batch_size)
        threshold = cal.calibrate(self.config.policy, self.config.round_budget)
        decisions = pool.decide(self.config.policy, threshold)
        hard = [i for i, d in enumerate(decisions) if d.escalated]
        if not hard:
            return []
        hard_set = self.pool.subset(hard)
        answers = review(reviewer, self.ids("pool", hard_set), hard_set.texts, hard_set.gold())
        round_cost = sum(self.pricer.cost(self.pool.texts[i], decisions[i]) for i in hard)
        new = self._retrain(hard_set, answers, reviewer.name)
        test, cal_after = self._splits(new)
        note = (
            f"after 1 round: {len(hard)} hard samples from {len(self.pool)} pool posts, "
            f"round cost {len(hard)} calls ${round_cost:.4f}"
        )
        rows = self._no_reviewer_rows(test, "after round: ")
        rows[-1].reviewer, rows[-1].note = reviewer.name, note
        rows[-1].cost_usd, rows[-1].reviewer_calls = round_cost, len(hard)
        for row in self._reviewed_rows(
            test, cal_after, reviewer.name, reviewed_test, "after round: "
        ):
            row.note = f"{row.note}; {note}"
            rows.append(row)
        return rows

    def _retrain(self, hard: LabeledSet, answers: Sequence[str], reviewer: str) -> list[Juror]:
        """The trainer's round (``RoundRunner``) on the hard samples ``reviewer`` labeled.

        The round runs on copies of the jurors in a scratch registry, with the seed set in the
        store for replay and the calibration sample as its held-out gold (never the test set).
        Its gate accepts every measured candidate: the bench reports the refined jury, and a
        gate that kept the old version would make before and after the same row.
        """
        trainer = self.settings.trainer.model_copy(
            update={"jurors": [], "replay_ratio": self.config.replay_ratio, "gate_tolerance": 1.0}
        )
        gold = list(zip(self.calibration.texts, self.calibration.gold(), strict=True))
        names = list(self.juror_dirs)
        self.log(f"{self.task}: round with {reviewer}: refining {', '.join(names)}")
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            registry = Registry(work / "registry")
            for directory in self.juror_dirs.values():
                registry.publish(directory)
            store = TrainingStore(work / "trainer.sqlite")
            store.add_seed(self.seed)
            store.add_hard_samples(
                Example(case_id, text, label, "hard", reviewer, 1.0)
                for case_id, text, label in zip(
                    self.ids("pool", hard), hard.texts, answers, strict=True
                )
            )
            runner = RoundRunner(
                store,
                registry,
                trainer,
                gold,
                work / "round",
                min_int8_agreement=BENCH_MIN_INT8_AGREEMENT,
            )
            result = runner.run(f"bench quality: {reviewer}")
            if result is None:
                raise RuntimeError(f"{self.task}: the round with {reviewer} found no hard samples")
            failed = [c for c in result.candidates if c.outcome != "promoted"]
            if failed:
                raise RuntimeError(
                    f"{self.task}: round with {reviewer}: "
                    + "; ".join(f"{c.juror} {c.outcome}: {c.reason}" for c in failed)
                )
            return [load_juror(registry.serving_dir(name)) for name in names]


def run_quality(
    settings: Settings,
    config: QualityConfig,
    workdir: Path,
    *,
    data_root: Path | None = None,
    log: Log = print,
    progress: bool = True,
) -> QualityResult:
    """Every row of every task (see the module docstring)."""
    started = time.monotonic()
    root = data_root or settings.data_root
    price = price_for(settings.reviewer.prices, settings.reviewer.model)
    result = QualityResult(
        config={**asdict(config), "base": str(config.base) if config.base else "MiniLM"},
        price={
            "model": settings.reviewer.model,
            "usd_per_m_input": price.input_per_m,
            "usd_per_m_output": price.output_per_m,
            "tokens": "estimated from the real prompt at 4 chars/token; no LLM was called",
        },
    )
    for task in config.tasks:
        directory = tweeteval_dir(root, task)
        train = load_tweeteval(directory, "train", drop_empty=True)
        test = load_tweeteval(directory, "val", drop_empty=True)
        log(f"{task}: {len(train)} train / {len(test)} val posts")
        bench = TaskBench(task, train, test, settings, config, workdir / "jurors", log, progress)
        result.rows.extend(bench.rows())
    result.seconds = round(time.monotonic() - started, 1)
    return result


def write_json(result: QualityResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return path


def table(result: QualityResult) -> Table:
    out = Table(title="labeling quality vs reviewer cost (TweetEval, val split as test)")
    for col in ("task", "reviewer", "system", "acc", "macro-F1", "escalated", "calls", "cost $"):
        out.add_column(col, justify="left" if col in ("task", "reviewer", "system") else "right")
    for r in result.rows:
        out.add_row(
            r.task,
            r.reviewer,
            r.system,
            f"{r.accuracy:.1%}",
            f"{r.macro_f1:.3f}",
            f"{r.escalation_rate:.1%}",
            str(r.reviewer_calls),
            f"{r.cost_usd:.4f}",
        )
    return out


def markdown(result: QualityResult) -> str:
    """The table for BENCHMARKS.md."""
    lines = [
        "| task | reviewer | system | accuracy | macro-F1 | escalated | reviewer calls | cost $ "
        "| note |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in result.rows:
        lines.append(
            f"| {r.task} | {r.reviewer} | {r.system} | {r.accuracy:.1%} | {r.macro_f1:.3f} | "
            f"{r.escalation_rate:.1%} | {r.reviewer_calls} | {r.cost_usd:.4f} | {r.note} |"
        )
    return "\n".join(lines)


def short_name(system: str) -> str:
    """A chart label for a row's system: "10%", "majority", "R alone", "round: 20%", …"""
    stage = "round: " if system.startswith("after round: ") else ""
    system = system.removeprefix("after round: ")
    if system.startswith("juror ") and system.endswith(" alone"):
        name = system.removeprefix("juror ").removesuffix(" alone")
    elif system.startswith("unanimous jury"):
        name = "unanimous+R"
    elif "@" in system:
        name = system.split("@")[1].split()[0]
    elif system == "reviewer alone":
        name = "R alone"
    else:
        name = system.replace(" vote", "")
    return stage + name


def plot(result: QualityResult, path: Path) -> Path:
    """Accuracy against reviewer cost, one panel per task, one marker per reviewer.

    Points are labeled with short names (``short_name``): budgets as "10%", "R" for reviewer.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r.task for r in result.rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 5.5), squeeze=False)
    markers = {"—": "s", "oracle": "o"}
    for ax, task in zip(axes[0], tasks, strict=True):
        for reviewer in dict.fromkeys(r.reviewer for r in result.rows if r.task == task):
            rows = [r for r in result.rows if r.task == task and r.reviewer == reviewer]
            points = ax.scatter(
                [r.cost_usd for r in rows],
                [100 * r.accuracy for r in rows],
                marker=markers.get(reviewer, "^"),
                label="no reviewer" if reviewer == "—" else f"reviewer: {reviewer}",
                alpha=0.8,
            )
            for r in rows:
                ax.annotate(
                    short_name(r.system),
                    (r.cost_usd, 100 * r.accuracy),
                    xytext=(4, 3),
                    textcoords="offset points",
                    fontsize=7,
                    color=points.get_facecolor()[0],
                )
        ax.set_xlabel(f"reviewer cost on the val split, USD ({result.price['model']} prices)")
        ax.set_ylabel("accuracy on val, %")
        ax.set_title(f"TweetEval {task}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        "jury + reviewer: accuracy against cost (R = reviewer, round = after one "
        "continual-learning round)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
