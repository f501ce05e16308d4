"""The demo's jurors for a real dataset: bootstrapped once, cached, reused by later runs.

Bootstrapping MiniLM jurors takes minutes on two cores; a second `make demo` should start at
once. The cache holds one registry per recipe (task, seed size, number of MiniLM jurors), and
every run copies it into its own workdir, so the rounds of one run never change what the next
run starts from. A cache is built in a temporary directory and renamed into place once it is
complete, so an interrupted bootstrap never leaves a cache that looks usable; a cache whose
jurors do not load (files deleted, a format that changed) is rebuilt, with a note saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from jurystream.models.serving.juror import load_juror
from jurystream.models.serving.kinds import TRANSFORMER
from jurystream.models.serving.registry import Registry
from jurystream.models.training.bootstrap import TFIDF_NAME
from jurystream.models.training.datasets import LabeledSet, load_tweeteval

COMPLETE = "complete.json"  # written last: its presence says the bootstrap finished
MINILM_PREFIX = TRANSFORMER.family


@dataclass(frozen=True)
class JurorRecipe:
    """What the cached jurors are made from; two runs with the same recipe share a cache."""

    data: Path
    seed_size: int
    minilm: int  # MiniLM jurors besides the TF-IDF one (0: TF-IDF only, for quick runs)
    epochs: int = 3
    threads: int = 2

    @property
    def key(self) -> str:
        return f"{self.data.name}-seed{self.seed_size}-minilm{self.minilm}"

    @property
    def names(self) -> list[str]:
        return [f"{MINILM_PREFIX}-{i}" for i in range(self.minilm)] + [TFIDF_NAME]


def seed_split(data: Path, seed_size: int) -> tuple[LabeledSet, LabeledSet, LabeledSet]:
    """(seed, rest of train, val) of a TweetEval dir.

    The seed is the same stratified sample the trainer replays (``trainer.seed_data`` with
    sample seed 0); the rest of train, minus any text of the seed, is what the demo streams.
    """
    train = load_tweeteval(data, "train", drop_empty=True)
    val = load_tweeteval(data, "val", drop_empty=True)
    seed = train.sample(seed_size, seed=0)
    seen = set(seed.texts)
    rest = train.subset([i for i, t in enumerate(train.texts) if t not in seen])
    return seed, rest, val


def cache_problem(directory: Path, recipe: JurorRecipe) -> str | None:
    """Why the cache at ``directory`` cannot be used, or None if every juror loads."""
    if not (directory / COMPLETE).is_file():
        return "no finished bootstrap there"
    try:
        registry = Registry(str(directory / "registry"))
        for name in recipe.names:
            load_juror(registry.serving_dir(name))
    except Exception as exc:  # any failure means: rebuild, and say why
        return f"{type(exc).__name__}: {exc}"
    return None


def cached_jurors(recipe: JurorRecipe, cache_dir: Path, log: Callable[[str], None] = print) -> Path:
    """The registry directory holding ``recipe``'s jurors, bootstrapped now if need be."""
    target = cache_dir / recipe.key
    problem = cache_problem(target, recipe)
    if problem is None:
        log(f"reusing the jurors cached in {target}")
        return target / "registry"
    if target.exists():
        log(f"the cache in {target} is unusable ({problem}); bootstrapping the jurors again")
        shutil.rmtree(target)
    _bootstrap(recipe, target, log)
    return target / "registry"


def _bootstrap(recipe: JurorRecipe, target: Path, log: Callable[[str], None]) -> None:
    from jurystream.models.training.bootstrap import BootstrapPlan, bootstrap_jurors
    from jurystream.models.training.training import TrainConfig

    seed, _, val = seed_split(recipe.data, recipe.seed_size)
    building = target.with_name(f".{target.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    what = f"{recipe.minilm} MiniLM + TF-IDF" if recipe.minilm else "a TF-IDF"
    log(
        f"bootstrapping {what} jurors from {len(seed)} seed labels of {recipe.data} "
        f"(first run only; cached in {target})"
    )
    started = time.monotonic()
    plan = BootstrapPlan(
        transformers=recipe.minilm,
        tfidf=True,
        prefix=MINILM_PREFIX,
        train=TrainConfig(epochs=recipe.epochs, threads=recipe.threads),
    )
    try:
        made = bootstrap_jurors(
            seed,
            Registry(str(building / "registry")),
            plan,
            heldout=val,
            work_dir=building,
            log=log,
        )
        summary = {
            "recipe": {**asdict(recipe), "data": str(recipe.data)},
            "seconds": round(time.monotonic() - started, 1),
            "jurors": {j.name: j.metrics for j in made},
        }
        (building / COMPLETE).write_text(json.dumps(summary, indent=2) + "\n")
        building.rename(target)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    log(f"jurors ready in {time.monotonic() - started:.0f}s")


def copy_registry(cached: Path, registry_dir: Path) -> None:
    """A run's own copy of the cached registry (rounds during the run publish into it)."""
    if registry_dir.exists():
        shutil.rmtree(registry_dir)
    shutil.copytree(cached, registry_dir)
