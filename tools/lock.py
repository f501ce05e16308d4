"""Write the images' hashed lock files: every package pip installs, pinned, with PyPI's hashes.

    python tools/lock.py --uv .tools/bin/uv     # make lock: deploy/requirements-*.txt
    python tools/lock.py pins serving           # the pins alone, offline (tests compare them)

Run with the project's venv (`make lock`). The versions are the ones installed there, the
ones the tests ran against: it walks the requirements of jurystream's dependencies (plus the
``train`` extra for the trainer) and the build backend through the installed distributions'
metadata. uv (`uv pip compile --no-deps --generate-hashes`) then adds the sha256 of every
file PyPI has for each pinned release, for any platform, without resolving anything anew.
The images install them with ``pip install --require-hashes --no-deps``.

torch is left out of the trainer's lock: the trainer image takes it from PyTorch's index for
the chosen variant (CPU or a CUDA build, whose files and dependencies differ), by exact
version (deploy/Dockerfile, ``TORCH_VERSION``). Its other requirements (sympy, networkx, ...)
are in the lock, hashed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
EXTRAS = {"serving": (), "trainer": ("train",)}
# Installed apart from the lock, from the index of the chosen build (see the docstring).
UNLOCKED = {"trainer": {"torch"}, "serving": set()}
INDEX = "https://pypi.org/simple"


def lock_path(image: str) -> Path:
    return ROOT / "deploy" / f"requirements-{image}.txt"


def closure(extras: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of the project's requirements (from pyproject.toml, not from the
    installed jurystream, which may be older), of its build backend (the images build the
    project without build isolation, so nothing unhashed is fetched) and of everything they
    require."""
    pyproject = tomllib.loads(PYPROJECT.read_text())
    project = pyproject["project"]
    env = {k: str(v) for k, v in default_environment().items()}
    wanted = [*project["dependencies"], *pyproject["build-system"]["requires"]]
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
        # Without the local label (torch 2.13.0+cpu): the pin names the release.
        pins[name] = dist.version.split("+", 1)[0]
        for extra in ("", *req.extras):
            for sub in map(Requirement, dist.requires or []):
                if sub.marker is None or sub.marker.evaluate({**env, "extra": extra}):
                    queue.append(sub)
    return pins


def pins(image: str) -> dict[str, str]:
    """What the image's lock must pin: the closure less what is installed apart."""
    return {
        name: version
        for name, version in closure(EXTRAS[image]).items()
        if name not in UNLOCKED[image]
    }


def header(image: str) -> str:
    lines = [
        f"Lock for the {image} image: pip install --require-hashes --no-deps -r this file.",
        "Written by `make lock` (tools/lock.py) from the venv the tests ran in, with PyPI's",
        "sha256 of every file of each release.",
    ]
    if UNLOCKED[image]:
        apart = ", ".join(sorted(UNLOCKED[image]))
        lines.append(f"Not in it: {apart}, installed apart by exact version (deploy/Dockerfile).")
    return "".join(f"# {line}\n" for line in lines)


def write_lock(image: str, uv: str) -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{image}.in"
        source.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins(image).items())))
        out = Path(tmp) / f"{image}.txt"
        subprocess.run(
            [uv, "pip", "compile", "--quiet", "--no-config", "--no-deps", "--generate-hashes",
             "--no-header", "--no-annotate", "--default-index", INDEX,
             "--python-version", python, str(source), "-o", str(out)],
            check=True,
        )  # fmt: skip
        lock_path(image).write_text(header(image) + out.read_text())


def main() -> None:
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "pins" and args[1] in EXTRAS:
        for name, version in sorted(pins(args[1]).items()):
            print(f"{name}=={version}")
    elif len(args) == 2 and args[0] == "--uv":
        for image in EXTRAS:
            write_lock(image, args[1])
    else:
        sys.exit("usage: tools/lock.py --uv PATH_TO_UV | tools/lock.py pins serving|trainer")


if __name__ == "__main__":
    main()
