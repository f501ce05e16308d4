"""The one CLI: every role is a command (``jurystream --help``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape

from jurystream.cli_common import (
    BootstrapOpt,
    ConfigOpt,
    MetricsPortOpt,
    _require_bootstrap,
    _settings,
    console,
    setting,
)
from jurystream.cli_help import ReadableGroup
from jurystream.config import PolicyName, Settings, Topic, env_var
from jurystream.progress import progress_bar
from jurystream.stream.posts_file import PostsFormat

if TYPE_CHECKING:
    pass

app = typer.Typer(
    cls=ReadableGroup,
    help="Real-time labeling of Kafka streams by a jury of small ONNX models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"jurystream {version('jurystream')}")
        except PackageNotFoundError:  # run from a source tree without an install
            print("jurystream (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    log_level: Annotated[
        LogLevel | None,
        setting(
            "log_level",
            "DEBUG, INFO, WARNING or ERROR (every command; default WARNING).",
            metavar="LEVEL",
            case_sensitive=False,
        ),
    ] = None,
) -> None:
    """Real-time labeling of Kafka streams by a jury of small ONNX models."""
    if log_level is not None:
        # Through the environment, so settings, every command and the roles the demo starts
        # all see the same level.
        os.environ[env_var("log_level")] = log_level.upper()
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger().setLevel(log_level.upper())


@app.command()
def broker(
    config: ConfigOpt = None,
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Loopback port; 0 picks a free one.")
    ] = 0,
    tls: Annotated[
        bool, typer.Option(help="Serve TLS (through a local proxy), with a CA made in --cert-dir.")
    ] = False,
    mtls: Annotated[bool, typer.Option(help="TLS that also requires client certificates.")] = False,
    cert_dir: Annotated[
        Path | None, typer.Option(help="Where --tls writes its CA and certificates.")
    ] = None,
) -> None:
    """Start the embedded Tansu broker, create the topics, and run until Ctrl-C/SIGTERM."""
    from jurystream.stream.broker import BrokerError, EmbeddedBroker, ensure_topics
    from jurystream.stream.certs import CertError
    from jurystream.stream.tls_proxy import TlsBroker

    settings = _settings(config)
    port = port or settings.broker.embedded_port
    embedded: EmbeddedBroker | TlsBroker = EmbeddedBroker(port=port)
    if tls or mtls:
        embedded = TlsBroker(cert_dir or settings.data_dir / "tls", mtls=mtls, port=port)
    try:
        kafka = embedded.start()
        created = asyncio.run(
            ensure_topics(
                kafka,
                settings.topics.all_names(),
                settings.topics.partitions,
                settings.topics.replication_factor,
            )
        )
    except (BrokerError, CertError) as exc:
        console.print(f"[red]error:[/] {exc}")
        embedded.stop()
        raise typer.Exit(1) from exc
    bootstrap = embedded.bootstrap
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    # Before the address is printed: a script may send SIGTERM as soon as it reads it.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if isinstance(embedded, TlsBroker):
        console.print("clients connect with these settings (or the same keys in \\[broker]):")
        for name, value in embedded.env().items():
            console.print(f"  export {name}={value}", highlight=False)
    console.print(f"created topics: {', '.join(created) or '(all existed)'}")
    console.print("[green]broker ready[/] — stop with Ctrl-C")
    print(bootstrap, flush=True)  # stdout: the bootstrap address, for scripts
    try:
        while not stop["now"]:
            signal.pause()
    finally:
        embedded.stop()
        console.print("broker stopped")


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was typed, not read from its environment variable (a variable
    set for every role, such as the demo's, must not refuse a role it does not concern)."""
    source = ctx.get_parameter_source(name)  # typer's own click: compared by name
    return source is not None and source.name == "COMMANDLINE"


@app.command()
def worker(
    ctx: typer.Context,
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    juror: Annotated[
        list[str] | None,
        typer.Option(
            "--juror",
            "-j",
            metavar="DIR|NAME",
            help="Juror directory or registry name (repeatable; env var "
            f"{env_var('jury.jurors')} takes a JSON list).",
        ),
    ] = None,
    policy: Annotated[
        PolicyName | None,
        setting("jury.policy", "Voting policy."),
    ] = None,
    threshold: Annotated[
        float | None,
        setting("jury.threshold", "Confidence threshold.", metavar="0..1"),
    ] = None,
    batch_size: Annotated[
        int | None,
        setting("jury.batch_size", "Micro-batch size.", metavar="N"),
    ] = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Label posts: read `posts`, run the jury, write `labels`, `review` or `dead-letters`."""
    from jurystream.models.serving.juror import ModelLoadError
    from jurystream.stream.roles import run_worker

    settings = _settings(
        config,
        broker={"bootstrap": bootstrap},
        jury={
            "jurors": juror or None,
            "policy": policy,
            "threshold": threshold,
            "batch_size": batch_size,
        },
        metrics={"port": metrics_port},
    )
    given = [f"--{name}" for name in ("policy", "threshold") if _on_command_line(ctx, name)]
    if settings.tasks and given:
        console.print(
            f"[red]error:[/] {' and '.join(given)} set the one task's jury, but this "
            f"deployment labels several tasks ({', '.join(settings.tasks)}): set "
            "tasks.<name>.policy and tasks.<name>.threshold in the config instead"
        )
        raise typer.Exit(2)
    _require_bootstrap(settings)
    try:
        code = run_worker(settings)
    except (ModelLoadError, ValueError) as exc:  # a juror that cannot serve, LabelSetError
        console.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    sys.exit(code)


@app.command()
def reviewer(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    tier: Annotated[
        list[str] | None,
        typer.Option(
            "--tier",
            "-t",
            metavar="TIER",
            help="Chain tier, cheapest first: local, openai, oracle, simulated (repeatable; "
            f"env var {env_var('reviewer.chain')} takes a JSON list).",
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        setting(
            "reviewer.base_url", "OpenAI-compatible endpoint, e.g. http://host/v1.", metavar="URL"
        ),
    ] = None,
    model: Annotated[
        str | None,
        setting("reviewer.model", "Reviewer model.", metavar="NAME"),
    ] = None,
    concurrency: Annotated[
        int | None,
        setting("reviewer.concurrency", "Concurrent LLM calls.", metavar="N"),
    ] = None,
    budget_per_hour: Annotated[
        float | None,
        setting("reviewer.budget_per_hour_usd", "USD per hour.", metavar="USD"),
    ] = None,
    budget_per_day: Annotated[
        float | None,
        setting("reviewer.budget_per_day_usd", "USD per day.", metavar="USD"),
    ] = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Review escalated cases: read `review`, ask the chain, write `labels` and `hard-samples`.

    The API key is read from the variable named by reviewer.api_key_env (OPENAI_API_KEY).
    """
    from jurystream.stream.reviewer import run_reviewer

    settings = _settings(
        config,
        broker={"bootstrap": bootstrap},
        reviewer={
            "chain": tier or None,
            "base_url": base_url,
            "model": model,
            "concurrency": concurrency,
            "budget_per_hour_usd": budget_per_hour,
            "budget_per_day_usd": budget_per_day,
        },
        metrics={"port": metrics_port},
    )
    _require_bootstrap(settings)
    try:
        code = run_reviewer(settings)
    except ValueError as exc:  # ReviewerConfigError, PriceError, DatasetError
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    sys.exit(code)


@app.command()
def monitor(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Online quality: join `labels` with gold `feedback` (accuracy, macro-F1, drift, lag)."""
    from jurystream.stream.feedback import run_monitor

    settings = _settings(config, broker={"bootstrap": bootstrap}, metrics={"port": metrics_port})
    _require_bootstrap(settings)
    sys.exit(run_monitor(settings))


@app.command()
def trainer(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    registry: Annotated[
        str | None,
        setting(
            "registry", "Registry path or fsspec URL (shared with the workers).", metavar="PATH|URL"
        ),
    ] = None,
    every_samples: Annotated[
        int | None,
        setting(
            "trainer.every_samples", "β: a round every this many new hard samples.", metavar="N"
        ),
    ] = None,
    every_minutes: Annotated[
        float | None,
        setting(
            "trainer.every_minutes",
            "T: or every this many minutes (if anything is new).",
            metavar="MINUTES",
        ),
    ] = None,
    seed_data: Annotated[
        str | None,
        setting(
            "trainer.seed_data",
            "Seed set for replay (dataset as for `models bootstrap`).",
            metavar="DATASET",
        ),
    ] = None,
    gold_data: Annotated[
        str | None,
        setting(
            "trainer.gold_data",
            "Held-out gold set the gate judges candidates on.",
            metavar="DATASET",
        ),
    ] = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Continual learning: hard samples + feedback → fine-tune, gate, publish, announce."""
    from jurystream.stream.trainer import run_trainer

    settings = _settings(
        config,
        broker={"bootstrap": bootstrap},
        registry=registry,
        trainer={
            "every_samples": every_samples,
            "every_minutes": every_minutes,
            "seed_data": seed_data,
            "gold_data": gold_data,
        },
        metrics={"port": metrics_port},
    )
    _require_bootstrap(settings)
    try:
        code = run_trainer(settings)
    except ValueError as exc:  # DatasetError, bad registry
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    sys.exit(code)


@app.command()
def produce(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            metavar="FILE|-",
            help="Your posts: a .jsonl or .csv file, or - for stdin (else the generated feed).",
        ),
    ] = None,
    text_field: Annotated[
        str, typer.Option(metavar="FIELD", help="Text field/column of --file.")
    ] = "text",
    id_field: Annotated[
        str | None,
        typer.Option(
            metavar="FIELD", help="Id field/column of --file (default: ids <prefix>-<line>)."
        ),
    ] = None,
    id_prefix: Annotated[
        str | None,
        typer.Option(metavar="PREFIX", help="Prefix of generated ids (default: the file's name)."),
    ] = None,
    file_format: Annotated[
        PostsFormat | None,
        typer.Option(
            "--format",
            metavar="jsonl|csv",
            help="Format of --file (default: from the name or the content).",
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.001, metavar="POSTS/S", help="Posts per second (default: as fast as it can)."
        ),
    ] = None,
    count: Annotated[
        int, typer.Option(metavar="N", help="How many generated posts (without --file).")
    ] = 1000,
    seed: Annotated[int, typer.Option(metavar="N", help="Generator seed (without --file).")] = 0,
    bad_every: Annotated[
        int, typer.Option(metavar="N", help="Every Nth generated message malformed (0: none).")
    ] = 0,
) -> None:
    """Push posts into the posts topic: your own file (--file) or the built-in generated feed.

    Rows the worker would refuse (no text, empty text, too long, bad JSON...) are not sent; the
    summary lists them with their line numbers and the exit code is then 1.
    """
    from jurystream.stream.client import produce as send

    settings = _settings(config, broker={"bootstrap": bootstrap})
    address = _require_bootstrap(settings)
    topic = settings.topics.name(Topic.POSTS)
    if file is None:
        from jurystream.stream.feed import generate_posts

        generated = generate_posts(count, seed=seed, bad_every=bad_every)
        messages = [(i.key, i.value) for i in generated]
        refused: list[Any] = []
    else:
        batch = _read_posts_file(settings, file, file_format, text_field, id_field, id_prefix)
        messages = [(key, value) for _, key, value in batch.messages]
        refused = batch.refused
    with progress_bar(console=console) as bar:
        task = bar.add_task(f"sending to {topic}", total=len(messages))
        sent = asyncio.run(
            send(address, topic, messages, on_sent=lambda n: bar.advance(task, n), rate=rate)
        )
    console.print(f"sent {sent} messages to {topic}")
    if refused:
        console.print(f"[red]refused {len(refused)} rows[/] (not sent):")
        for row in refused[:50]:
            console.print(f"  line {row.line}: {row.reason}")
        if len(refused) > 50:
            console.print(f"  … and {len(refused) - 50} more")
        raise typer.Exit(1)


def _read_posts_file(
    settings: Settings,
    file: str,
    file_format: PostsFormat | None,
    text_field: str,
    id_field: str | None,
    id_prefix: str | None,
) -> Any:
    """Read and check ``file`` (``-``: stdin); unreadable input stops with exit code 2."""
    from jurystream.stream.posts_file import detect_format, read_posts

    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        console.print(f"[red]error:[/] cannot read {file}: {exc.strerror or exc}")
        raise typer.Exit(2) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        console.print(
            f"[red]error:[/] {file}:{line}: not UTF-8; convert it first "
            f"(e.g. iconv -f latin1 -t utf-8 {file})"
        )
        raise typer.Exit(2) from exc
    fmt = file_format or detect_format(file, text[:1000])
    prefix = id_prefix or ("stdin" if file == "-" else Path(file).stem)
    return read_posts(
        text,
        fmt,
        text_field=text_field,
        id_field=id_field,
        id_prefix=prefix,
        delimiter="\t" if file.lower().endswith(".tsv") else ",",
        max_bytes=settings.jury.max_message_bytes,
        max_chars=settings.jury.max_text_chars,
    )


DemoReviewer = Literal["scripted-llm", "oracle"]


@app.command()
def demo(
    config: ConfigOpt = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="A TweetEval-style dir (train/val), or 'generated' for the built-in feed "
            "(default: <data_root>/tweeteval/offensive, else the generated feed)."
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option(help="Posts in the feed (default 1200 real, 3000 generated).")
    ] = None,
    seed_size: Annotated[
        int | None,
        typer.Option(
            help="Seed labels the jurors start from (default 400 real, 80 generated; with "
            "--tasks 2000 per task)."
        ),
    ] = None,
    tasks: Annotated[
        str | None,
        typer.Option(
            help="Several TweetEval tasks on one stream, e.g. offensive,hate,emotion,irony: "
            "every post labeled on each, by a multi-head MiniLM juror and one TF-IDF juror per "
            "task (the reviewer is scripted; see the README)."
        ),
    ] = None,
    minilm: Annotated[
        int,
        typer.Option(
            min=0, help="MiniLM jurors beside the TF-IDF one (real data; 0: TF-IDF only)."
        ),
    ] = 2,
    reviewer: Annotated[
        DemoReviewer,
        typer.Option(
            help="scripted-llm: the real OpenAI reviewer tier against the project's local test "
            "server answering the gold label (tokens and USD priced as gpt-4o-mini); oracle: "
            "the gold label, free."
        ),
    ] = "scripted-llm",
    rate: Annotated[
        float | None, typer.Option(help="Posts per second (default 5 real, 100 generated).")
    ] = None,
    every_samples: Annotated[
        int | None, typer.Option(help="A training round every this many reviewed samples.")
    ] = None,
    feedback_share: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of posts whose gold label is sent as feedback."),
    ] = 0.25,
    bad_every: Annotated[
        int, typer.Option(help="Every Nth generated message malformed (generated feed).")
    ] = 50,
    policy: Annotated[
        PolicyName | None,
        typer.Option(
            help="Voting policy (default: jury.policy, unanimous). With --tasks every task's "
            "jury defaults to threshold (the mean of its jurors' probabilities against the "
            "threshold), which --review-share calibrates; another policy is calibrated the "
            "same way, as far as it can be."
        ),
    ] = None,
    review_share: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            max=1.0,
            help="With --tasks: the share of posts each task's jury may escalate (default "
            "0.15). Each task's starting threshold is the highest that escalates at most this "
            "share of held-out val posts, which the demo never streams; a post escalated on "
            "several tasks is one review, so up to (tasks × share) of posts reach the "
            "reviewer. The trainer's threshold controller moves the thresholds from there.",
        ),
    ] = None,
    metrics_port: MetricsPortOpt = None,
    workdir: Annotated[Path, typer.Option(help="Where run outputs go.")] = Path("var/demo"),
    cache_dir: Annotated[
        Path, typer.Option(help="Where bootstrapped jurors are kept for later runs.")
    ] = Path("var/demo-cache"),
    target_accuracy: Annotated[
        float,
        typer.Option(
            min=0.5, max=1.0, help="Accuracy of accepted labels the threshold controller holds."
        ),
    ] = 0.85,
) -> None:
    """Everything in one command on the embedded broker, with a live view and a summary."""
    from jurystream.demo import DemoOptions, run_demo

    settings = _settings(config, jury={"policy": policy}, metrics={"port": metrics_port})
    names = _demo_tasks(tasks, data, settings.data_root)
    if review_share is not None and not names:
        console.print(
            "[red]error:[/] --review-share calibrates the juries of --tasks; add --tasks, or "
            "leave it out (one task starts at jury.threshold, which the controller moves)"
        )
        raise typer.Exit(2)
    directory = None if names else _demo_data(data, settings.data_root)
    real = directory is not None or bool(names)
    options = DemoOptions(
        count=count or (1200 if real else 3000),
        seed_size=seed_size or (400 if real else 80),
        tasks=names,
        train_size=seed_size or 2000,
        task_policy=policy or "threshold",
        review_share=review_share or 0.15,
        workdir=workdir,
        data=directory,
        bad_every=bad_every,
        reviewer=reviewer,
        rate=rate or (5.0 if real else 100.0),
        feedback_share=feedback_share,
        every_samples=every_samples,
        minilm=minilm,
        cache_dir=cache_dir,
        target_accuracy=target_accuracy,
    )
    sys.exit(run_demo(settings, options))


def _demo_tasks(tasks: str | None, data: str | None, data_root: Path) -> tuple[str, ...]:
    """The multi-task demo's tasks (empty without --tasks); refused with --data."""
    from jurystream.demo_tasks import TasksError, parse_tasks

    if tasks is None:
        return ()
    if data is not None:
        console.print("[red]error:[/] --tasks streams TweetEval tasks; leave --data out with it")
        raise typer.Exit(2)
    try:
        return parse_tasks(tasks, data_root)
    except TasksError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def _demo_data(data: str | None, data_root: Path) -> Path | None:
    """The demo's TweetEval dir, or None for the generated feed (said so when by default)."""
    from jurystream.models.training.datasets import tweeteval_dir

    if data == "generated":
        return None
    if data is not None:
        directory = Path(data)
        if not (directory / "train_text.txt").is_file():
            console.print(
                f"[red]error:[/] {directory} has no train_text.txt; give a TweetEval-style dir "
                "or --data generated"
            )
            raise typer.Exit(2)
        return directory
    directory = tweeteval_dir(data_root, "offensive")
    if (directory / "train_text.txt").is_file():
        return directory
    console.print(
        f"[yellow]note:[/] no TweetEval offensive data at {directory}; running on the generated "
        "feed instead (set JURYSTREAM_DATA_ROOT to the folder holding tweeteval/, or pass "
        "--data DIR)"
    )
    return None


from jurystream.cli_models import models_app  # noqa: E402  (the `models` command group)

app.add_typer(models_app, name="models")

from jurystream.cli_bench import bench_app  # noqa: E402  (the `bench` command group)

app.add_typer(bench_app, name="bench")

from jurystream.cli_labels import feedback, labels_app  # noqa: E402  (labels out, corrections in)

app.add_typer(labels_app, name="labels")
app.command()(feedback)

if __name__ == "__main__":
    app()
