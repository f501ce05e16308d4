"""One look for long work: a Rich progress bar on stderr, so stdout stays for results."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(*fields: str, console: Console | None = None, enabled: bool = True) -> Progress:
    """Steps done of the total, elapsed and remaining time, and each named task field.

    ``fields`` are numeric task fields shown next to the bar (training shows its running
    ``loss``); every task added to the bar must then carry them.
    """
    columns: list[ProgressColumn] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    ]
    columns += [TextColumn(f"{field} {{task.fields[{field}]:.3f}}") for field in fields]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console or Console(stderr=True), disable=not enabled)
