"""Kafka security: every role over real TLS and mTLS, clear refusals at start, SASL settings.

The embedded Tansu broker cannot serve TLS, so it runs behind the package's TLS proxy
(``jurystream broker --tls`` does the same), with a CA and certificates made for the test.
SASL is tested at the client-configuration level: Tansu 0.6.0's SASL user creation fails
(see the README, "Secured Kafka").
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from jurystream.config import BrokerSettings, Settings, Topic
from jurystream.models.serving.registry import Registry
from jurystream.stream.broker import EmbeddedBroker
from jurystream.stream.certs import issue, make_ca
from jurystream.stream.client import Record, produce, read_records
from jurystream.stream.feed import generate_posts
from jurystream.stream.preflight import check_kafka
from jurystream.stream.processes import RoleGroup
from jurystream.stream.security import KafkaConnection, KafkaSecurityError, kafka_connection
from jurystream.stream.tls_proxy import TlsBroker, TlsProxy, server_context

SECRET = "s3cr3t-pa55"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    with TlsBroker(tmp_path_factory.mktemp("tls")) as broker:
        yield broker


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    with TlsBroker(tmp_path_factory.mktemp("mtls"), mtls=True) as broker:
        yield broker


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


async def committed(kafka: KafkaConnection, group: str, topic: str, partitions: int) -> int:
    """Records the consumer group has committed on ``topic``, read over the secured listener."""
    consumer = AIOKafkaConsumer(**kafka.client_kwargs(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offsets = [await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        await consumer.stop()
    return sum(o or 0 for o in offsets)


@pytest.mark.parametrize("mode", ["tls", "mtls"])
def test_every_role_works_over_tls(
    mode: str, request: pytest.FixtureRequest, sklearn_jurors: list[Path], tmp_path: Path
) -> None:
    broker: TlsBroker = request.getfixturevalue(mode)
    kafka = broker.connection
    registry = Registry(tmp_path / "registry")
    for directory in sklearn_jurors:
        registry.publish(directory)
    env = {**broker.env(), "JURYSTREAM_LOG_LEVEL": "INFO", "JURYSTREAM_REGISTRY": registry.url}
    roles = RoleGroup(broker.bootstrap, tmp_path, env=env)
    try:
        roles.start("worker", *[a for j in sklearn_jurors for a in ("--juror", str(j))])
        roles.start("reviewer")  # the oracle tier: labels escalations from the posts' gold
        roles.start("monitor")
        roles.start("trainer", "--every-samples", "100000")  # consumes; no round in this test

        items = list(generate_posts(60, seed=3, id_prefix=mode))
        asyncio.run(produce(kafka, roles.topic(Topic.POSTS), [(i.key, i.value) for i in items]))
        ids = {i.key.decode() for i in items}

        def all_labeled(records: list[Record]) -> bool:
            return ids <= {r.key for r in records}

        labels = asyncio.run(
            read_records(kafka, [roles.topic(Topic.LABELS)], until=all_labeled, timeout_s=60)
        )
        assert ids <= {r.key for r in labels}, roles.logs()
        sources = {r.value["source"] for r in labels}
        assert sources == {"jury", "oracle"}, sources  # the worker's and the reviewer's

        app_id = roles.env["JURYSTREAM_APP_ID"]
        partitions = Settings().topics.partitions

        def consumed(role: str, topic: str) -> Callable[[], bool]:
            group, name = f"{app_id}-{role}", roles.topic(topic)
            return lambda: asyncio.run(committed(kafka, group, name, partitions)) > 0

        wait_for(consumed("monitor", Topic.LABELS), 30, "the monitor to consume labels")
        wait_for(consumed("trainer", Topic.HARD_SAMPLES), 30, "the trainer to consume hard samples")
        assert all(role.alive for role in roles.started), roles.logs()
    finally:
        roles.stop_all()


def start_role(broker_settings: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`jurystream monitor` with these broker settings; it must give up on its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JURYSTREAM_BROKER__")}
    env |= {f"JURYSTREAM_BROKER__{k.upper()}": v for k, v in broker_settings.items()}
    env["JURYSTREAM_DATA_DIR"] = str(tmp_path / "var")
    return subprocess.run(
        [sys.executable, "-m", "jurystream.cli", "monitor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a hang fails the test instead of blocking it
    )


def test_an_unknown_ca_fails_at_start(tls: TlsBroker, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other", "other-ca")
    done = start_role({**tls.settings(), "ssl_cafile": str(other.cert)}, tmp_path)
    assert done.returncode != 0
    assert "certificate is not trusted" in done.stderr and "broker.ssl_cafile" in done.stderr


def test_a_wrong_hostname_fails_at_start(tls: TlsBroker, tmp_path: Path) -> None:
    assert tls.pki is not None
    elsewhere = issue(tls.pki.ca, tmp_path, "elsewhere", hosts=["kafka.invalid"])
    upstream = ("127.0.0.1", int(tls.bootstrap.rsplit(":", 1)[1]))
    with TlsProxy(server_context(elsewhere), upstream) as proxy:
        done = start_role({**tls.settings(), "bootstrap": proxy.address}, tmp_path)
    assert done.returncode != 0
    assert "does not name 127.0.0.1" in done.stderr, done.stderr
    assert "ssl_check_hostname" in done.stderr


def test_a_plaintext_client_on_a_tls_listener_fails_at_start(
    tls: TlsBroker, tmp_path: Path
) -> None:
    done = start_role({"bootstrap": tls.bootstrap}, tmp_path)
    assert done.returncode != 0
    assert "expects TLS" in done.stderr and "security_protocol=SSL" in done.stderr, done.stderr


def test_mtls_without_a_client_certificate_fails_at_start(mtls: TlsBroker, tmp_path: Path) -> None:
    plain_tls = {
        k: v for k, v in mtls.settings().items() if k not in ("ssl_certfile", "ssl_keyfile")
    }
    done = start_role(plain_tls, tmp_path)
    assert done.returncode != 0
    assert "client certificate" in done.stderr and "ssl_certfile" in done.stderr, done.stderr


def test_a_refused_sasl_login_fails_at_start(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tansu without --authentication offers no SASL mechanism: a refusal, as a bad login is."""
    monkeypatch.setenv("JURYSTREAM_KAFKA_PASSWORD", SECRET)
    sasl = {"bootstrap": broker.bootstrap, "security_protocol": "SASL_PLAINTEXT"}
    done = start_role({**sasl, "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "u"}, tmp_path)
    assert done.returncode != 0
    assert "did not accept the session" in done.stderr, done.stderr
    assert "broker.sasl_mechanism, broker.sasl_username and the password" in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_broker_tls_command_serves_mtls_and_prints_the_client_settings(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jurystream.cli", "broker", "--mtls", "--cert-dir", str(certs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JURYSTREAM_DATA_DIR": str(tmp_path / "var")},
    )
    try:
        assert proc.stdout is not None
        bootstrap = proc.stdout.readline().strip()
        settings = {
            "bootstrap": bootstrap,
            "security_protocol": "SSL",
            "ssl_cafile": str(certs / "ca.pem"),
            "ssl_certfile": str(certs / "client.pem"),
            "ssl_keyfile": str(certs / "client-key.pem"),
        }
        kafka = kafka_connection(BrokerSettings.model_validate(settings))
        topics = asyncio.run(read_topics(kafka))
        assert "jurystream.posts" in topics  # the command created them, reached over mTLS
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    for name, value in settings.items():
        assert f"export JURYSTREAM_BROKER__{name.upper()}={value}" in err


async def read_topics(kafka: KafkaConnection) -> set[str]:
    consumer = AIOKafkaConsumer(**kafka.client_kwargs())
    await consumer.start()
    try:
        return await consumer.topics()
    finally:
        await consumer.stop()


def test_an_encrypted_client_key_opens_with_its_password_from_a_variable(
    mtls: TlsBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert mtls.pki is not None
    encrypted = tmp_path / "client-key.enc.pem"
    key = str(mtls.pki.client.key)
    encrypt = ["openssl", "pkey", "-in", key, "-aes256", "-passout", f"pass:{SECRET}"]
    subprocess.run([*encrypt, "-out", str(encrypted)], check=True)
    settings = BrokerSettings.model_validate({**mtls.settings(), "ssl_keyfile": str(encrypted)})
    monkeypatch.delenv("JURYSTREAM_KAFKA_KEY_PASSWORD", raising=False)
    with pytest.raises(KafkaSecurityError, match="JURYSTREAM_KAFKA_KEY_PASSWORD"):
        kafka_connection(settings)
    monkeypatch.setenv("JURYSTREAM_KAFKA_KEY_PASSWORD", SECRET)
    asyncio.run(check_kafka(kafka_connection(settings)))  # mTLS with the decrypted key


SASL = {
    "bootstrap": "kafka.example.com:9096",
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "labeler",
}


def test_sasl_password_from_a_variable_reaches_the_clients_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("JURYSTREAM_KAFKA_PASSWORD", SECRET)  # the default variable: not a typo
    monkeypatch.setenv("JURYSTREAM_BROKER__SECURITY_PROTOCOL", "SASL_SSL")
    settings = Settings(broker=BrokerSettings.model_validate(SASL))
    with caplog.at_level(logging.DEBUG):
        kafka = kafka_connection(settings)
    kwargs = kafka.client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "labeler"
    assert kwargs["sasl_plain_password"] == SECRET
    assert kwargs["ssl_context"].check_hostname  # on unless opted out
    credentials = kafka.faust_credentials()
    assert credentials is not None
    assert credentials.protocol.value == "SASL_SSL"  # type: ignore[attr-defined]
    assert credentials.mechanism.value == "SCRAM-SHA-512"  # type: ignore[attr-defined]
    shown = [
        repr(kafka),
        kafka.describe(),
        repr(credentials),
        settings.model_dump_json(),
        caplog.text,
    ]
    assert not [s for s in shown if SECRET in s]


def test_sasl_password_from_a_file_and_the_hostname_opt_out(tmp_path: Path) -> None:
    secret_file = tmp_path / "kafka-password"
    secret_file.write_text(SECRET + "\n")
    broker = BrokerSettings.model_validate(
        {
            **SASL,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_password_file": str(secret_file),
            "sasl_password_env": "NO_SUCH_VARIABLE",
        }
    )
    kwargs = kafka_connection(broker).client_kwargs()
    assert kwargs["sasl_plain_password"] == SECRET and "ssl_context" not in kwargs
    no_check = BrokerSettings(bootstrap="b:9093", security_protocol="SSL", ssl_check_hostname=False)
    context = kafka_connection(no_check).client_kwargs()["ssl_context"]
    assert not context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {**SASL, "sasl_password_env": "NO_SUCH_VARIABLE"},
            "needs the SASL password: set $NO_SUCH_VARIABLE",
        ),
        ({**SASL, "sasl_username": None}, "needs broker.sasl_username"),
        (
            {"bootstrap": "b:9092", "ssl_cafile": "/etc/hostname"},
            "broker.ssl_cafile set, but broker.security_protocol is PLAINTEXT",
        ),
        (
            {"bootstrap": "b:9093", "security_protocol": "SSL", "ssl_certfile": "/etc/hostname"},
            "needs both broker.ssl_certfile and broker.ssl_keyfile",
        ),
        (
            {"bootstrap": "b:9093", "security_protocol": "SSL", "ssl_cafile": "/no/ca.pem"},
            "broker.ssl_cafile /no/ca.pem is not a file",
        ),
    ],
)
def test_unusable_security_settings_say_what_to_fix(
    settings: dict[str, str | None], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JURYSTREAM_KAFKA_PASSWORD", raising=False)
    with pytest.raises(KafkaSecurityError, match=message.replace("$", r"\$")):
        kafka_connection(BrokerSettings.model_validate(settings))


def test_a_named_secret_variable_is_not_an_unknown_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JURYSTREAM_BROKER__SASL_PASSWORD_ENV", "JURYSTREAM_MY_KAFKA_SECRET")
    monkeypatch.setenv("JURYSTREAM_MY_KAFKA_SECRET", SECRET)
    assert Settings().broker.sasl_password_env == "JURYSTREAM_MY_KAFKA_SECRET"
