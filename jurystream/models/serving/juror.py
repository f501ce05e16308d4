"""Jurors at serving time: anything that maps a batch of texts to class probabilities.

A juror lives in a directory with a ``manifest.json`` that lists every file with its sha256.
Loading verifies the checksums first, so a corrupt, truncated or half-copied model is refused
with a clear error instead of serving garbage. Serving needs onnxruntime and tokenizers only:
torch is never imported here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort

from jurystream.models.serving import runtime
from jurystream.models.serving.kinds import UnknownKind, juror_kind

MANIFEST = "manifest.json"
# One inference call scores at most this many texts, of lengths within LENGTH_SLACK of each
# other (OnnxTransformerJuror): padding costs more than the calls it saves.
LENGTH_CHUNK = 8
LENGTH_SLACK = 1.1
# Runs one function over a juror's chunks: the builtin ``map``, or a thread pool's.
ChunkMap = Callable[[Callable[[list[int]], None], Iterable[list[int]]], Iterator[None]]


def length_chunks(
    lengths: Sequence[int], max_texts: int = LENGTH_CHUNK, slack: float = LENGTH_SLACK
) -> list[list[int]]:
    """Indices of ``lengths`` in inference calls: sorted by length, cut where a chunk is full
    or the next text is over ``slack`` × the chunk's shortest.

    Each call is padded to its longest text, and tweet lengths vary a lot: fixed chunks of 8
    sorted texts ran a MiniLM juror at 275 texts/s, chunks bounded by length at 425, one text
    per call at 400 (TweetEval offensive val, batch 32, int8, one thread; BENCHMARKS.md).
    """
    chunks: list[list[int]] = []
    current: list[int] = []
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        if current and (len(current) >= max_texts or lengths[index] > slack * lengths[current[0]]):
            chunks.append(current)
            current = []
        current.append(index)
    if current:
        chunks.append(current)
    return chunks


class ModelLoadError(RuntimeError):
    """A juror directory that must not be served (missing file, bad checksum, bad manifest)."""


@runtime_checkable
class Juror(Protocol):
    name: str
    version: str
    labels: tuple[str, ...]
    cost: float  # relative cost per text; the cascade policy asks cheap jurors first

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, shape (len(texts), len(labels)), rows summing to 1."""
        ...


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    kind: str
    labels: tuple[str, ...]
    files: dict[str, str]
    cost: float = 1.0
    max_length: int = 128
    parent: str | None = None
    created_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {"name", "version", "kind", "labels", "files", "cost", "max_length", "parent"}
        known.add("created_at")
        try:
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                kind=str(data["kind"]),
                labels=tuple(str(x) for x in data["labels"]),
                files={str(k): str(v) for k, v in data["files"].items()},
                cost=float(data.get("cost", 1.0)),
                max_length=int(data.get("max_length", 128)),
                parent=data.get("parent"),
                created_at=data.get("created_at"),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelLoadError(f"manifest is missing or has a bad field: {exc!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "labels": list(self.labels),
            "files": dict(self.files),
            "cost": self.cost,
            "max_length": self.max_length,
            "parent": self.parent,
            "created_at": self.created_at,
        }
        out.update(self.extra)
        return out


def precision_note(extra: dict[str, Any]) -> str | None:
    """One line for the user when a juror serves fp32 because int8 missed the bar, else None."""
    fallback = extra.get("fp32_fallback")
    if not isinstance(fallback, dict):
        return None
    reached = ", ".join(
        f"{recipe} {agreement:.1%}"
        for recipe, agreement in fallback["int8_agreement"].items()
        if agreement is not None
    )
    return (
        f"serving fp32: int8 agreement with fp32 ({reached}) is under the bar "
        f"{fallback['min_agreement']:.1%}; fp32 runs {fallback['fp32_texts_per_s']:.0f} texts/s "
        f"vs int8 {fallback['int8_texts_per_s']:.0f} ({fallback['slowdown']:.2f}x slower). "
        "Lower the bar with --min-int8-agreement to serve int8."
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelLoadError(f"{directory}: no {MANIFEST}; is this a juror directory?")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: unreadable manifest: {exc}") from exc
    return Manifest.from_dict(data)


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Refuse a juror whose files are missing or differ from the manifest's checksums."""
    if not manifest.files:
        raise ModelLoadError(f"{directory}: manifest lists no files")
    for rel, expected in manifest.files.items():
        path = directory / rel
        if not path.is_file():
            raise ModelLoadError(f"{directory}: {rel} is missing (incomplete copy?)")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelLoadError(
                f"{directory}: {rel} has sha256 {actual[:12]}…, manifest says {expected[:12]}… "
                "(corrupt or truncated); re-export it or roll back to the previous version"
            )


def write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / MANIFEST).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")


def _load_libc_trim() -> Any:
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name) if libc_name else None
    return getattr(libc, "malloc_trim", None)


_MALLOC_TRIM = _load_libc_trim()  # glibc only; None on musl and macOS


def trim_heap() -> None:
    """Hand the C heap's free pages back to the operating system (a no-op without glibc).

    Every batch has new shapes, so onnxruntime and tokenizers free different-sized buffers each
    time and glibc keeps the holes: three int8 MiniLM jurors scoring TweetEval grew from 194 MB
    loaded to ~350 MB resident. Trimming after each batch (~2 ms against ~300 ms of scoring)
    holds the peak near 250 MB (measured in one process, side by side; see BENCHMARKS.md).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    try:
        return runtime.session(path, threads)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"{path}: onnxruntime refused the model: {exc}") from exc


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=1, keepdims=True), dtype=np.float32)


class _OnnxJuror:
    """What every ONNX juror shares: its manifest identity and one onnxruntime session."""

    model_file = "model.onnx"

    def __init__(self, directory: Path, manifest: Manifest, threads: int = 1) -> None:
        self.directory = directory
        self.manifest = manifest
        self.name = manifest.name
        self.version = manifest.version
        self.labels = manifest.labels
        self.cost = manifest.cost
        model_file = str(manifest.extra.get("model_file", self.model_file))
        self._session = _session(directory / model_file, threads)


class OnnxTransformerJuror(_OnnxJuror):
    """A transformer sequence classifier exported to ONNX (fp32 or int8), with its tokenizer."""

    def __init__(self, directory: Path, manifest: Manifest, threads: int = 1) -> None:
        super().__init__(directory, manifest, threads)
        self._inputs = {i.name for i in self._session.get_inputs()}
        try:
            self._tokenizer = runtime.load_tokenizer(
                directory / "tokenizer.json", manifest.max_length
            )
        except Exception as exc:
            raise ModelLoadError(f"{directory}: bad tokenizer.json: {exc}") from exc

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_chunks(texts, map)

    def predict_chunks(self, texts: Sequence[str], map_chunks: ChunkMap) -> np.ndarray:
        """Tokenize once, then run the length chunks through ``map_chunks``: ``map`` in this
        thread, or a pool's ``map`` to spread them over cores (``models.parallel``). Each chunk
        writes its own rows, so they may run in any order and at once (onnxruntime sessions
        are safe to run from several threads)."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        encoded = runtime.encode(self._tokenizer, texts)
        feeds = {k: v for k, v in encoded.items() if k in self._inputs}
        lengths = encoded["attention_mask"].sum(axis=1)
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)

        def run(chunk: list[int]) -> None:
            width = int(lengths[chunk].max())
            logits = self._session.run(None, {k: v[chunk, :width] for k, v in feeds.items()})[0]
            out[chunk] = _softmax(np.asarray(logits, dtype=np.float32))

        for _ in map_chunks(run, length_chunks(lengths.tolist())):
            pass  # consuming the map waits for every chunk and raises the first error
        return out


class OnnxSklearnJuror(_OnnxJuror):
    """A scikit-learn text pipeline (e.g. TF-IDF + logistic regression) exported by skl2onnx."""

    def __init__(self, directory: Path, manifest: Manifest, threads: int = 1) -> None:
        super().__init__(directory, manifest, threads)
        self._input = self._session.get_inputs()[0].name
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "probabilities" if "probabilities" in outputs else outputs[-1]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        feed = np.array(list(texts), dtype=object).reshape(-1, 1)
        (probs,) = self._session.run([self._output], {self._input: feed})
        return np.asarray(probs, dtype=np.float32)


def load_juror(directory: Path | str, threads: int = 1) -> Juror:
    """Load and verify a juror directory; raises ModelLoadError if it must not be served."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    verify_files(directory, manifest)
    try:
        serving_class = juror_kind(manifest.kind).implementation("juror")
    except UnknownKind as exc:
        raise ModelLoadError(f"{directory}: {exc}") from exc
    juror: Juror = serving_class(directory, manifest, threads=threads)
    probe = juror.predict_proba(["probe"])
    if probe.shape != (1, len(manifest.labels)):
        raise ModelLoadError(
            f"{directory}: model outputs {probe.shape[1]} classes, manifest lists "
            f"{len(manifest.labels)} labels"
        )
    return juror
