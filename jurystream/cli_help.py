"""Readable ``--help``: value placeholders people know (N, NUMBER, TEXT, PATH), none on flags.

Typer labels an option's value with its Python type (``<int>``, ``<str>``, ``<bool>`` even on
flags that take no value). The root command group walks every command once when it is built
and gives each option without an explicit ``metavar`` a plain one; options that name what they
take (``HOST:PORT``, ``DIR|NAME``...) set their own. Parameters are matched by the type label
Typer itself shows (Typer vendors its own click, so ``click``'s classes do not apply).
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup

_BY_TYPE = {
    "bool": "",  # a flag takes no value: show none
    "int": "N",
    "int range": "N",
    "float": "NUMBER",
    "float range": "NUMBER",
    "str": "TEXT",
    "path": "PATH",
    "file": "FILE",
    "directory": "DIR",
}


def _metavar(option: Any) -> str | None:
    if getattr(option, "is_flag", False) or getattr(option, "count", False):
        return ""
    descriptor = getattr(option, "type_descriptor", None)
    if descriptor is None or descriptor.is_choice:
        return None  # Typer lists the choices
    label = option.display_type(None).strip("<>").removeprefix("list[").removesuffix("]")
    return _BY_TYPE.get(label)


def readable(command: Any) -> None:
    """Set plain metavars on ``command``'s options and its subcommands', recursively."""
    for param in command.params:
        if param.param_type_name == "option" and param.metavar is None:
            param.metavar = _metavar(param)
    original = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = original(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        readable(sub)


class ReadableGroup(TyperGroup):
    """The root group: makes every command's help readable once, when the CLI is built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        readable(self)
