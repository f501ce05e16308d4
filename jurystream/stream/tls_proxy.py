"""A TLS-terminating proxy in front of the embedded broker, so TLS and mTLS can be tried locally.

Tansu 0.6.0 does not serve TLS itself (its ``--cert`` and ``--key`` flags refuse each other;
with ``--cert`` alone it still listens in plaintext). The proxy accepts TLS on one loopback
port and pipes the decrypted bytes to Tansu's plaintext port; Tansu advertises the proxy's
address, so every connection a client makes after the bootstrap also goes through TLS.
It runs its own event loop in a thread: the CLI and the tests drive it synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from pathlib import Path

from jurystream.config import BrokerSettings
from jurystream.stream.broker import BrokerError, EmbeddedBroker, free_port
from jurystream.stream.certs import KeyPair, TestPki, make_test_pki
from jurystream.stream.lifecycle import Service
from jurystream.stream.security import KafkaConnection, kafka_connection

_CHUNK = 64 * 1024


def server_context(server: KeyPair, client_ca: Path | None = None) -> ssl.SSLContext:
    """The proxy's TLS settings: its certificate, and (mTLS) the CA client certificates need."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass  # either side went away; closing the other is all that is left to do
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class TlsProxy(Service):
    """Accepts TLS on ``host:port`` and forwards each connection to ``upstream`` in plaintext."""

    def __init__(
        self,
        context: ssl.SSLContext,
        upstream: tuple[str, int],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.context = context
        self.upstream = upstream
        self.host = host
        self.port = port or free_port(host)
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()  # open connections, closed on stop

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            broker_r, broker_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        self._writers |= {client_w, broker_w}
        try:
            await asyncio.gather(_pipe(client_r, broker_w), _pipe(broker_r, client_w))
        finally:
            self._writers -= {client_w, broker_w}

    def start(self) -> TlsProxy:
        # Bound here, not in the thread: a taken port is an error the caller sees at once.
        listener = socket.create_server((self.host, self.port))
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            server = self._loop.run_until_complete(
                asyncio.start_server(self._handle, sock=listener, ssl=self.context)
            )
            started.set()
            try:
                self._loop.run_forever()
            finally:
                server.close()
                for writer in list(self._writers):  # newer Pythons wait for them to close
                    writer.close()
                with contextlib.suppress(TimeoutError):
                    self._loop.run_until_complete(asyncio.wait_for(server.wait_closed(), 5))

        # A failed handshake (a client that distrusts us, a plaintext client) is the client's
        # problem to report; the proxy stays quiet about it.
        self._loop.set_exception_handler(lambda loop, context: None)
        self._thread = threading.Thread(target=run, name="tls-proxy", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError(f"the TLS proxy did not start on {self.address}")
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._thread = None
            self._loop.close()


class TlsBroker(Service):
    """The embedded broker behind the TLS proxy, with a CA and certificates made in ``cert_dir``.

    ``mtls``: the proxy also requires a client certificate signed by the same CA.
    """

    def __init__(
        self, cert_dir: Path, mtls: bool = False, port: int = 0, host: str = "127.0.0.1"
    ) -> None:
        self.cert_dir = cert_dir
        self.mtls = mtls
        self.host = host
        self.port = port
        self.pki: TestPki | None = None
        self._proxy: TlsProxy | None = None
        self._broker: EmbeddedBroker | None = None

    def settings(self) -> dict[str, str]:
        """The broker settings a client needs, as the settings' own names."""
        assert self.pki is not None and self._proxy is not None, "start() first"
        out = {
            "bootstrap": self._proxy.address,
            "security_protocol": "SSL",
            "ssl_cafile": str(self.pki.ca.cert),
        }
        if self.mtls:
            out["ssl_certfile"] = str(self.pki.client.cert)
            out["ssl_keyfile"] = str(self.pki.client.key)
        return out

    def env(self) -> dict[str, str]:
        """The settings as JURYSTREAM_BROKER__* variables, for roles run as processes."""
        return {f"JURYSTREAM_BROKER__{k.upper()}": v for k, v in self.settings().items()}

    @property
    def connection(self) -> KafkaConnection:
        return kafka_connection(BrokerSettings.model_validate(self.settings()))

    @property
    def bootstrap(self) -> str:
        assert self._proxy is not None, "start() first"
        return self._proxy.address

    def start(self) -> KafkaConnection:
        self.pki = make_test_pki(self.cert_dir, hosts=("localhost", self.host))
        broker = EmbeddedBroker(host=self.host)
        proxy = TlsProxy(
            server_context(self.pki.server, self.pki.ca.cert if self.mtls else None),
            (self.host, broker.port),
            self.host,
            self.port,
        )
        try:
            self._proxy = proxy.start()
        except OSError as exc:
            raise BrokerError(
                f"cannot listen on {proxy.address} ({exc.strerror}): choose another port with "
                "--port (or 0 for a free one), or stop what is listening there"
            ) from exc
        try:
            broker.start(advertise=self.connection)
        except BaseException:
            self.stop()
            raise
        self._broker = broker
        return self.connection

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()
            self._broker = None
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
