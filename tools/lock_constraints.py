"""Write pip constraints that pin every package an image installs, from a working venv.

    python tools/lock_constraints.py serving > deploy/constraints-serving.txt
    python tools/lock_constraints.py trainer > deploy/constraints-trainer.txt

Run with the project's venv (`make constraints`): it walks the requirements of jurystream's
dependencies (plus the ``train`` extra for the trainer) through the installed distributions'
metadata and pins each at the version installed, the one the tests ran against. No hashes:
they need the index, and the images must build from a local wheelhouse too.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

EXTRAS = {"serving": (), "trainer": ("train",)}


PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def closure(extras: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the project's requirements (from pyproject.toml, not from the
    installed jurystream, which may be older) and of everything they require."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    env = {k: str(v) for k, v in default_environment().items()}
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    queue = [Requirement(r) for r in wanted]
    pins: dict[str, str] = {}
    while queue:
        req = queue.pop()
        name = canonicalize_name(req.name)
        if name in pins or name == "jurystream":
            continue
        dist = metadata.distribution(req.name)
        # Without the local label (torch 2.13.0+cpu): the pin then matches the CPU and the
        # CUDA builds alike, and the trainer image's build argument chooses.
        pins[name] = dist.version.split("+", 1)[0]
        for extra in ("", *req.extras):
            for sub in map(Requirement, dist.requires or []):
                if sub.marker is None or sub.marker.evaluate({**env, "extra": extra}):
                    queue.append(sub)
    return pins


def main() -> None:
    image = sys.argv[1]
    pins = closure(EXTRAS[image])
    print(f"# pip constraints for the {image} image: tools/lock_constraints.py {image}")
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")


if __name__ == "__main__":
    main()
