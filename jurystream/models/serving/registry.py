"""A versioned juror registry on a local path or any fsspec URL (s3://, gs://, memory://).

Layout::

    <registry>/<juror>/<version>/manifest.json, model.onnx, tokenizer.json, checkpoint/...
    <registry>/<juror>/serving.json   {"version": "3", "previous": ["1", "2"], "updated_at": ...}

Versions are ``1, 2, 3…``. A version is written under a hidden temporary name and renamed into
place, and the serving pointer is written last (also via a temporary file and a rename), so a
reader never sees a half-written version as serving; on object stores, where rename is a copy,
the checksums in the manifest still catch a partial copy. Promotion verifies the version first:
a corrupt, truncated or incomplete version is refused and the pointer keeps the old one.
``previous`` is the promotion history that ``rollback`` walks back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from jurystream.models.serving.juror import (
    MANIFEST,
    Juror,
    Manifest,
    ModelLoadError,
    load_juror,
    read_manifest,
    verify_files,
    write_manifest,
)
from jurystream.models.serving.kinds import CHECKPOINT_DIR

log = logging.getLogger(__name__)

POINTER = "serving.json"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done (unknown juror/version, nothing to roll back)."""


@dataclass(frozen=True)
class VersionInfo:
    """One version as ``models list`` shows it."""

    name: str
    version: str
    parent: str | None
    created_at: str | None
    serving: bool
    metrics: dict[str, Any]
    precision: str = ""  # "int8", or "fp32" with its slowdown when int8 missed the bar


def _precision(extra: dict[str, Any]) -> str:
    fallback = extra.get("fp32_fallback")
    if isinstance(fallback, dict):
        return f"fp32 ({fallback.get('slowdown')}x slower than int8)"
    precision = str(extra.get("precision", ""))
    return "int8" if precision.startswith("int8") else precision


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    """Publish, list, promote, roll back and resolve juror versions."""

    def __init__(self, url: str | Path, cache_dir: Path | None = None) -> None:
        self.url = str(url)
        self.fs, root = fsspec.core.url_to_fs(self.url)
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "jurystream-cache" / digest

    # -- paths -------------------------------------------------------------------------------

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def jurors(self) -> list[str]:
        """Names of the jurors that have at least one version."""
        if not self.fs.exists(self.root):
            return []
        names = []
        for entry in self.fs.ls(self.root, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if not name.startswith(".") and self.versions(name):
                names.append(name)
        return sorted(names)

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first."""
        base = self._path(name)
        if not self.fs.isdir(base):
            return []
        found = []
        for entry in self.fs.ls(base, detail=False):
            version = entry.rstrip("/").rsplit("/", 1)[-1]
            if version.isdigit() and self.fs.isdir(entry):
                found.append(version)
        return sorted(found, key=int)

    # -- pointer -----------------------------------------------------------------------------

    def _pointer(self, name: str) -> dict[str, Any]:
        path = self._path(name, POINTER)
        if not self.fs.exists(path):
            return {"version": None, "previous": []}
        with self.fs.open(path, "r") as fh:
            data = json.load(fh)
        if not isinstance(data, dict):
            raise RegistryError(f"{path}: not a serving pointer")
        return data

    def _write_pointer(self, name: str, version: str, previous: list[str]) -> None:
        tmp = self._path(name, f".{POINTER}.{uuid.uuid4().hex}")
        body = {"version": version, "previous": previous, "updated_at": _now()}
        with self.fs.open(tmp, "w") as fh:
            fh.write(json.dumps(body, indent=2) + "\n")
        self.fs.mv(tmp, self._path(name, POINTER))

    def serving_version(self, name: str) -> str | None:
        """The version the workers should load, or None if nothing was promoted yet."""
        version = self._pointer(name).get("version")
        return None if version is None else str(version)

    # -- local copies ------------------------------------------------------------------------

    def local_dir(self, name: str, version: str) -> Path:
        """A local directory holding ``name``/``version`` (downloaded once for remote URLs)."""
        remote = self._path(name, version)
        if not self.fs.isdir(remote):
            raise RegistryError(f"{self.url}: {name} has no version {version}")
        if self.local:
            return Path(remote)
        target = self.cache_dir / name / version
        if target.is_dir():
            try:
                verify_files(target, read_manifest(target))
                return target
            except ModelLoadError:
                shutil.rmtree(target)  # a damaged cache entry: fetch again
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
        try:
            for path in self.fs.find(remote):
                rel = path[len(remote) :].lstrip("/")
                (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(path, str(staging / rel))
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def serving_dir(self, name: str) -> Path:
        """The local directory of ``name``'s serving version (what the worker loads)."""
        version = self.serving_version(name)
        if version is None:
            raise RegistryError(f"{self.url}: no serving version of {name!r}")
        return self.local_dir(name, version)

    def checkpoint_dir(self, name: str, version: str | None = None) -> Path:
        """The HF checkpoint kept with a version (default: serving), to continue training from."""
        version = version or self.serving_version(name)
        if version is None:
            raise RegistryError(f"{self.url}: no serving version of {name!r}")
        path = self.local_dir(name, version) / CHECKPOINT_DIR
        if not (path / "config.json").is_file():
            raise RegistryError(f"{name} v{version} has no training checkpoint (sklearn juror?)")
        return path

    # -- reading -----------------------------------------------------------------------------

    def manifest(self, name: str, version: str | None = None) -> Manifest:
        """The manifest of a version (default: serving), read from the registry itself."""
        version = version or self.serving_version(name)
        if version is None:
            raise RegistryError(f"{self.url}: no serving version of {name!r}")
        path = self._path(name, version, MANIFEST)
        if not self.fs.exists(path):
            raise ModelLoadError(f"{self.url}: {name} v{version} has no manifest (incomplete)")
        with self.fs.open(path, "r") as fh:
            return Manifest.from_dict(json.load(fh))

    def list(self) -> list[VersionInfo]:
        """Every version of every juror, with the serving one marked."""
        rows = []
        for name in self.jurors():
            serving = self.serving_version(name)
            for version in self.versions(name):
                try:
                    m = self.manifest(name, version)
                    parent, created, metrics = m.parent, m.created_at, m.extra.get("metrics", {})
                    precision = _precision(m.extra)
                except ModelLoadError:
                    parent, created, metrics = None, None, {"error": "unreadable manifest"}
                    precision = ""
                rows.append(
                    VersionInfo(
                        name, version, parent, created, version == serving, metrics, precision
                    )
                )
        return rows

    def load(self, name: str, threads: int = 1) -> Juror:
        """Load the serving version; if it is refused, fall back along the promotion history.

        A version that went bad on disk must not take the juror out of service: the newest
        earlier version that still verifies is served instead, and the refusal is logged.
        """
        pointer = self._pointer(name)
        if pointer.get("version") is None:
            raise RegistryError(f"{self.url}: no serving version of {name!r}")
        candidates = [str(pointer["version"]), *map(str, reversed(pointer.get("previous", [])))]
        errors = []
        for version in candidates:
            try:
                return load_juror(self.local_dir(name, version), threads=threads)
            except (ModelLoadError, RegistryError) as exc:
                log.error("juror %s v%s refused: %s", name, version, exc)
                errors.append(f"v{version}: {exc}")
        raise ModelLoadError(f"no loadable version of {name!r}: " + "; ".join(errors))

    # -- writing -----------------------------------------------------------------------------

    def publish(
        self,
        source: Path,
        *,
        name: str | None = None,
        parent: str | None = None,
        promote: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Copy a verified juror directory in as the next version; returns the version.

        The source must pass ``load_juror`` (checksums and a probe prediction). ``parent``
        defaults to the current serving version. With ``promote`` it becomes serving.
        """
        source = Path(source)
        manifest = read_manifest(source)
        load_juror(source)  # refuse to publish what could not be served
        name = name or manifest.name
        parent = parent if parent is not None else self.serving_version(name)
        base = self._path(name)
        self.fs.makedirs(base, exist_ok=True)
        for _ in range(20):  # another publisher may take the same number: take the next one
            existing = self.versions(name)
            version = str(int(existing[-1]) + 1) if existing else "1"
            final = self._path(name, version)
            if self.fs.exists(final):
                continue
            tmp = self._path(name, f".tmp-{version}-{uuid.uuid4().hex}")
            stamped = replace(
                manifest,
                name=name,
                version=version,
                parent=parent,
                created_at=_now(),
                extra={**manifest.extra, **(extra or {})},
            )
            self._upload(source, stamped, tmp)
            if self._claim(tmp, final):
                break
            self.fs.rm(tmp, recursive=True)
        else:
            raise RegistryError(f"could not allocate a version for {name} (too much contention)")
        if promote:
            self.promote(name, version)
        return version

    def _claim(self, tmp: str, final: str) -> bool:
        """Move a fully uploaded version into place; False if another publisher took it."""
        if self.local:
            try:
                os.rename(tmp, final)  # atomic, and fails if ``final`` exists and is not empty
            except OSError:
                return False
            return True
        if self.fs.exists(final):
            return False
        self.fs.mv(tmp, final, recursive=True)
        return True

    def _upload(self, source: Path, manifest: Manifest, target: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            write_manifest(Path(tmp), manifest)
            self.fs.makedirs(target, exist_ok=True)
            self.fs.put_file(str(Path(tmp) / MANIFEST), f"{target}/{MANIFEST}")
        for rel in manifest.files:
            destination = f"{target}/{rel}"
            self.fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(source / rel), destination)

    def promote(self, name: str, version: str) -> None:
        """Make ``version`` serving, after checking it loads; the old one goes to history."""
        if version not in self.versions(name):
            raise RegistryError(f"{self.url}: {name} has no version {version}")
        load_juror(self.local_dir(name, version))  # raises ModelLoadError: pointer untouched
        pointer = self._pointer(name)
        current = pointer.get("version")
        previous = [str(v) for v in pointer.get("previous", [])]
        if current is not None and str(current) != version:
            previous.append(str(current))
        self._write_pointer(name, version, [v for v in previous if v != version])

    def rollback(self, name: str) -> str:
        """Serve the previously promoted version again; returns it."""
        pointer = self._pointer(name)
        previous = [str(v) for v in pointer.get("previous", [])]
        if not previous:
            raise RegistryError(f"{name}: no earlier serving version to roll back to")
        version = previous.pop()
        load_juror(self.local_dir(name, version))
        self._write_pointer(name, version, previous)
        return version


def resolve_juror_dir(spec: str, registry_url: str) -> Path:
    """A juror spec from settings → a local directory: an existing path, or a registry name."""
    path = Path(spec)
    if (path / MANIFEST).is_file():
        return path
    return Registry(registry_url).serving_dir(spec)
