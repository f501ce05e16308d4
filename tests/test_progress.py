"""The one progress bar: what a user sees of long work."""

import io

from rich.console import Console

from jurystream.progress import progress_bar


def _render(*fields: str, enabled: bool = True, **task_fields: float) -> str:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    with progress_bar(*fields, console=console, enabled=enabled) as bar:
        task = bar.add_task("training minilm-0", total=10, **task_fields)
        bar.advance(task, 4)
    return out.getvalue()


def test_the_bar_shows_steps_done_of_the_total() -> None:
    assert "training minilm-0" in _render()
    assert "4/10" in _render()


def test_named_fields_are_shown_next_to_the_bar() -> None:
    assert "loss 0.250" in _render("loss", loss=0.25)


def test_a_disabled_bar_prints_nothing() -> None:
    assert _render(enabled=False) == ""
