"""A juror that labels several tasks in one encoder pass: one ONNX model, one output per task.

``OnnxMultiHeadJuror.predict_heads`` runs each length chunk once and gets every head's
probabilities from that one ``session.run``; a deployment labeling four tasks pays one
transformer pass, not four. For the ordinary one-task machinery (``Jury``, the policies, the
inference pool) it is a juror of its first head's labels, and ``head(task)`` is a view of any
head as an ordinary juror of the same name and version.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jurystream.models.serving import runtime
from jurystream.models.serving.juror import (
    ChunkMap,
    Manifest,
    ModelLoadError,
    OnnxTransformerJuror,
    length_chunks,
)


def output_name(task: str) -> str:
    """The ONNX output that carries ``task``'s probabilities."""
    return f"probs_{task}"


class OnnxMultiHeadJuror(OnnxTransformerJuror):
    """A shared encoder with one softmax head per task (manifest ``heads``: task → labels)."""

    def __init__(self, directory: Path, manifest: Manifest, threads: int = 1) -> None:
        super().__init__(directory, manifest, threads)
        heads = manifest.extra.get("heads")
        if not isinstance(heads, dict) or not heads:
            raise ModelLoadError(f"{directory}: manifest of kind {manifest.kind} lists no heads")
        self.heads: dict[str, tuple[str, ...]] = {t: tuple(labels) for t, labels in heads.items()}
        outputs = {o.name: o for o in self._session.get_outputs()}
        for task, labels in self.heads.items():
            output = outputs.get(output_name(task))
            if output is None:
                raise ModelLoadError(
                    f"{directory}: the model has no output {output_name(task)!r} for head "
                    f"{task!r} (outputs: {', '.join(outputs)}); re-export it"
                )
            width = output.shape[-1]
            if isinstance(width, int) and width != len(labels):
                raise ModelLoadError(
                    f"{directory}: head {task!r} outputs {width} classes, manifest lists "
                    f"{len(labels)} labels"
                )
        if tuple(next(iter(self.heads.values()))) != tuple(self.labels):
            raise ModelLoadError(f"{directory}: manifest labels must be the first head's labels")

    def predict_heads(
        self,
        texts: Sequence[str],
        map_chunks: ChunkMap = map,
        tasks: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Every head's probabilities (or those of ``tasks``), ``{task: (len(texts),
        len(labels))}``, from one ``session.run`` per length chunk. ``map_chunks`` runs the
        chunks: ``map`` here, or an inference pool's to spread them over cores."""
        tasks = list(self.heads) if tasks is None else [self.head(t).task for t in tasks]
        return self._run(texts, tasks, map_chunks)

    def predict_chunks(self, texts: Sequence[str], map_chunks: ChunkMap) -> np.ndarray:
        """The first head's probabilities (the juror protocol), chunks run by ``map_chunks``."""
        first = next(iter(self.heads))
        return self._run(texts, [first], map_chunks)[first]

    def head(self, task: str) -> HeadJuror:
        """``task``'s head as an ordinary juror (same name and version, that head's labels)."""
        if task not in self.heads:
            raise KeyError(
                f"juror {self.name} v{self.version} has no head {task!r}; "
                f"its heads: {', '.join(self.heads)}"
            )
        return HeadJuror(self, task)

    def _run(
        self, texts: Sequence[str], tasks: list[str], map_chunks: ChunkMap
    ) -> dict[str, np.ndarray]:
        out = {t: np.empty((len(texts), len(self.heads[t])), dtype=np.float32) for t in tasks}
        if not texts or not tasks:
            return out
        encoded = runtime.encode(self._tokenizer, texts)
        feeds = {k: v for k, v in encoded.items() if k in self._inputs}
        lengths = encoded["attention_mask"].sum(axis=1)
        names = [output_name(t) for t in tasks]

        def run(chunk: list[int]) -> None:
            width = int(lengths[chunk].max())
            probs = self._session.run(names, {k: v[chunk, :width] for k, v in feeds.items()})
            for task, p in zip(tasks, probs, strict=True):
                out[task][chunk] = p

        for _ in map_chunks(run, length_chunks(lengths.tolist())):
            pass  # consuming the map waits for every chunk and raises the first error
        return out


class HeadJuror:
    """One head of a multi-head juror, seen as an ordinary juror (``Jury`` and the inference
    pool take it like any other). Scoring runs only its own head's output."""

    def __init__(self, parent: OnnxMultiHeadJuror, task: str) -> None:
        self.parent = parent
        self.task = task
        self.name = parent.name
        self.version = parent.version
        self.cost = parent.cost
        self.labels = parent.heads[task]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_chunks(texts, map)

    def predict_chunks(self, texts: Sequence[str], map_chunks: ChunkMap) -> np.ndarray:
        return self.parent.predict_heads(texts, map_chunks, [self.task])[self.task]
