"""The one CLI: every role is a command (``jurystream --help``)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console

from jurystream.config import PolicyName, Settings, load_settings

if TYPE_CHECKING:
    from jurystream.stream.security import KafkaConnection

app = typer.Typer(
    help="Real-time labeling of Kafka streams by a jury of small ONNX models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True, soft_wrap=True)  # errors stay greppable in logs

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (else $JURYSTREAM_CONFIG).")
]
BootstrapOpt = Annotated[
    str | None, typer.Option("--bootstrap", "-b", help="Kafka bootstrap address host:port.")
]
MetricsPortOpt = Annotated[
    int | None, typer.Option("--metrics-port", help="Serve Prometheus /metrics on this port.")
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    cleaned = {
        k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
        for k, v in overrides.items()
        if v is not None
    }
    try:
        settings = load_settings(config, **cleaned)
    except Exception as exc:
        console.print(f"[red]error:[/] bad configuration: {exc}")
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings


def _require_bootstrap(settings: Settings) -> KafkaConnection:
    """The configured Kafka connection, checked before the role starts: a role that cannot
    connect (no address, unknown CA, wrong hostname, plaintext client on a TLS listener, bad
    credentials) stops here with what to check, instead of retrying forever."""
    from jurystream.stream.preflight import KafkaUnreachable, check_kafka
    from jurystream.stream.security import KafkaSecurityError, kafka_connection

    if not settings.broker.bootstrap:
        console.print(
            "[red]error:[/] no Kafka address. Start one with [bold]jurystream broker[/] and pass "
            "--bootstrap HOST:PORT (or set JURYSTREAM_BROKER__BOOTSTRAP)."
        )
        raise typer.Exit(2)
    try:
        kafka = kafka_connection(settings)
    except KafkaSecurityError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    try:
        asyncio.run(check_kafka(kafka))
    except KafkaUnreachable as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    return kafka


@app.command()
def broker(
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option(help="Loopback port; 0 picks a free one.")] = 0,
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
    if isinstance(embedded, TlsBroker):
        console.print("clients connect with these settings (or the same keys in \\[broker]):")
        for name, value in embedded.env().items():
            console.print(f"  export {name}={value}", highlight=False)
    console.print(f"created topics: {', '.join(created) or '(all existed)'}")
    console.print("[green]broker ready[/] — stop with Ctrl-C")
    print(bootstrap, flush=True)  # stdout: the bootstrap address, for scripts
    stop = {"now": False}

    def _stop(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop["now"]:
            signal.pause()
    finally:
        embedded.stop()
        console.print("broker stopped")


@app.command()
def worker(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    juror: Annotated[
        list[str] | None,
        typer.Option("--juror", "-j", help="Juror directory or registry name (repeatable)."),
    ] = None,
    policy: Annotated[PolicyName | None, typer.Option(help="Voting policy.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Confidence threshold.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Micro-batch size.")] = None,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Label posts: read `posts`, run the jury, write `labels`, `review` or `dead-letters`."""
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
    _require_bootstrap(settings)
    sys.exit(run_worker(settings))


@app.command()
def reviewer(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    tier: Annotated[
        list[str] | None,
        typer.Option(
            "--tier", "-t", help="Chain tier, cheapest first: local, openai, oracle, simulated."
        ),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://host/v1.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Reviewer model name.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Concurrent LLM calls.")] = None,
    budget_per_hour: Annotated[float | None, typer.Option(help="USD per hour.")] = None,
    budget_per_day: Annotated[float | None, typer.Option(help="USD per day.")] = None,
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
        str | None, typer.Option(help="Registry path or fsspec URL (shared with the workers).")
    ] = None,
    every_samples: Annotated[
        int | None, typer.Option(help="β: a round every this many new hard samples.")
    ] = None,
    every_minutes: Annotated[
        float | None, typer.Option(help="T: or every this many minutes (if anything is new).")
    ] = None,
    seed_data: Annotated[
        str | None, typer.Option(help="Seed set for replay (dataset as for `models bootstrap`).")
    ] = None,
    gold_data: Annotated[
        str | None, typer.Option(help="Held-out gold set the gate judges candidates on.")
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
    count: Annotated[int, typer.Option(help="How many generated posts.")] = 1000,
    seed: Annotated[int, typer.Option(help="Generator seed.")] = 0,
    bad_every: Annotated[int, typer.Option(help="Every Nth message malformed (0: none).")] = 0,
) -> None:
    """Push the built-in generated feed into the posts topic."""
    from jurystream.stream.client import produce as send
    from jurystream.stream.feed import generate_posts

    settings = _settings(config, broker={"bootstrap": bootstrap})
    address = _require_bootstrap(settings)
    items = ((i.key, i.value) for i in generate_posts(count, seed=seed, bad_every=bad_every))
    sent = asyncio.run(send(address, settings.topics.name("posts"), items))
    console.print(f"sent {sent} messages to {settings.topics.name('posts')}")


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
        int | None, typer.Option(help="Seed labels the jurors start from (default 400, 80).")
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
    policy: Annotated[PolicyName, typer.Option(help="Voting policy.")] = "unanimous",
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
    directory = _demo_data(data, settings.data_root)
    real = directory is not None
    options = DemoOptions(
        count=count or (1200 if real else 3000),
        seed_size=seed_size or (400 if real else 80),
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


def _demo_data(data: str | None, data_root: Path) -> Path | None:
    """The demo's TweetEval dir, or None for the generated feed (said so when by default)."""
    from jurystream.models.datasets import tweeteval_dir

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

if __name__ == "__main__":
    app()
