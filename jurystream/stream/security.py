"""How every Kafka client of the package connects: the address plus TLS and SASL, from settings.

One place turns ``BrokerSettings`` into aiokafka keyword arguments and faust broker
credentials, so the admin client, the producers, the consumers and the faust app cannot
disagree about security. Secrets are read here, from the variable or file a setting names, and
held as ``SecretStr``: settings only ever hold where a secret is, so printing them is safe.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from jurystream.config import BrokerSettings, SaslMechanism, SecurityProtocol, Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


class KafkaSecurityError(ValueError):
    """Security settings that cannot make a connection; the message names the setting to fix."""


@dataclass(frozen=True)
class KafkaConnection:
    """Where Kafka is and how to talk to it, secrets resolved; what every client is built from."""

    bootstrap: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None  # its repr is masked: safe in logs and tracebacks

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def describe(self) -> str:
        """For messages: the address and protocol, never a secret."""
        who = f" ({self.sasl_mechanism} as {self.sasl_username})" if self.uses_sasl else ""
        return f"{self.bootstrap} over {self.security_protocol}{who}"

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.ssl_context is not None:
            kwargs["ssl_context"] = self.ssl_context
        if self.uses_sasl:
            assert self.sasl_password is not None  # kafka_connection guarantees it
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return kwargs

    def faust_credentials(self) -> CredentialsT | None:
        """The faust app's ``broker_credentials``: the same security as ``client_kwargs``."""
        import faust  # the faust app alone needs it; plain clients stay light

        if self.uses_sasl:
            assert self.sasl_password is not None
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value(),
                ssl_context=self.ssl_context,  # set: SASL_SSL; None: SASL_PLAINTEXT
                mechanism=self.sasl_mechanism,
            )
        if self.ssl_context is not None:
            return faust.SSLCredentials(self.ssl_context)
        return None


# A bare address is a plaintext connection (the embedded broker, tests, benchmarks).
Kafka = KafkaConnection | str


def as_connection(kafka: Kafka) -> KafkaConnection:
    return KafkaConnection(kafka) if isinstance(kafka, str) else kafka


def client_kwargs(kafka: Kafka) -> dict[str, Any]:
    """aiokafka keyword arguments for a connection or a bare (plaintext) address."""
    return as_connection(kafka).client_kwargs()


def _secret(env: str, file: Path | None, what: str, file_setting: str) -> SecretStr | None:
    """A secret from ``file`` if set, else from the variable ``env``; None if neither has one."""
    if file is not None:
        try:
            return SecretStr(file.read_text(encoding="utf-8").rstrip("\r\n"))
        except OSError as exc:
            raise KafkaSecurityError(
                f"cannot read the {what} from {file} (broker.{file_setting}): {exc.strerror}"
            ) from exc
    value = os.environ.get(env)
    return SecretStr(value) if value else None


def _ssl_context(broker: BrokerSettings) -> ssl.SSLContext:
    if (broker.ssl_certfile is None) != (broker.ssl_keyfile is None):
        raise KafkaSecurityError(
            "a client certificate needs both broker.ssl_certfile and broker.ssl_keyfile"
        )
    for setting in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(broker, setting)
        if path is not None and not Path(path).is_file():
            raise KafkaSecurityError(f"broker.{setting} {path} is not a file")
    key_password = _secret(
        broker.ssl_key_password_env,
        broker.ssl_key_password_file,
        "private key password",
        "ssl_key_password_file",
    )
    try:
        context = create_ssl_context(
            cafile=broker.ssl_cafile,
            certfile=broker.ssl_certfile,
            keyfile=broker.ssl_keyfile,
            # A callable: OpenSSL must never prompt on the terminal of a background role.
            password=lambda: key_password.get_secret_value() if key_password else "",
        )
    except ssl.SSLError as exc:
        raise KafkaSecurityError(
            f"cannot load the TLS files ({exc.reason or exc}): check that broker.ssl_cafile "
            "holds PEM certificates, that broker.ssl_certfile and broker.ssl_keyfile belong "
            f"together, and the key's password (${broker.ssl_key_password_env} or "
            "broker.ssl_key_password_file) if the key is encrypted"
        ) from exc
    if not broker.ssl_check_hostname:
        context.check_hostname = False  # the certificate is still verified against the CA
    return context


def kafka_connection(settings: Settings | BrokerSettings) -> KafkaConnection:
    """The connection the settings describe, secrets read now; KafkaSecurityError if unusable."""
    broker = settings.broker if isinstance(settings, Settings) else settings
    if not broker.bootstrap:
        raise KafkaSecurityError(
            "no Kafka address: set broker.bootstrap (JURYSTREAM_BROKER__BOOTSTRAP) or pass "
            "--bootstrap HOST:PORT; `jurystream broker` starts one"
        )
    protocol = broker.security_protocol
    tls = protocol in ("SSL", "SASL_SSL")
    sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    stray = [
        s
        for s, used in (
            ("ssl_cafile", tls),
            ("ssl_certfile", tls),
            ("ssl_keyfile", tls),
            ("ssl_key_password_file", tls),
            ("sasl_username", sasl),
            ("sasl_password_file", sasl),
        )
        if getattr(broker, s) is not None and not used
    ]
    if stray:  # a half-configured security setting is a mistake, not a preference
        raise KafkaSecurityError(
            f"broker.{', broker.'.join(stray)} set, but broker.security_protocol is {protocol}, "
            "which does not use it: set the protocol (SSL, SASL_SSL, SASL_PLAINTEXT) or "
            "remove the setting"
        )
    password = None
    if sasl:
        if not broker.sasl_username:
            raise KafkaSecurityError(f"{protocol} needs broker.sasl_username")
        password = _secret(
            broker.sasl_password_env,
            broker.sasl_password_file,
            "SASL password",
            "sasl_password_file",
        )
        if password is None:
            raise KafkaSecurityError(
                f"{protocol} needs the SASL password: set ${broker.sasl_password_env} (the "
                "variable broker.sasl_password_env names) or broker.sasl_password_file"
            )
    return KafkaConnection(
        bootstrap=broker.bootstrap,
        security_protocol=protocol,
        ssl_context=_ssl_context(broker) if tls else None,
        sasl_mechanism=broker.sasl_mechanism,
        sasl_username=broker.sasl_username if sasl else None,
        sasl_password=password,
    )
