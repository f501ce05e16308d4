"""What every role command shares: the --config and --bootstrap options, settings loading.

Kept apart from ``cli.py`` so command groups in other modules (``cli_labels``) can use them
without importing ``cli`` itself, which ``python -m jurystream.cli`` runs as ``__main__``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from jurystream.config import Settings, env_var, load_settings

if TYPE_CHECKING:
    from jurystream.stream.security import KafkaConnection

console = Console(stderr=True, soft_wrap=True)  # errors stay greppable in logs


def setting(key: str, help: str, *names: str, **option: Any) -> Any:
    """The flag of one setting (``trainer.every_samples``): it reads the setting's environment
    variable too (shown in --help), and its value reaches load_settings as an override, which is
    where the variable would have put it anyway."""
    return typer.Option(*names, envvar=env_var(key), help=help, **option)


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", metavar="FILE", envvar="JURYSTREAM_CONFIG", help="TOML config file."
    ),
]
BootstrapOpt = Annotated[
    str | None,
    setting(
        "broker.bootstrap", "Kafka bootstrap address.", "--bootstrap", "-b", metavar="HOST:PORT"
    ),
]
MetricsPortOpt = Annotated[
    int | None,
    setting(
        "metrics.port", "Serve Prometheus /metrics on this port.", "--metrics-port", metavar="PORT"
    ),
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
        # Escaped: a message may quote a TOML section ("[tasks]"), which rich reads as markup.
        console.print(f"[red]error:[/] bad configuration: {escape(str(exc))}")
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
