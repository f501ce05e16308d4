"""The reviewer chain: cheap tiers first, each deciding what it is sure of (chain ensembles).

``review`` walks the tiers until one returns a Verdict or a Failure. A tier that may forward
(the local model) cannot be last, so every case ends decided or failed, never undecided.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from jurystream.config import ReviewerSettings, TaskSettings
from jurystream.models.reviewer.base import (
    Backend,
    Case,
    Failure,
    Forward,
    Verdict,
    task_specs,
)
from jurystream.models.reviewer.hooks import NO_HOOKS, ReviewHooks
from jurystream.models.reviewer.knn import KnnDemonstrations, OnnxEncoder
from jurystream.models.reviewer.local import LocalBackend
from jurystream.models.reviewer.openai_backend import (
    Demonstrations,
    OpenAIBackend,
    ReviewerConfigError,
)
from jurystream.models.reviewer.oracle import OracleBackend, SimulatedBackend
from jurystream.models.reviewer.spend import Peers
from jurystream.models.serving.juror import load_juror
from jurystream.models.training.datasets import LabeledSet, load_dataset, load_task_dataset

log = logging.getLogger(__name__)

TIERS = ("local", "openai", "oracle", "simulated")


class Chain:
    def __init__(self, tiers: Sequence[Backend]) -> None:
        if not tiers:
            raise ReviewerConfigError("the reviewer chain is empty; set reviewer.chain")
        if getattr(tiers[-1], "forwards", False):
            raise ReviewerConfigError(
                f"the last tier {tiers[-1].name} forwards unsure cases to nobody; put a tier "
                "that always answers (openai, oracle, simulated) after it"
            )
        self.tiers = tuple(tiers)

    async def review(self, case: Case) -> Verdict | Failure:
        for tier in self.tiers:
            outcome = await tier.review(case)
            if isinstance(outcome, Forward):
                log.debug("case %s forwarded by %s: %s", case.id, outcome.source, outcome.reason)
                continue
            return outcome
        raise AssertionError("unreachable: the last tier never forwards")  # checked in __init__

    async def close(self) -> None:
        for tier in self.tiers:
            if isinstance(tier, OpenAIBackend):
                await tier.close()
            elif isinstance(tier, LocalBackend):
                tier.close()


def _knn(settings: ReviewerSettings, pool: LabeledSet) -> KnnDemonstrations:
    encoder = OnnxEncoder(settings.knn_encoder) if settings.knn_encoder is not None else None
    return KnnDemonstrations.from_labeled_set(pool, settings.knn_k, encoder)


def task_demonstrations(
    settings: ReviewerSettings, tasks: Mapping[str, TaskSettings]
) -> dict[str, Demonstrations]:
    """k-NN demonstrations per task from its own gold pool (``tasks.<name>.gold_pool``), k =
    ``reviewer.knn_k`` each; tasks without a pool get none."""
    if settings.knn_k == 0:
        return {}
    out: dict[str, Demonstrations] = {}
    for name, task in tasks.items():
        if task.gold_pool is None:
            continue
        # A blank example teaches nothing (TweetEval hate's val split has one).
        pool = load_task_dataset(
            task.gold_pool, "val", name, "gold_pool", task.labels, drop_empty=True
        )
        out[name] = _knn(settings, pool.sample(settings.gold_pool_size)).nearest
    return out


def build_chain(
    settings: ReviewerSettings,
    hooks: ReviewHooks = NO_HOOKS,
    peers: Peers | None = None,
    tasks: Mapping[str, TaskSettings] | None = None,
) -> Chain:
    """The tiers named in ``settings.chain``, in order, with the label set and gold pool;
    ``hooks``: where the tiers report calls, tokens, dollars and the budget (the reviewer
    role's metrics); ``peers``: the spend ledger the openai tier shares its budget through;
    ``tasks``: ``Settings.tasks`` of a multi-task deployment (multi-task cases are asked
    about these, with demonstrations from each task's gold pool, at most
    ``reviewer.multitask_knn_k`` of them per task in one multi-task call)."""
    unknown = [t for t in settings.chain if t not in TIERS]
    if unknown:
        raise ReviewerConfigError(f"unknown reviewer tiers {unknown}; known: {list(TIERS)}")
    pool = (
        load_dataset(settings.gold_pool, split="val").sample(settings.gold_pool_size)
        if settings.gold_pool is not None
        else None
    )
    labels: tuple[str, ...] = tuple(settings.label_descriptions) or (
        pool.label_names if pool is not None else ()
    )
    knn = _knn(settings, pool) if pool is not None and settings.knn_k > 0 else None
    specs = task_specs(tasks or {})
    tiers: list[Backend] = []
    for name in settings.chain:
        if name == "local":
            if not settings.local_model:
                raise ReviewerConfigError("the local tier needs reviewer.local_model (a juror dir)")
            juror = load_juror(settings.local_model)
            tiers.append(LocalBackend(juror, settings.local_threshold, hooks))
        elif name == "openai":
            tiers.append(
                OpenAIBackend(
                    settings,
                    labels,
                    demonstrations=knn.nearest if knn is not None else None,
                    tasks=specs,
                    task_demonstrations=task_demonstrations(settings, tasks or {}),
                    multitask_k=settings.multitask_knn_k,
                    hooks=hooks,
                    peers=peers,
                )
            )
        elif name == "oracle":
            tiers.append(OracleBackend(labels, hooks, tasks=specs))
        else:
            tiers.append(
                SimulatedBackend(labels, settings.simulated_accuracy, hooks=hooks, tasks=specs)
            )
    return Chain(tiers)
