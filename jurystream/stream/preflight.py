"""The start-up check: reach Kafka as configured, or stop with what to check.

Without it a misconfigured role hangs in aiokafka's reconnect loop: an unknown CA, a wrong
hostname or a plaintext client on a TLS listener all look like "unable to bootstrap", repeated.
So every role first opens one connection itself, where the real cause is still visible (the
certificate check, the first bytes the listener sends back), then asks for metadata through
aiokafka with the full settings, which is where SASL credentials are tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct

from aiokafka.admin import AIOKafkaAdminClient

from jurystream.stream.security import KafkaConnection

# Kafka ApiVersions v0 (api key 18, correlation id 1, client id "jurystream"): the smallest
# request every Kafka version answers, sent before anything else on a connection.
_CLIENT_ID = b"jurystream"
_API_VERSIONS = struct.pack(">hhih", 18, 0, 1, len(_CLIENT_ID)) + _CLIENT_ID
_REQUEST = struct.pack(">i", len(_API_VERSIONS)) + _API_VERSIONS
_TLS_RECORD_TYPES = {0x15, 0x16}  # a TLS alert or handshake: the listener speaks TLS


class KafkaUnreachable(RuntimeError):
    """Kafka cannot be reached as configured; the message says what to check."""


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for part in bootstrap.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise KafkaUnreachable(f"broker.bootstrap {part!r} is not HOST:PORT")
        out.append((host.strip("[]"), int(port)))
    return out


def _certificate_problem(exc: ssl.SSLCertVerificationError, host: str) -> str:
    reason = exc.verify_message or str(exc)
    if "mismatch" in reason.lower():  # "Hostname mismatch", "IP address mismatch"
        return (
            f"the broker's certificate does not name {host} ({reason}): connect by a name the "
            "certificate lists in broker.bootstrap; for a test broker only, "
            "broker.ssl_check_hostname=false turns the name check off"
        )
    return (
        f"the broker's certificate is not trusted ({reason}): set broker.ssl_cafile to the CA "
        "certificate that signed it (PEM)"
    )


async def _probe(kafka: KafkaConnection, host: str, port: int, timeout_s: float) -> str | None:
    """None if the listener answers a Kafka request over our protocol, else what is wrong."""
    tls = kafka.ssl_context if kafka.uses_tls else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None),
            timeout_s,
        )
    except ssl.SSLCertVerificationError as exc:
        return _certificate_problem(exc, host)
    except ssl.SSLError as exc:
        return (
            f"the TLS handshake failed ({exc.reason or exc}): check that {host}:{port} is a "
            "TLS listener (else broker.security_protocol=PLAINTEXT or SASL_PLAINTEXT) and, if it "
            "requires client certificates, broker.ssl_certfile and broker.ssl_keyfile"
        )
    except (OSError, TimeoutError) as exc:
        return (
            f"nothing answers at {host}:{port} ({exc or 'timed out'}): check broker.bootstrap "
            "and that the broker runs and is reachable from here"
        )
    try:
        writer.write(_REQUEST)
        await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(8), timeout_s)
    except ssl.SSLError as exc:  # TLS 1.3 refuses a missing client certificate only now
        return (
            f"the broker refused the TLS session ({exc.reason or exc}): it probably requires a "
            "client certificate: set broker.ssl_certfile and broker.ssl_keyfile (mTLS)"
        )
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        if tls:  # a refused client certificate often arrives as a reset, not an alert
            return (
                f"the broker closed the TLS connection without a Kafka answer ({exc!r}): if it "
                "requires a client certificate (mTLS), set broker.ssl_certfile and "
                f"broker.ssl_keyfile to one its CA signed; else check that {host}:{port} is Kafka"
            )
        return (
            f"{host}:{port} gave no Kafka answer to a plaintext request: the listener probably "
            "expects TLS; set broker.security_protocol=SSL (or SASL_SSL) and broker.ssl_cafile"
        )
    finally:
        writer.close()
    if not tls and head[0] in _TLS_RECORD_TYPES:
        return (
            f"{host}:{port} answered in TLS: set broker.security_protocol=SSL (or SASL_SSL) and "
            "broker.ssl_cafile"
        )
    if struct.unpack(">i", head[4:8])[0] != 1:
        return f"{host}:{port} does not speak the Kafka protocol"
    return None


async def check_kafka(kafka: KafkaConnection, timeout_s: float = 10.0) -> None:
    """Raise KafkaUnreachable unless one bootstrap address works and metadata can be read."""
    problems = []
    for host, port in _addresses(kafka.bootstrap):
        problem = await _probe(kafka, host, port, timeout_s)
        if problem is None:
            break
        problems.append(problem)
    else:
        raise KafkaUnreachable(f"cannot connect to Kafka at {kafka.describe()}: {problems[0]}")
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(), request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
    except Exception as exc:  # aiokafka's errors for refused sessions vary by broker
        hint = (
            "check broker.sasl_mechanism, broker.sasl_username and the password"
            if kafka.uses_sasl
            else "check broker.security_protocol, and that the addresses the brokers advertise "
            "(their advertised.listeners) are reachable from here"
        )
        raise KafkaUnreachable(
            f"Kafka at {kafka.describe()} did not accept the session ({exc!r}): {hint}"
        ) from exc
    finally:
        with contextlib.suppress(Exception):  # after a failed start there may be nothing to close
            await admin.close()
