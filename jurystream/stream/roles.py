"""Start-up of the long-running roles: load what they need, then hand over to faust."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from faust.worker import Worker

from jurystream.config import JurySettings, Settings
from jurystream.exporters.metrics import WorkerMetrics
from jurystream.models.rules.labelsets import align_juror
from jurystream.models.serving.juror import Juror, ModelLoadError, load_juror
from jurystream.models.serving.jury import Jury
from jurystream.models.serving.registry import Registry, RegistryError
from jurystream.models.serving.tasks import TaskJuries, for_task
from jurystream.models.serving.thresholds_file import policy_threshold
from jurystream.stream.role import create_topics
from jurystream.stream.security import KafkaConnection, kafka_connection
from jurystream.stream.worker import build_worker_app

log = logging.getLogger(__name__)


def load_juror_ref(ref: str, settings: Settings) -> Juror:
    """A juror reference is a directory, or a name whose serving version the registry holds.

    A registry name loads through ``Registry.load``: if the serving version went bad on disk,
    the newest earlier version that verifies serves instead of the worker refusing to start.
    """
    path = Path(ref)
    if path.is_dir():
        return load_juror(path, threads=settings.jury.threads)
    try:
        return Registry(settings.registry_url).load(ref, threads=settings.jury.threads)
    except RegistryError as exc:
        raise ModelLoadError(
            f"juror {ref!r} is neither a juror directory nor a juror of the registry "
            f"{settings.registry_url} ({exc}); see `jurystream models list`"
        ) from exc


def load_jury(settings: Settings) -> Jury:
    if not settings.jury.jurors:
        raise ModelLoadError(
            "no jurors configured: pass --juror DIR (repeatable) or set JURYSTREAM_JURY__JURORS"
        )
    jurors: list[Juror] = [load_juror_ref(ref, settings) for ref in settings.jury.jurors]
    threshold = settings.jury.threshold
    if settings.jury.thresholds_file is not None:
        # Calibrated by `jurystream models eval --calibrate`: the policy's threshold for the
        # target escalation rate; a policy the file does not cover keeps jury.threshold.
        threshold = policy_threshold(settings.jury.thresholds_file, settings.jury.policy, threshold)
        log.warning(
            "%s threshold %.3f from %s",
            settings.jury.policy,
            threshold,
            settings.jury.thresholds_file,
        )
    return Jury(
        tuple(jurors),
        policy=settings.jury.policy,
        threshold=threshold,
        weights=settings.jury.weights,
    )


def load_task_juries(settings: Settings) -> TaskJuries:
    """One jury per task of ``settings.tasks``; a juror named in several tasks is loaded once
    (a multi-head juror then serves each task from its head)."""
    defaults = JurySettings.model_fields
    unused = [
        f"jury.{name}"
        for name in ("policy", "threshold")
        if getattr(settings.jury, name) != defaults[name].default
    ]
    if unused:
        log.warning(
            "%s unused with several tasks: each task has its own (tasks.<name>.policy, "
            "tasks.<name>.threshold)",
            ", ".join(unused),
        )
    loaded: dict[str, Juror] = {}
    juries = {}
    for task, spec in settings.tasks.items():
        jurors = []
        for ref in spec.jurors:
            instead = f"or remove {ref!r} from tasks.{task}.jurors"
            if ref not in loaded:
                try:
                    loaded[ref] = load_juror_ref(ref, settings)
                except ModelLoadError as exc:
                    raise ModelLoadError(f"task {task}: {exc}; {instead}") from exc
            try:
                juror = for_task(loaded[ref], task)
            except ValueError as exc:
                raise ModelLoadError(f"task {task}: {exc}, {instead}") from exc
            # Refused at start rather than serving labels nobody asked for; the jury votes in
            # the order of the task's labels.
            if set(juror.labels) != set(spec.labels):
                raise ModelLoadError(
                    f"task {task}: juror {ref!r} answers {list(juror.labels)}, but the task's "
                    f"labels are {spec.labels}: set tasks.{task}.labels to the juror's labels "
                    f"if they mean the same, {instead} and name a juror trained on the task's"
                )
            jurors.append(align_juror(juror, spec.labels))
        juries[task] = Jury(tuple(jurors), spec.policy, spec.threshold, spec.weights)
    return TaskJuries(juries)


def _prepare(settings: Settings) -> KafkaConnection:
    kafka = kafka_connection(settings)
    asyncio.run(create_topics(settings, kafka))
    return kafka


def run_faust(app: object, settings: Settings) -> int:
    """Run a faust app in the foreground until SIGTERM/SIGINT; faust commits on shutdown."""
    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True)  # type: ignore[arg-type]
    # At WARNING and above faust's start-up spinner sets the root logger to DEBUG so that every
    # record spins it: each debug line of aiokafka and faust then builds a LogRecord (with a
    # stack walk) that no handler prints. py-spy under `bench perf` found this on the worker's
    # hot path (aiokafka's per-request debug lines), so there is no spinner: roles log to files.
    worker.spinner = None
    worker.execute_from_commandline()
    return 0


def run_worker(settings: Settings) -> int:
    kafka = _prepare(settings)
    jury = load_task_juries(settings) if settings.tasks else load_jury(settings)
    metrics = WorkerMetrics(tasks=settings.tasks)
    metrics.serve(settings.metrics.port, settings.metrics.host)
    app, labeling = build_worker_app(settings, kafka, jury, metrics)
    log.warning("worker: jurors %s", jury.versions)
    try:
        return run_faust(app, settings)
    finally:
        labeling.close()
