"""Validate deploy/docker-compose.yml against the Compose specification's JSON schema.

Where Docker exists, `docker compose config` does this; CI has no Docker. Run with the tools
venv (`make compose-schema`), where the schema comes from the docker-compose 1.29.2 wheel
(installed without its dependencies: only its compose_spec.json is used) and jsonschema from
checkov. That schema predates the top-level `name` key, which is allowed here as a string.
Variables are replaced by their `${VAR:-default}` defaults, as with an empty shell.
"""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "deploy" / "docker-compose.yml"
VARIABLE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}")


def with_defaults(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: with_defaults(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_defaults(v) for v in value]
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: m.group(1) or "", value)
    return value


def main() -> int:
    # Located, not imported: the package itself would need its dependencies.
    spec = metadata.distribution("docker-compose").locate_file("compose/config/compose_spec.json")
    schema = json.loads(Path(str(spec)).read_text())
    schema["properties"].setdefault("name", {"type": "string"})
    document = with_defaults(yaml.safe_load(COMPOSE.read_text()))
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(document))
    for error in errors:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        print(f"{COMPOSE.name}: {where}: {error.message}", file=sys.stderr)
    if not errors:
        print(f"{COMPOSE.name}: valid against the Compose specification")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
