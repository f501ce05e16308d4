"""``jurystream bench …``: the performance and labeling-quality benchmarks (BENCHMARKS.md).

Kept apart from ``cli.py`` like the ``models`` group; the heavy imports (torch for the PyTorch
baseline and for training) happen inside the commands.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from jurystream.config import Settings, load_settings

bench_app = typer.Typer(
    help="Benchmarks: throughput/latency/memory (perf), scale-out (scale) and quality against "
    "cost (quality).",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", metavar="FILE", envvar="JURYSTREAM_CONFIG", help="TOML config file."
    ),
]
WorkdirOpt = Annotated[
    Path, typer.Option(help="Bench jurors (reused between runs) and results go here.")
]
SeedSizeOpt = Annotated[int, typer.Option(help="Seed labels the jurors are bootstrapped from.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="JSON results file.")]
PolicyOpt = Annotated[str, typer.Option(help="Voting policy of the jury.")]
AuditRateOpt = Annotated[float, typer.Option(help="Share of accepted posts audited.")]
SimulatedAccuracyOpt = Annotated[float, typer.Option(help="Accuracy of the simulated reviewer.")]
TaskDirOpt = Annotated[
    Path | None,
    typer.Option(help="TweetEval task dir (default <data_root>/tweeteval/offensive)."),
]


def _report(path: Path, text: str, headline: dict[str, Any], docs: Path | None) -> None:
    """A bench's markdown beside its JSON and on stdout; its headline figures in ``docs``."""
    import json

    path.with_suffix(".md").write_text(text + "\n")
    out.print(text)
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(json.dumps(headline, indent=2) + "\n")


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except Exception as exc:
        err.print(f"[red]error:[/] bad configuration: {exc}")
        raise typer.Exit(2) from exc


@bench_app.command()
def perf(
    config: ConfigOpt = None,
    juror: Annotated[
        list[Path] | None,
        typer.Option(
            "--juror",
            "-j",
            help="Transformer juror dir with its checkpoint (repeatable). Default: three int8 "
            "MiniLM jurors bootstrapped from --seed-size offensive labels (cached in --workdir).",
        ),
    ] = None,
    data: TaskDirOpt = None,
    split: Annotated[str, typer.Option(help="Split the posts come from.")] = "val",
    seed_size: SeedSizeOpt = 400,
    texts: Annotated[int, typer.Option(help="Texts per in-process measurement.")] = 256,
    messages: Annotated[int, typer.Option(help="Posts per end-to-end repeat.")] = 1000,
    repeats: Annotated[int, typer.Option(help="Repeats (medians are reported).")] = 3,
    cascade_threshold: Annotated[
        float, typer.Option(help="Confidence at which a cascade tier answers alone.")
    ] = 0.9,
    latency_seconds: Annotated[float, typer.Option(help="Paced sending per load level.")] = 8.0,
    workdir: WorkdirOpt = Path("var/bench"),
    output: OutOpt = None,
) -> None:
    """End-to-end throughput against the machine limit (and one thread, PyTorch, the cascade),
    latency and its stages under load, worker RSS."""
    from jurystream.bench.jurors import bench_plan, ensure_jurors
    from jurystream.bench.perf import PerfConfig, markdown, run_perf, tables, write_json
    from jurystream.models.serving.juror import read_manifest
    from jurystream.models.serving.kinds import kept_checkpoint
    from jurystream.models.training.datasets import DatasetError, load_tweeteval, tweeteval_dir

    settings = _settings(config)
    directory = data or tweeteval_dir(settings.data_root, "offensive")
    try:
        posts = load_tweeteval(directory, split, drop_empty=True)
        if juror:
            juror_dirs = list(juror)
        else:
            # The quality bench's jury of the same task and seed size, MiniLM members only.
            seed = load_tweeteval(directory, "train", drop_empty=True).sample(seed_size, seed=0)
            cached = ensure_jurors(
                workdir / "jurors" / f"{directory.name}-s{seed_size}",
                seed,
                posts,
                bench_plan(settings, 3),
                log=err.print,
            )
            juror_dirs = [d for d in cached.values() if kept_checkpoint(d, read_manifest(d).kind)]
    except DatasetError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    jury = settings.jury
    cfg = PerfConfig(
        texts=texts,
        messages=messages,
        repeats=repeats,
        batch_size=jury.batch_size,
        threads=jury.threads,
        inference_threads=jury.inference_threads,
        fetch_max_wait_ms=settings.broker.fetch_max_wait_ms,
        linger_ms=settings.broker.linger_ms,
        policy=jury.policy,
        threshold=jury.threshold,
        cascade_threshold=cascade_threshold,
        latency_seconds=latency_seconds,
    )
    try:
        result = run_perf(juror_dirs, posts, settings, cfg, workdir / "perf-run", err)
    except (ValueError, RuntimeError, TimeoutError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    path = write_json(result, output or workdir / "perf.json")
    path.with_suffix(".md").write_text(markdown(result) + "\n")
    for t in tables(result):
        out.print(t)
    out.print(f"results: {path}, {path.with_suffix('.md')} ({result.seconds:.0f} s)")


@bench_app.command()
def scale(
    config: ConfigOpt = None,
    juror: Annotated[
        list[Path] | None,
        typer.Option(
            "--juror",
            "-j",
            help="Juror dir of the workers' jury (repeatable). Default: the MiniLM jurors of "
            "bench perf (bootstrapped from --seed-size labels, cached in --workdir).",
        ),
    ] = None,
    tfidf_juror: Annotated[
        Path | None,
        typer.Option(help="TF-IDF juror timed in a training round (default: the cached one)."),
    ] = None,
    minilm_juror: Annotated[
        Path | None,
        typer.Option(help="MiniLM juror with its checkpoint timed in a round (default: cached)."),
    ] = None,
    minilm: Annotated[
        bool, typer.Option(help="Time a MiniLM training round (minutes on 2 cores).")
    ] = True,
    data: TaskDirOpt = None,
    split: Annotated[str, typer.Option(help="Split the posts and the gate's gold come from.")] = (
        "val"
    ),
    seed_size: SeedSizeOpt = 400,
    workers: Annotated[
        list[int] | None,
        typer.Option("--workers", "-w", help="Worker process counts (repeatable; default 1 2 4)."),
    ] = None,
    partitions: Annotated[int, typer.Option(help="Partitions of the posts topic.")] = 4,
    messages: Annotated[int, typer.Option(help="Posts per scale-out burst.")] = 2000,
    repeats: Annotated[int, typer.Option(help="Bursts per worker count (medians).")] = 3,
    paced_load: Annotated[
        float, typer.Option(help="Latency at this share of the 1-worker throughput.")
    ] = 0.5,
    concurrency: Annotated[
        list[int] | None,
        typer.Option(help="Reviewer concurrencies (repeatable; default 8 32 64)."),
    ] = None,
    review_latency: Annotated[
        float, typer.Option(help="Seconds the test server takes to answer.")
    ] = 0.3,
    review_seconds: Annotated[
        float, typer.Option(help="Cases per concurrency: its ideal rate × this.")
    ] = 8.0,
    train_samples: Annotated[int, typer.Option(help="Labeled samples of a training round.")] = 1000,
    workdir: WorkdirOpt = Path("var/bench"),
    output: Annotated[
        Path,
        typer.Option(
            "--out", help="Directory of scale.json and scale.png; its perf.json gets the headlines."
        ),
    ] = Path("docs/benchmarks"),
) -> None:
    """Scale-out (1/2/4 workers on 4 partitions), reviewer cases/s against a slow endpoint at
    each concurrency, and a training round's seconds per 1,000 samples: JSON, PNG, headlines."""
    from jurystream.bench.jurors import bench_plan, ensure_jurors
    from jurystream.bench.scale import (
        ScaleConfig,
        plot,
        run_scale,
        tables,
        update_headlines,
        write_json,
    )
    from jurystream.models.serving.juror import read_manifest
    from jurystream.models.serving.kinds import SKLEARN, TRANSFORMER, kept_checkpoint
    from jurystream.models.training.bootstrap import TFIDF_NAME
    from jurystream.models.training.datasets import DatasetError, load_tweeteval, tweeteval_dir

    settings = _settings(config)
    directory = data or tweeteval_dir(settings.data_root, "offensive")
    try:
        posts = load_tweeteval(directory, split, drop_empty=True)
        train = load_tweeteval(directory, "train", drop_empty=True)
        cache: dict[str, Path] = {}
        if not juror or tfidf_juror is None or (minilm and minilm_juror is None):
            # The perf bench's jury of the same task and seed size (trained once, then reused).
            cache = ensure_jurors(
                workdir / "jurors" / f"{directory.name}-s{seed_size}",
                train.sample(seed_size, seed=0),
                posts,
                bench_plan(settings, 3),
                log=err.print,
            )
    except DatasetError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    minilms = [d for d in cache.values() if kept_checkpoint(d, read_manifest(d).kind)]
    train_jurors = {SKLEARN.family: tfidf_juror or cache[TFIDF_NAME]}
    if minilm:
        train_jurors[TRANSFORMER.family] = minilm_juror or minilms[0]
    gold_set = posts.sample(200, seed=1)
    jury = settings.jury
    cfg = ScaleConfig(
        workers=tuple(workers or (1, 2, 4)),
        partitions=partitions,
        messages=messages,
        repeats=repeats,
        paced_load=paced_load,
        batch_size=jury.batch_size,
        threads=jury.threads,
        policy=jury.policy,
        threshold=jury.threshold,
        concurrencies=tuple(concurrency or (8, 32, 64)),
        review_latency_s=review_latency,
        review_seconds=review_seconds,
        train_samples=train_samples,
        gold_size=len(gold_set),
        minilm=minilm,
    )
    command = " ".join(
        ["jurystream bench scale"]
        + [f"-j {d}" for d in juror or ()]
        + [f"-w {n}" for n in cfg.workers]
        + [f"--concurrency {c}" for c in cfg.concurrencies]
        + [
            f"--messages {messages} --repeats {repeats} --partitions {partitions}",
            f"--paced-load {paced_load:g}",
            f"--review-latency {review_latency:g} --review-seconds {review_seconds:g}",
            f"--train-samples {train_samples}" + ("" if minilm else " --no-minilm"),
            f"--data {directory} --split {split} --out {output}",
        ]
    )
    samples = train.sample(train_samples, seed=1)
    gold = list(zip(gold_set.texts, gold_set.gold(), strict=True))
    try:
        result = run_scale(
            list(juror) if juror else minilms,
            posts.texts,
            train_jurors,
            samples,
            gold,
            settings,
            cfg,
            workdir / "scale-run",
            command,
            err,
        )
    except (ValueError, RuntimeError, TimeoutError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    path = write_json(result, output / "scale.json")
    chart = plot(result, output / "scale.png")
    headlines = output / "perf.json"
    update_headlines(headlines, result.headline)
    for t in tables(result):
        out.print(t)
    out.print(
        f"results: {path}, chart: {chart}, headlines {sorted(result.headline)} in {headlines} "
        f"({result.seconds:.0f} s)"
    )


@bench_app.command()
def quality(
    config: ConfigOpt = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", "-t", help="TweetEval task (repeatable; default offensive, hate)."),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="One MiniLM juror and smaller sets (minutes on 2 cores).")
    ] = False,
    seed_size: Annotated[int | None, typer.Option(help="Seed labels for the jurors.")] = None,
    jurors: Annotated[
        int | None, typer.Option(help="MiniLM jurors (plus TF-IDF; default 2).")
    ] = None,
    policy: Annotated[str, typer.Option(help="Policy calibrated to the budgets.")] = "threshold",
    simulated_accuracy: SimulatedAccuracyOpt = 0.9,
    workdir: WorkdirOpt = Path("var/bench"),
    output: OutOpt = None,
    png: Annotated[Path | None, typer.Option(help="Accuracy-vs-cost chart.")] = None,
) -> None:
    """Each juror, majority vote, jury + reviewer at 10/20/30% budgets, reviewer alone, and a
    continual-learning round, with reviewer calls and cost: one table, a JSON file and a PNG."""
    from jurystream.bench.quality import (
        QualityConfig,
        markdown,
        plot,
        run_quality,
        table,
        write_json,
    )

    settings = _settings(config)
    cfg = QualityConfig.quick() if quick else QualityConfig()
    changes: dict[str, object] = {"policy": policy, "simulated_accuracy": simulated_accuracy}
    if task:
        changes["tasks"] = tuple(task)
    if seed_size is not None:
        changes["seed_size"] = seed_size
    if jurors is not None:
        changes["transformers"] = jurors
    cfg = dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]
    try:
        result = run_quality(settings, cfg, workdir, log=err.print)
    except ValueError as exc:  # DatasetError, PriceError, bad policy
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    path = write_json(result, output or workdir / "quality.json")
    chart = plot(result, png or workdir / "quality.png")
    (path.with_suffix(".md")).write_text(markdown(result) + "\n")
    out.print(table(result))
    out.print(
        f"results: {path}, {path.with_suffix('.md')}, chart: {chart} ({result.seconds:.0f} s)"
    )


@bench_app.command()
def loop(
    config: ConfigOpt = None,
    task: Annotated[str, typer.Option(help="TweetEval task of the feed.")] = "offensive",
    feed: Annotated[int, typer.Option(help="Unseen train posts streamed.")] = 6000,
    segments: Annotated[int, typer.Option(help="Segments the feed is cut into.")] = 6,
    seed_size: SeedSizeOpt = 400,
    jurors: Annotated[int, typer.Option(help="MiniLM jurors (plus TF-IDF).")] = 2,
    reviewer: Annotated[
        str, typer.Option(help="oracle, simulated or openai (with --base-url and --model).")
    ] = "oracle",
    simulated_accuracy: SimulatedAccuracyOpt = 0.9,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint.")] = None,
    model: Annotated[str | None, typer.Option(help="Model of the openai reviewer.")] = None,
    policy: PolicyOpt = "threshold",
    audit_rate: AuditRateOpt = 0.02,
    target_accuracy: Annotated[
        float | None,
        typer.Option(help="Accuracy of accepted labels to hold (default: reviewer's − margin)."),
    ] = None,
    margin: Annotated[float, typer.Option(help="Below the reviewer's accuracy.")] = 0.05,
    round_share: Annotated[
        float,
        typer.Option(help="A training round per this share of a segment's posts reviewed."),
    ] = 0.12,
    replay_ratio: Annotated[
        float | None,
        typer.Option(help="Earlier examples replayed per new one (default: the trainer's)."),
    ] = None,
    workdir: WorkdirOpt = Path("var/bench"),
    output: OutOpt = None,
    docs: Annotated[
        Path | None, typer.Option(help="Also write the headline figures here (docs/benchmarks).")
    ] = None,
    rescore: Annotated[
        Path | None,
        typer.Option(help="Score a finished run's JSON again (its registry in --workdir)."),
    ] = None,
) -> None:
    """Does the loop pay? The real roles over a labeled feed, per segment, with baselines."""

    from jurystream.bench import loop as bench_loop
    from jurystream.bench.loop import LoopConfig, markdown, plot, run_loop, write_json

    settings = _settings(config)
    if reviewer not in ("oracle", "simulated", "openai"):
        err.print(f"[red]error:[/] unknown reviewer {reviewer!r}: oracle, simulated or openai")
        raise typer.Exit(2)
    if reviewer == "openai" and not (base_url and model):
        err.print("[red]error:[/] --reviewer openai needs --base-url and --model")
        raise typer.Exit(2)
    cfg = LoopConfig(
        task=task,
        seed_size=seed_size,
        feed_size=feed,
        segments=segments,
        transformers=jurors,
        reviewer=reviewer,
        simulated_accuracy=simulated_accuracy,
        base_url=base_url,
        model=model,
        policy=policy,
        audit_rate=audit_rate,
        target_accuracy=target_accuracy,
        margin=margin,
        round_share=round_share,
        replay_ratio=replay_ratio,
    )
    try:
        if rescore is not None:
            result = bench_loop.rescore(settings, rescore, workdir)
        else:
            result = run_loop(settings, cfg, workdir, log=err.print)
    except (ValueError, RuntimeError, TimeoutError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    name = f"loop-{task}-{result.reviewer.replace(':', '')}"
    path = write_json(result, output or workdir / f"{name}.json")
    chart = plot(result, path.with_suffix(".png"))
    _report(path, markdown(result), result.headline, docs)
    out.print(f"results: {path}, chart: {chart} ({result.seconds:.0f} s)")


@bench_app.command()
def tfidf(
    config: ConfigOpt = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", "-t", help="TweetEval task (repeatable; default all four)."),
    ] = None,
    seed_size: SeedSizeOpt = 400,
    samples: Annotated[int, typer.Option(help="Seed samples averaged over (seeds 0..N-1).")] = 3,
) -> None:
    """The TF-IDF juror's class weighting and C, measured: macro-F1 vs the majority class."""
    from jurystream.bench.tfidf import TASKS, markdown, run_tfidf_bench
    from jurystream.models.training.datasets import DatasetError

    settings = _settings(config)
    try:
        rows = run_tfidf_bench(
            settings.data_root,
            tuple(task or TASKS),
            seed_size,
            tuple(range(samples)),
            log=err.print,
        )
    except DatasetError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    print(markdown(rows, seed_size))


def _replay(value: str) -> float | None:
    return None if value == "all" else float(value)


@bench_app.command()
def recipe(
    config: ConfigOpt = None,
    task: Annotated[str, typer.Option(help="TweetEval task.")] = "offensive",
    seed_size: SeedSizeOpt = 400,
    feed: Annotated[
        int, typer.Option(help="Unseen train posts the bootstrap jury scores (then reviewed).")
    ] = 1000,
    escalation: Annotated[
        float, typer.Option(help="Share escalated at the threshold calibrated on val's gate half.")
    ] = 0.25,
    audit_rate: AuditRateOpt = 0.02,
    policy: PolicyOpt = "threshold",
    seeds: Annotated[int, typer.Option(help="Training seeds per recipe (1..N).")] = 2,
    epochs: Annotated[
        list[int] | None,
        typer.Option("--epochs", help="Epochs tried (repeatable; default: the default ± 1)."),
    ] = None,
    learning_rate: Annotated[
        list[float] | None,
        typer.Option("--learning-rate", help="Rates tried (repeatable; default: next down, up)."),
    ] = None,
    replay: Annotated[
        list[str] | None,
        typer.Option("--replay", help="Replay ratios, or 'all' (repeatable; default 0, 1)."),
    ] = None,
    from_base: Annotated[
        bool, typer.Option(help="Also retrain from the MiniLM encoder (bootstrap recipe).")
    ] = True,
    workdir: WorkdirOpt = Path("var/bench"),
    output: Annotated[
        Path | None,
        typer.Option("--out", help="Also write the headline recipe.json and recipe.png here."),
    ] = None,
) -> None:
    """Epochs, learning rate and replay ratio of a trainer round, each varied alone around the
    trainer's default and measured over seeds on reviewed data: a table, a JSON file, a PNG."""
    import shlex
    import sys

    from jurystream.bench.recipe import (
        RecipeConfig,
        default_recipe,
        markdown,
        one_factor_grid,
        plot,
        run_recipes,
        write_json,
    )

    settings = _settings(config)
    if seeds < 1:
        err.print("[red]error:[/] --seeds must be at least 1")
        raise typer.Exit(2)
    try:
        replays = tuple(_replay(r) for r in replay) if replay else (0.0, 1.0)
    except ValueError as exc:
        err.print(f"[red]error:[/] --replay takes a number or 'all': {exc}")
        raise typer.Exit(2) from exc
    grid = one_factor_grid(
        default_recipe(settings.trainer),
        epochs=tuple(epochs) if epochs else None,
        learning_rates=tuple(learning_rate) if learning_rate else None,
        replay_ratios=replays,
        from_base=from_base,
    )
    cfg = RecipeConfig(
        task=task,
        seed_size=seed_size,
        feed_size=feed,
        escalation=escalation,
        audit_rate=audit_rate,
        policy=policy,
        seeds=tuple(range(1, seeds + 1)),
        recipes=grid,
    )
    try:
        result = run_recipes(settings, cfg, workdir, log=err.print)
    except (ValueError, RuntimeError) as exc:  # DatasetError, RegistryError, no such juror
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    result.command = shlex.join(["jurystream", *sys.argv[1:]])
    path = write_json(result.to_dict(), workdir / f"recipe-{task}.json")
    chart = plot(result, path.with_suffix(".png"))
    text = markdown(result)
    path.with_suffix(".md").write_text(text + "\n")
    out.print(text)
    if output is not None:
        write_json(result.headline(), output / "recipe.json")
        plot(result, output / "recipe.png")
    out.print(f"results: {path}, chart: {chart} ({result.seconds:.0f} s)")


@bench_app.command()
def multitask(
    config: ConfigOpt = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", "-t", help="TweetEval task (repeatable; default all four)."),
    ] = None,
    train_size: Annotated[
        int, typer.Option(help="Train posts per task the jurors learn from (cached).")
    ] = 2000,
    policy: PolicyOpt = "threshold",
    escalation: Annotated[
        float,
        typer.Option(help="Each task's threshold escalates at most this share of the stream."),
    ] = 0.2,
    repeats: Annotated[int, typer.Option(help="Timing repeats (medians reported).")] = 3,
    messages: Annotated[int, typer.Option(help="Posts per end-to-end run.")] = 800,
    workdir: WorkdirOpt = Path("var/bench"),
    output: OutOpt = None,
    docs: Annotated[
        Path | None, typer.Option(help="Also write the headline figures here (docs/benchmarks).")
    ] = None,
) -> None:
    """Four tasks on one stream against four single-task deployments of the same jurors:
    inference cost, per-task quality, reviewer cost."""

    from jurystream.bench.multitask import (
        TASKS,
        MultitaskConfig,
        markdown,
        plot,
        run_multitask,
        write_json,
    )
    from jurystream.models.training.datasets import DatasetError

    settings = _settings(config)
    cfg = MultitaskConfig(
        tasks=tuple(task or TASKS),
        train_size=train_size,
        policy=policy,
        escalation=escalation,
        repeats=repeats,
        messages=messages,
    )
    try:
        result = run_multitask(settings, cfg, workdir, log=err.print)
    except (DatasetError, ValueError, RuntimeError, TimeoutError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    path = write_json(result, output or workdir / "multitask.json")
    chart = plot(result, path.with_suffix(".png"))
    _report(path, markdown(result), result.headline(), docs)
    out.print(f"results: {path}, chart: {chart} ({result.seconds:.0f} s)")


@bench_app.command("review-cost")
def review_cost(
    config: ConfigOpt = None,
    k: Annotated[int, typer.Option(help="Demonstrations per single-task call (knn_k).")] = 4,
    multitask_k: Annotated[
        list[int] | None,
        typer.Option(
            "--multitask-k",
            help="Demonstrations per task in the multi-task call (repeatable; default k).",
        ),
    ] = None,
    posts: Annotated[int, typer.Option(help="TweetEval posts measured.")] = 200,
    pool_size: Annotated[int, typer.Option(help="Gold pool per task (val split).")] = 500,
    escalated: Annotated[
        list[int] | None,
        typer.Option("--escalated", help="Escalated tasks per post (repeatable; 1 to 4)."),
    ] = None,
    shared_pool: Annotated[
        bool,
        typer.Option(
            help="All tasks' gold pools hold the same posts (placeholder labels: tokens only)."
        ),
    ] = False,
) -> None:
    """Tokens and USD of one multi-task reviewer call per post against one single-task call
    per escalated task, on TweetEval's four tasks with the reviewer's real prompts."""
    from jurystream.bench.review_cost import run_review_cost, table
    from jurystream.models.reviewer.cost import PriceError, price_for

    settings = _settings(config)
    try:
        price = price_for(settings.reviewer.prices, settings.reviewer.model)
        for mk in multitask_k or [k]:
            result = run_review_cost(
                settings.data_root,
                k,
                posts,
                pool_size,
                escalated or [2, 3, 4],
                price,
                multitask_k=mk,
                shared_pool=shared_pool,
            )
            typer.echo(
                f"k={k} per single-task call, {mk} per task in the multi-task call, "
                f"{posts} posts, {settings.reviewer.model} prices"
                f"{', one gold pool shared by all tasks' if shared_pool else ''}\n{table(result)}"
            )
    except (ValueError, PriceError) as exc:  # DatasetError, bad --escalated
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def heads(
    multi: Annotated[str, typer.Option(help="Multi-head juror (registry name or directory).")],
    single: Annotated[str, typer.Option(help="Single-head juror to compare with.")],
    config: ConfigOpt = None,
    task: Annotated[str, typer.Option(help="TweetEval task whose val texts are scored.")] = (
        "offensive"
    ),
    texts: Annotated[int, typer.Option(help="Val texts scored per round.")] = 300,
    rounds: Annotated[int, typer.Option(help="Timed rounds (medians over them).")] = 8,
) -> None:
    """Labeling every task with one multi-head juror against one task with one juror."""
    from jurystream.bench.heads import markdown, time_variants, variants
    from jurystream.models.serving.juror import ModelLoadError, load_juror
    from jurystream.models.serving.registry import RegistryError, resolve_juror_dir
    from jurystream.models.training.datasets import DatasetError, load_tweeteval, tweeteval_dir

    settings = _settings(config)
    try:
        jurors = [
            load_juror(resolve_juror_dir(spec, settings.registry_url), threads=1)
            for spec in (multi, single)
        ]
        data = load_tweeteval(tweeteval_dir(settings.data_root, task), "val", drop_empty=True)
    except (ModelLoadError, RegistryError, DatasetError) as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if not hasattr(jurors[0], "predict_heads"):
        err.print(f"[red]error:[/] {multi} is not a multi-head juror (kind onnx-multihead)")
        raise typer.Exit(2)
    sample = list(data.texts[:texts])
    rows, load = time_variants(variants(jurors[0], jurors[1]), sample, rounds)
    print(markdown(rows, len(sample), load))
