"""A stronger local ONNX model as the first tier of the chain (chain ensembles, 2024).

It answers the cases it is confident about (top probability at least ``threshold``) for free
and forwards the rest to the next, more expensive tier. Its model knows one label set, so it
forwards every multi-task case (``Case.tasks``) untouched. Inference runs in a worker thread
(onnxruntime releases the GIL) so the consumer's heartbeats keep going.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from jurystream.models.reviewer.base import Case, Forward, Outcome, Verdict
from jurystream.models.reviewer.hooks import NO_HOOKS, ReviewHooks
from jurystream.models.serving.juror import Juror


class LocalBackend:
    forwards = True  # it may pass a case on, so it cannot be the last tier

    def __init__(self, juror: Juror, threshold: float, hooks: ReviewHooks = NO_HOOKS) -> None:
        self.juror = juror
        self.threshold = threshold
        self.name = f"reviewer:local:{juror.name}@{juror.version}"
        self._hooks = hooks
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-reviewer")

    async def review(self, case: Case) -> Outcome:
        if case.tasks:
            tasks = [q.task for q in case.tasks]
            return Forward(self.name, f"one label set only; the case asks tasks {tasks}")
        loop = asyncio.get_running_loop()
        probs = await loop.run_in_executor(self._executor, self.juror.predict_proba, [case.text])
        row = np.asarray(probs)[0]
        best = int(row.argmax())
        confidence = float(row[best])
        self._hooks.called(self.name, "ok")
        if confidence >= self.threshold:
            return Verdict(self.juror.labels[best], confidence, self.name)
        return Forward(self.name, f"top probability {confidence:.2f} < {self.threshold:.2f}")

    def close(self) -> None:
        self._executor.shutdown(wait=True)
