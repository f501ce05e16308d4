"""``jurystream labels follow|export`` and ``jurystream feedback``: labels out, corrections in.

What the system labeled is on the ``labels`` topic (the posts' texts on ``posts``); what waits
for a reviewer is on ``review``. These commands read them without a consumer group, so they
never take partitions from the roles, and write people's corrections to ``feedback``, where the
monitor measures the jury against them and the trainer learns from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from jurystream.cli_common import BootstrapOpt, ConfigOpt, _require_bootstrap, _settings
from jurystream.config import Topic
from jurystream.stream.label_io import ExportFormat

labels_app = typer.Typer(
    help="What the jury labeled: follow it live, or export it for review tools.",
    no_args_is_help=True,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _votes(votes: Any) -> str:
    if not isinstance(votes, list):
        return ""
    return " ".join(f"{v.get('juror')}={v.get('label')}" for v in votes if isinstance(v, dict))


def _tasks(tasks: dict[str, Any]) -> str:
    """A multi-task record's results: ``task=label(source)`` each."""
    return "  ".join(
        f"{task}={r.get('label')}({r.get('source')})"
        for task, r in tasks.items()
        if isinstance(r, dict)
    )


def _line(topic: str, value: dict[str, Any], labels_topic: str) -> str:
    post_id = value.get("id")
    tasks = value.get("tasks") or value.get("asked")
    if isinstance(tasks, dict) and tasks:
        what = (
            "label  " if topic == labels_topic else f"review  ({value.get('kind', 'escalation')})"
        )
        return f"{what} {post_id}  {_tasks(tasks)}"
    if topic == labels_topic:
        confidence = value.get("confidence")
        conf = f"{confidence:.2f}" if isinstance(confidence, int | float) else "-"
        return (
            f"label   {post_id}  {value.get('label')}  {conf}  {value.get('source')}  "
            f"{_votes(value.get('votes'))}"
        )
    text = str(value.get("text", ""))
    short = text if len(text) <= 60 else text[:57] + "..."
    return (
        f"review  {post_id}  jury says {value.get('jury_label')} "
        f"({value.get('kind', 'escalation')}: {value.get('reason')})  {json.dumps(short)}"
    )


@labels_app.command("follow")
def follow_labels(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    from_beginning: Annotated[
        bool, typer.Option(help="Start from the oldest record instead of new ones.")
    ] = False,
    review: Annotated[
        bool, typer.Option(help="Also show cases as they are sent to review.")
    ] = True,
    limit: Annotated[int | None, typer.Option(metavar="N", help="Stop after N records.")] = None,
    idle: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="Stop after this long without a record."),
    ] = None,
) -> None:
    """Print labels (and what goes to review) as they arrive: one line each, until Ctrl-C."""
    from jurystream.stream.client import follow

    settings = _settings(config, broker={"bootstrap": bootstrap})
    address = _require_bootstrap(settings)
    labels_topic = settings.topics.name(Topic.LABELS)
    topics = [labels_topic] + ([settings.topics.name(Topic.REVIEW)] if review else [])
    err.print(f"following {', '.join(topics)} (Ctrl-C stops)")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a follow ends
        asyncio.run(
            follow(
                address,
                topics,
                lambda r: out.print(_line(r.topic, r.value, labels_topic), markup=False),
                from_beginning=from_beginning,
                limit=limit,
                idle_s=idle,
            )
        )


@labels_app.command("export")
def export_labels(
    output: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="File to write.")],
    export_format: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="jsonl or csv (every column), label-studio (tasks with the jury's label as a "
            "prediction) or argilla (records with it as a suggestion).",
        ),
    ] = "jsonl",
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Every label on the labels topic now, joined with its post's text, to a file."""
    from jurystream.stream.client import read_to_end
    from jurystream.stream.label_io import export_rows, write_export

    settings = _settings(config, broker={"bootstrap": bootstrap})
    address = _require_bootstrap(settings)
    labels_topic, posts_topic = (
        settings.topics.name(Topic.LABELS),
        settings.topics.name(Topic.POSTS),
    )
    records = asyncio.run(read_to_end(address, [labels_topic, posts_topic]))
    texts = {
        str(r.value["id"]): r.value["text"]
        for r in records
        if r.topic == posts_topic
        and isinstance(r.value.get("text"), str)
        and isinstance(r.value.get("id"), str | int)
    }
    rows = export_rows((r.value for r in records if r.topic == labels_topic), texts)
    body, left_out = write_export(rows, export_format)
    output.write_text(body, encoding="utf-8")
    err.print(f"exported {len(rows) - left_out} labels to {output} ({export_format})")
    if left_out:
        err.print(
            f"[yellow]{left_out} labels left out:[/] their posts' texts are no longer on "
            f"{posts_topic} (retention); jsonl and csv keep them without text"
        )


def feedback(
    file: Annotated[
        str,
        typer.Option(
            "--file",
            "-f",
            metavar="FILE|-",
            help="Corrections: a Label Studio or Argilla export, or a CSV/JSONL with id and "
            "label (and text) columns; - for stdin.",
        ),
    ],
    task: Annotated[
        str | None,
        typer.Option(help="The task these labels are for (a multi-task deployment's [tasks])."),
    ] = None,
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Send people's corrections to the feedback topic (gold for the monitor and the trainer).

    Entries without a person's label are listed and not sent (exit code 1).
    """
    import sys

    from jurystream.stream.client import produce
    from jurystream.stream.label_io import read_corrections

    settings = _settings(config, broker={"bootstrap": bootstrap})
    address = _require_bootstrap(settings)
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
        content = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]error:[/] cannot read {file}: {exc}")
        raise typer.Exit(2) from exc
    if settings.tasks and task not in settings.tasks:
        err.print(
            f"[red]error:[/] this deployment labels several tasks ({', '.join(settings.tasks)}): "
            "say which one these labels are for with --task"
        )
        raise typer.Exit(2)
    corrections = read_corrections(content, file)
    topic = settings.topics.name(Topic.FEEDBACK)
    records = [r.model_copy(update={"task": task}) if task else r for r in corrections.records]
    items = [(r.id.encode("utf-8"), r.to_bytes()) for r in records]
    sent = asyncio.run(produce(address, topic, items))
    err.print(f"sent {sent} corrections to {topic}")
    if corrections.refused:
        err.print(f"[yellow]{len(corrections.refused)} entries not sent:[/]")
        for where, why in corrections.refused[:50]:
            err.print(f"  {where}: {why}")
        raise typer.Exit(1)
