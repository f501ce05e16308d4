"""Layering: the model layer never imports the exporters (ONNX export, metrics), and no import
cycle joins the ``models`` and ``exporters`` packages. Read from the source (every import
statement, also those inside functions), so a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import jurystream

ROOT = Path(jurystream.__file__).parent
EXPORTERS = "jurystream.exporters"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every jurystream module ``path`` imports, at any depth of the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in out if name.startswith("jurystream.")}


def graph() -> dict[str, set[str]]:
    """Import graph of the models and exporters packages (edges to known modules only)."""
    files = [*(ROOT / "models").rglob("*.py"), *(ROOT / "exporters").rglob("*.py")]
    modules = {module_name(f): f for f in files}
    return {name: imports_of(path) & set(modules) for name, path in modules.items()}


def test_the_model_layer_does_not_import_the_exporters() -> None:
    offenders = {
        module: sorted(i for i in imports if i.startswith(EXPORTERS))
        for module, imports in graph().items()
        if module.startswith("jurystream.models")
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_no_import_cycle_between_models_and_exporters() -> None:
    """Cycles inside one package (a package and its own submodules) are that package's own."""
    edges = graph()
    cycles = []
    for start in edges:
        # Depth-first search for a path back to ``start``.
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in edges[node]:
                if nxt == start and len({m.split(".")[1] for m in path}) > 1:
                    cycles.append(" → ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert cycles == []


def test_the_graph_sees_imports_inside_functions() -> None:
    # bootstrap imports training inside its function (torch stays out of serving imports).
    assert "jurystream.models.training.training" in graph()["jurystream.models.training.bootstrap"]
    assert "jurystream.models.serving.juror" in graph()["jurystream.exporters.onnx"]


# --- the layers inside the model layer --------------------------------------------------------

IO_LIBRARIES = {"onnxruntime", "torch", "transformers", "fsspec", "sqlite3", "aiokafka", "openai"}


def runtime_imports(path: Path) -> set[str]:
    """Every module ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def layer_imports(layer: str) -> dict[str, set[str]]:
    return {
        module_name(path): runtime_imports(path) for path in (ROOT / "models" / layer).rglob("*.py")
    }


def test_rules_are_pure() -> None:
    """Voting, thresholds, audits, selection, continual-learning rules and label-quality math
    import no other layer and nothing that does I/O, so they are tested without a broker."""
    offenders = {
        module: sorted(
            i
            for i in imports
            if (i.startswith("jurystream.") and not i.startswith("jurystream.models.rules"))
            or i.split(".")[0] in IO_LIBRARIES
        )
        for module, imports in layer_imports("rules").items()
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_serving_never_imports_training_or_the_streams() -> None:
    """A worker loads jurors without torch, SQLite or the trainer's code."""
    banned = ("jurystream.models.training", "jurystream.stream", "torch", "transformers")
    offenders = {
        module: sorted(i for i in imports if i.startswith(banned))
        for module, imports in layer_imports("serving").items()
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_the_model_layer_never_imports_the_streams() -> None:
    offenders = {
        module_name(path): sorted(
            i for i in runtime_imports(path) if i.startswith("jurystream.stream")
        )
        for path in (ROOT / "models").rglob("*.py")
    }
    assert {m: i for m, i in offenders.items() if i} == {}
