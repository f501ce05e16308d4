"""Verify an ONNX export against its torch model and settle the precision it serves in.

Both transformer exporters end the same way, so they share this: ``onnx.py`` verifies a
classifier's one output (its logits), ``multihead.py`` one probability output per head. Before
anything is published the export runs on check texts, tokenized by the very ``tokenizer.json``
serving reads and in batches like serving: on every output, fp32 ONNX must match torch within
``tolerance``, and int8 must pick the same label on at least ``min_agreement`` of the texts.

``settle_precision`` climbs the quantization recipes (``quantize.RECIPES``) and keeps the first
that passes. When none does, the ladder ends with serving the verified fp32 model
(``FP32_FALLBACK``): a slower juror is worth more than none. The manifest then records what
each int8 recipe reached and the measured speed cost (fp32 vs int8 texts per second), so the
choice is visible in ``jurystream models show`` rather than silent. A failing export raises
ExportVerificationError naming the recipe, the output and the figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from jurystream.exporters.quantize import RECIPES, quantize_recipe
from jurystream.models.serving.runtime import encode, load_tokenizer, session

FP32_FALLBACK = "fp32-fallback"  # the last rung: no int8 recipe met the bar, fp32 serves
SPEED_TEXTS = 64  # check texts timed per runtime when measuring the fp32 fallback's cost

Feeds = dict[str, np.ndarray]
# The torch model the export must reproduce: its outputs on ``feeds``, in the ONNX output order.
Reference = Callable[[Feeds], Sequence[np.ndarray]]


class ExportVerificationError(RuntimeError):
    """The exported model does not behave like the checkpoint; it must not be published."""


@dataclass(frozen=True)
class Bar:
    """What an export must meet to be published, and what it may fall back to.

    fp32 ONNX within ``tolerance`` of torch on every output, int8 on the same label on at least
    ``min_agreement`` of the check texts on every output. Without ``quantize`` only fp32 is
    verified; ``fp32_fallback`` lets the verified fp32 model serve when no int8 recipe meets the
    bar (a slower juror is worth more than none), else that export fails.
    """

    tolerance: float
    min_agreement: float
    quantize: bool = True
    fp32_fallback: bool = True


@dataclass(frozen=True)
class Outputs:
    """What an export's ONNX outputs are, so the checks and their messages fit the model.

    ``heads`` names one output per head, in the model's output order; None is a classifier's
    one output, recorded flat in the manifest as single-head jurors always have been.
    ``int8_against`` is whose label int8 must pick: a classifier's int8 model replaces its fp32
    export, so it is held to fp32's labels; a multi-head juror's heads are held to torch's, the
    labels their training measured.
    """

    values: Literal["logits", "probabilities"]
    int8_against: Literal["fp32", "torch"]
    heads: tuple[str, ...] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return self.heads if self.heads is not None else ("",)


@dataclass(frozen=True)
class OutputCheck:
    """What verification measured on one output."""

    max_abs_diff: float  # fp32 ONNX vs torch
    int8_agreement: float | None  # int8 ONNX picks the same label, share of check texts
    int8_max_abs_diff: float | None  # int8 ONNX vs torch (informative)


@dataclass(frozen=True)
class Verification:
    """What the checks measured on every output of one export, against the bar."""

    outputs: Outputs
    check_texts: int
    tolerance: float
    min_agreement: float
    checks: dict[str, OutputCheck]

    @property
    def fp32_right(self) -> bool:
        return all(c.max_abs_diff <= self.tolerance for c in self.checks.values())  # NaN fails

    @property
    def passed(self) -> bool:
        return self.fp32_right and all(
            c.int8_agreement is None or c.int8_agreement >= self.min_agreement
            for c in self.checks.values()
        )

    @property
    def max_abs_diff(self) -> float:
        """The largest fp32-vs-torch difference over the outputs (NaN if any is NaN)."""
        return float(np.max([c.max_abs_diff for c in self.checks.values()]))

    @property
    def worst_agreement(self) -> float | None:
        values = [c.int8_agreement for c in self.checks.values() if c.int8_agreement is not None]
        return min(values) if values else None

    def without_int8(self) -> Verification:
        """The verification of the fp32 model alone (what serves after the fallback)."""
        fp32_only = {n: OutputCheck(c.max_abs_diff, None, None) for n, c in self.checks.items()}
        return replace(self, checks=fp32_only)

    def problems(self, recipe: str) -> list[str]:
        """What failed, output by output, for the error message."""
        against = "the fp32 label" if self.outputs.int8_against == "fp32" else "torch's label"
        out = []
        for name, c in self.checks.items():
            head = f"head {name}: " if name else ""
            if not c.max_abs_diff <= self.tolerance:
                out.append(
                    f"{head}fp32 ONNX {self.outputs.values} differ from torch by "
                    f"{c.max_abs_diff:.2e} (tolerance {self.tolerance:.0e})"
                )
            elif c.int8_agreement is not None and c.int8_agreement < self.min_agreement:
                out.append(
                    f"{recipe}: {head}int8 picks {against} on only {c.int8_agreement:.1%} of "
                    f"{self.check_texts} check texts (need {self.min_agreement:.0%})"
                )
        return out

    def record(self) -> dict[str, Any]:
        """The manifest's ``verification``: flat for a classifier's one output, else per head."""
        if self.outputs.heads is None:
            (check,) = self.checks.values()
            return {
                "check_texts": self.check_texts,
                "max_abs_diff": check.max_abs_diff,
                "tolerance": self.tolerance,
                "int8_agreement": check.int8_agreement,
                "min_agreement": self.min_agreement,
                "passed": self.passed,
            }
        return {
            "check_texts": self.check_texts,
            "tolerance": self.tolerance,
            "min_agreement": self.min_agreement,
            "heads": {name: asdict(check) for name, check in self.checks.items()},
            "passed": self.passed,
        }


def onnx_outputs(onnx: Any, feeds: Feeds) -> list[np.ndarray]:
    """Every output of an ONNX session on pre-tokenized inputs (those it takes), as float32."""
    names = {i.name for i in onnx.get_inputs()}
    return [
        np.asarray(out, dtype=np.float32)
        for out in onnx.run(None, {k: v for k, v in feeds.items() if k in names})
    ]


@dataclass(frozen=True)
class Verifier:
    """The checks of one export: the torch reference, its outputs, the check texts, the bar."""

    reference: Reference
    outputs: Outputs
    tokenizer_file: Path
    check_texts: Sequence[str]
    bar: Bar
    max_length: int
    threads: int = 1
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not self.check_texts:
            raise ExportVerificationError(
                "verification needs at least one check text; pass some of the posts the "
                "juror will label"
            )

    def verify(self, fp32_model: Path, int8_model: Path | None) -> Verification:
        """Compare torch, fp32 ONNX and int8 ONNX on the check texts, output by output."""
        tokenizer = load_tokenizer(self.tokenizer_file, self.max_length)
        sessions = {"fp32": session(fp32_model, self.threads)}
        if int8_model is not None:
            sessions["int8"] = session(int8_model, self.threads)
        inputs = {i.name for i in sessions["fp32"].get_inputs()}
        got: dict[str, list[Sequence[np.ndarray]]] = {k: [] for k in ("torch", *sessions)}
        for start in range(0, len(self.check_texts), self.batch_size):
            feeds = encode(tokenizer, self.check_texts[start : start + self.batch_size])
            feeds = {k: v for k, v in feeds.items() if k in inputs}
            got["torch"].append(self.reference(feeds))
            for kind, onnx in sessions.items():
                got[kind].append(onnx_outputs(onnx, feeds))
        checks = {}
        for i, name in enumerate(self.outputs.names):
            ref, fp32 = _joined(got["torch"], i), _joined(got["fp32"], i)
            int8 = _joined(got["int8"], i) if "int8" in got else None
            against = fp32 if self.outputs.int8_against == "fp32" else ref
            checks[name] = OutputCheck(
                max_abs_diff=float(np.abs(ref - fp32).max()),
                int8_agreement=None
                if int8 is None
                else float((int8.argmax(1) == against.argmax(1)).mean()),
                int8_max_abs_diff=None if int8 is None else float(np.abs(ref - int8).max()),
            )
        bar = self.bar
        return Verification(
            self.outputs, len(self.check_texts), bar.tolerance, bar.min_agreement, checks
        )


def _joined(batches: list[Sequence[np.ndarray]], output: int) -> np.ndarray:
    return np.concatenate([batch[output] for batch in batches])


@dataclass(frozen=True)
class Verified:
    """The precision an export serves in, and the verification that chose it."""

    recipe: str  # one of RECIPES, "fp32" (not quantized) or FP32_FALLBACK
    int8: Path | None  # the int8 model to serve; None: the fp32 model serves
    verification: Verification
    fallback: dict[str, Any] | None  # why fp32 serves and what it costs (FP32_FALLBACK only)

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest's precision, recipe, fallback record and verification."""
        return {
            "precision": "fp32" if self.int8 is None else "int8-dynamic-per-channel",
            "quantization_recipe": self.recipe,
            **({"fp32_fallback": self.fallback} if self.fallback else {}),
            "verification": self.verification.record(),
        }


def settle_precision(
    verifier: Verifier, fp32: Path, *, name: str, keep_fp32: Sequence[str] = ()
) -> Verified:
    """Quantize ``fp32`` by each recipe (into ``model_int8.onnx`` beside it) until one passes
    ``verifier``, else fall back to fp32 as its bar allows.

    ``keep_fp32`` names nodes every recipe leaves fp32. The fp32 export must match torch
    whatever the precision; after a fallback the int8 file is removed. Raises
    ExportVerificationError, naming ``name``, when nothing passes.
    """
    bar = verifier.bar
    reports: list[tuple[str, Verification]] = []
    candidate: Path | None = None
    for recipe in RECIPES if bar.quantize else ("fp32",):
        if recipe != "fp32":
            candidate = quantize_recipe(fp32, fp32.with_name("model_int8.onnx"), recipe, keep_fp32)
        report = verifier.verify(fp32, candidate)
        reports.append((recipe, report))
        if report.passed or not report.fp32_right:
            break  # passed, or the fp32 export itself is wrong: no recipe can help
    recipe, report = reports[-1]
    fallback: dict[str, Any] | None = None
    if not report.passed and bar.fp32_fallback and candidate is not None and report.fp32_right:
        agreements = {r: v.worst_agreement for r, v in reports}
        fallback = fallback_record(verifier, fp32, candidate, agreements)
        report = report.without_int8()
        candidate.unlink()
        recipe, candidate = FP32_FALLBACK, None
    if not report.passed:
        raise ExportVerificationError(_failure(name, reports))
    return Verified(recipe, candidate, report, fallback)


def texts_per_second(
    model: Path, tokenizer_file: Path, texts: Sequence[str], max_length: int, threads: int = 1
) -> float:
    """Serving speed of ``model`` on ``texts`` in batches of 8, best of two passes."""
    onnx = session(model, threads)
    tokenizer = load_tokenizer(tokenizer_file, max_length)
    batches = [encode(tokenizer, texts[i : i + 8]) for i in range(0, len(texts), 8)]
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        for feeds in batches:
            onnx_outputs(onnx, feeds)
        best = min(best, time.perf_counter() - started)
    return len(texts) / max(best, 1e-9)


def fallback_record(
    verifier: Verifier, fp32: Path, int8: Path, agreements: dict[str, float | None]
) -> dict[str, Any]:
    """Why fp32 serves and what it costs: each int8 recipe's agreement (the worst output's),
    both speeds."""
    texts = list(verifier.check_texts[:SPEED_TEXTS])
    v = verifier
    fp32_speed = texts_per_second(fp32, v.tokenizer_file, texts, v.max_length, v.threads)
    int8_speed = texts_per_second(int8, v.tokenizer_file, texts, v.max_length, v.threads)
    return {
        "min_agreement": v.bar.min_agreement,
        "int8_agreement": agreements,
        "fp32_texts_per_s": round(fp32_speed, 1),
        "int8_texts_per_s": round(int8_speed, 1),
        "slowdown": round(int8_speed / fp32_speed, 2),
    }


def _failure(name: str, reports: Sequence[tuple[str, Verification]]) -> str:
    problems = [p for recipe, report in reports for p in report.problems(recipe)]
    message = f"export of {name} failed verification, not published: " + "; ".join(problems)
    if reports[-1][1].fp32_right:  # int8 missed the bar and fp32 may not serve instead
        message += (
            "; to publish it, lower the int8 bar (min_agreement, --min-int8-agreement) or let "
            "fp32 serve (fp32_fallback=True)"
        )
    return message
