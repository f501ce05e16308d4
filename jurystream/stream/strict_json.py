"""Strict JSON for records read from Kafka: any bytes in, a JSON object or one clear reason out.

``json.loads`` accepts what later breaks a role far from the parse: ``NaN`` and ``Infinity``
(not JSON, and re-sent by ``json.dumps`` as invalid JSON), numbers that overflow to infinity,
integers over Python's int-string limit (``ValueError`` at parse time), nesting deep enough to
raise ``RecursionError`` here or when the record is re-encoded, and lone UTF-16 surrogates
(``"\\ud800"``), which decode to a ``str`` that no UTF-8 encoder (tokenizer, producer, SQLite)
accepts. Every one of them is refused here, where the reason can still go to dead-letters.

Pure: no I/O.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Records nest a handful of levels (a post's ``meta``, a case's votes). Re-encoding a record
# wraps it in up to two more, and both the C decoder and encoder give up at the interpreter's
# recursion limit (1000): a bound far below it keeps every later ``dumps`` safe.
MAX_DEPTH = 64


class StrictJSONError(ValueError):
    """Why bytes are not an acceptable JSON object; the text is meant for the producer."""


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise StrictJSONError(f"number {literal[:40]} is out of range (overflows a 64-bit float)")
    return value


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON; send null or a finite number")


def _surrogate_free(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_tree(data: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise StrictJSONError if ``data`` nests deeper than ``max_depth`` or holds a string
    (key or value) with a lone surrogate. Iterative, so it cannot itself hit the recursion limit.
    """
    stack: list[tuple[Any, int, str]] = [(data, 1, "")]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, str):
            if not _surrogate_free(node):
                at = f" in {where}" if where else ""
                raise StrictJSONError(
                    f"string{at} holds a lone UTF-16 surrogate (e.g. \\ud800) that UTF-8 cannot "
                    "encode; send surrogate pairs only, or the character itself"
                )
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > max_depth:
            raise StrictJSONError(f"JSON nests deeper than {max_depth} levels")
        if isinstance(node, dict):
            for key, value in node.items():
                path = f"{where}.{key}" if where else str(key)
                shown = path if _surrogate_free(path) else "a key"
                stack.append((key, depth, shown))
                stack.append((value, depth + 1, shown))
        else:
            stack.extend((item, depth + 1, where) for item in node)


def loads(value: bytes | None, max_depth: int = MAX_DEPTH) -> Any:
    """Decode UTF-8 JSON strictly; raises StrictJSONError (a ValueError) saying what is wrong."""
    if not value:
        raise StrictJSONError("empty message (no value bytes)")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"not valid UTF-8 at byte {exc.start}") from exc
    try:
        data = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except StrictJSONError:
        raise
    except json.JSONDecodeError as exc:
        raise StrictJSONError(
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise StrictJSONError(f"JSON nests deeper than {max_depth} levels") from exc
    except ValueError as exc:  # an integer over the int-string limit (4300 digits by default)
        raise StrictJSONError(f"not acceptable JSON: {exc}; send large numbers as strings") from exc
    check_tree(data, max_depth)
    return data


def loads_object(value: bytes | None, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """``loads`` for records that must be a JSON object."""
    data = loads(value, max_depth)
    if not isinstance(data, dict):
        raise StrictJSONError(f"JSON {type(data).__name__} where an object was expected")
    return data
