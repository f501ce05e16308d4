"""The ``model_updates`` topic: announcing a juror version, and following the announcements.

An announcement (``records.ModelUpdate``) says "serve this version of this juror now", keyed
by the juror's name::

    {"name": "minilm-0", "version": "4", "parent": "3", "kind": "onnx-transformer",
     "registry": "s3://bucket/registry", "location": "s3://bucket/registry/minilm-0/4",
     "sha256": "<sha256 of the version's manifest.json>", "metrics": {...}, "announced_at": ...}

The manifest lists the sha256 of every file of the version, so the manifest's own checksum
pins the whole version: a worker that fetched something else (a half-copied object store
upload, a version rewritten in place) refuses it. The trainer announces what it promoted, and
``jurystream models promote/rollback`` announce too, so a rollback reaches the workers the same
way a new version does.

Workers follow the topic with a consumer *without* a group: every worker must see every
announcement, not a share of them. At start a follower reads the topic's history and applies
only the last announcement per juror (what should serve now), then follows live. Loading runs
in a thread (the event loop keeps heartbeating), and only a fully loaded, verified juror is
handed to ``LabelingWorker.swap``, which installs it between batches.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from jurystream.config import Settings, Topic
from jurystream.exporters.metrics import WorkerMetrics
from jurystream.models.rules.labelsets import align_juror
from jurystream.models.serving.juror import MANIFEST, Juror, ModelLoadError, load_juror, sha256_file
from jurystream.models.serving.registry import Registry, RegistryError
from jurystream.stream.records import Invalid, ModelUpdate, ThresholdUpdate, Update, parse_update
from jurystream.stream.security import Kafka, client_kwargs

log = logging.getLogger(__name__)


def model_update(registry: Registry, name: str, version: str) -> ModelUpdate:
    """The announcement of ``name`` v``version`` as it is in the registry now."""
    manifest = registry.manifest(name, version)
    location = f"{registry.root}/{name}/{version}"
    digest = hashlib.sha256(registry.fs.cat_file(f"{location}/{MANIFEST}")).hexdigest()
    return ModelUpdate(
        name=name,
        version=version,
        parent=manifest.parent,
        kind=manifest.kind,
        registry=registry.url,
        location=f"{registry.url.rstrip('/')}/{name}/{version}",
        sha256=digest,
        metrics=manifest.extra.get("metrics", {}),
        announced_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


async def send_updates(producer: AIOKafkaProducer, topic: str, updates: Sequence[Update]) -> None:
    """Send announcements (juror versions or thresholds, each under its own key) and wait until
    the broker acknowledged every one."""
    sent = [await producer.send(topic, u.to_bytes(), key=u.key) for u in updates]
    await asyncio.gather(*sent)


async def announce(settings: Settings, kafka: Kafka, updates: Sequence[ModelUpdate]) -> None:
    """Announce with a producer of its own (the CLI's promote/rollback)."""
    producer = AIOKafkaProducer(**client_kwargs(kafka), acks="all", enable_idempotence=False)
    await producer.start()
    try:
        await send_updates(producer, settings.topics.name(Topic.MODEL_UPDATES), updates)
    finally:
        await producer.stop()


def load_update(update: ModelUpdate, threads: int = 1) -> Juror:
    """Fetch (if remote), check against the announced checksum, load and probe; blocking.

    Raises ModelLoadError for anything that must not serve: a missing version, a manifest
    that is not the announced one, a file that does not match the manifest, a model
    onnxruntime refuses, or a juror that is not the announced name and version.
    """
    try:
        directory = Registry(update.registry).local_dir(update.name, update.version)
    except (RegistryError, OSError) as exc:
        raise ModelLoadError(f"{update.name} v{update.version}: cannot fetch: {exc}") from exc
    actual = sha256_file(directory / MANIFEST) if (directory / MANIFEST).is_file() else "missing"
    if actual != update.sha256:
        raise ModelLoadError(
            f"{update.name} v{update.version}: manifest sha256 {actual[:12]}… is not the "
            f"announced {update.sha256[:12]}…"
        )
    juror = load_juror(directory, threads=threads)
    if (juror.name, juror.version) != (update.name, update.version):
        raise ModelLoadError(
            f"{directory} holds {juror.name} v{juror.version}, not {update.name} v{update.version}"
        )
    return juror


def latest_per_juror(updates: Sequence[ModelUpdate]) -> list[ModelUpdate]:
    """The last announcement of each juror, in the order of those last announcements."""
    last = {u.name: u for u in updates}
    return list(last.values())


def latest_thresholds(updates: Sequence[ThresholdUpdate]) -> list[ThresholdUpdate]:
    """The last threshold of each task and policy (its key), oldest first: with several tasks
    each task's jury has its own."""
    last = {u.key: u for u in sorted(updates, key=lambda u: u.seq)}
    return sorted(last.values(), key=lambda u: u.seq)


class ModelUpdateFollower:
    """Swaps announced versions into one worker's jury; a refused version changes nothing."""

    def __init__(
        self,
        settings: Settings,
        kafka: Kafka,
        versions: Mapping[str, str],
        labels: Sequence[str] | None,
        swap: Callable[[Juror], None],
        metrics: WorkerMetrics,
        set_threshold: Callable[[ThresholdUpdate], None] | None = None,
    ) -> None:
        self.topic = settings.topics.name(Topic.MODEL_UPDATES)
        self.kafka = kafka
        self.threads = settings.jury.threads
        self.serving = dict(versions)  # what this worker serves or has queued for the next batch
        self.labels = None if labels is None else tuple(labels)  # None: ``swap`` checks them
        self._swap = swap
        self._set_threshold = set_threshold
        self.metrics = metrics

    async def run(self) -> None:
        """Catch up on the topic's history, then follow it until cancelled."""
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.kafka), group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            await consumer.topics()  # loads the metadata partitions_for_topic reads
            parts = [
                TopicPartition(self.topic, p)
                for p in consumer.partitions_for_topic(self.topic) or ()
            ]
            if not parts:
                raise RuntimeError(f"topic {self.topic} does not exist; cannot follow updates")
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            history: list[Update] = []
            idle = 0  # empty polls in a row: an end offset the broker overstates must not hang us
            while idle < 5 and [tp for tp in parts if await consumer.position(tp) < end[tp]]:
                batch = await consumer.getmany(timeout_ms=200)
                idle = 0 if batch else idle + 1
                for messages in batch.values():
                    history.extend(u for m in messages if (u := self._parse(m.value)) is not None)
            for update in latest_per_juror([u for u in history if isinstance(u, ModelUpdate)]):
                await self.apply(update)
            for threshold in latest_thresholds(
                [u for u in history if isinstance(u, ThresholdUpdate)]
            ):
                await self.apply(threshold)
            while True:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for m in messages:
                        if (live := self._parse(m.value)) is not None:
                            await self.apply(live)
        finally:
            await consumer.stop()

    def _parse(self, value: bytes | None) -> Update | None:
        update = parse_update(value)
        if isinstance(update, Invalid):
            log.error("ignoring a malformed model update: %s", update.reason)
            return None
        return update

    async def apply(self, update: Update) -> bool:
        """Load and queue ``update`` if it is for one of our jurors and not what we serve; a
        threshold goes to the worker, which applies it with the versions it belongs to."""
        if isinstance(update, ThresholdUpdate):
            if self._set_threshold is None:
                return False
            self._set_threshold(update)
            return True
        current = self.serving.get(update.name)
        if current is None or current == update.version:
            return False
        try:
            juror = await asyncio.to_thread(load_update, update, self.threads)
            # Matched by name: the same labels in another order serve; other names do not.
            if self.labels is not None:
                what = f"{update.name} v{update.version} vs the jury"
                juror = align_juror(juror, self.labels, what)
            self._swap(juror)
        except Exception as exc:
            # The old version keeps serving: a bad announcement must never stop labeling.
            log.error(
                "juror %s v%s refused, v%s keeps serving: %s",
                update.name,
                update.version,
                current,
                exc,
            )
            self.metrics.swap_refused(update.name)
            return False
        self.serving[update.name] = update.version
        self.metrics.swapped(update.name)
        log.warning("juror %s v%s loaded; serving from the next batch", update.name, update.version)
        return True
