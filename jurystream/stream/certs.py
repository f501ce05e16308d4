"""A throwaway CA with server and client certificates, for trying and testing TLS locally.

Made with the ``openssl`` command (on every Debian and macOS), so no cryptography package is
needed. Keys are unencrypted EC P-256 keys: these certificates guard a loopback broker, never
production.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

DAYS = "30"


class CertError(RuntimeError):
    """The certificates could not be made; the message says what to install."""


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise CertError(
            "making test certificates needs the openssl command: apt-get install openssl"
        )
    done = subprocess.run([binary, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CertError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )
    path.chmod(0o600)


def make_ca(directory: Path, name: str = "ca") -> KeyPair:
    """A self-signed CA certificate and its key, as ``<name>.pem`` and ``<name>-key.pem``."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}-key.pem")
    _key(pair.key)
    _openssl(
        "req", "-x509", "-new", "-key", str(pair.key), "-out", str(pair.cert), "-days", DAYS,
        "-subj", f"/CN=jurystream test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def issue(ca: KeyPair, directory: Path, name: str, hosts: Sequence[str] = ()) -> KeyPair:
    """A certificate signed by ``ca``: a server's if ``hosts`` (its DNS names and IPs), else a
    client's (for mTLS)."""
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}-key.pem")
    _key(pair.key)
    if hosts:
        names = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
        extensions = f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n"
    else:
        extensions = "extendedKeyUsage=clientAuth\n"
    extensions += "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text(extensions)
        _openssl("req", "-new", "-key", str(pair.key), "-out", str(csr), "-subj", f"/CN={name}")
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
            "-CAcreateserial", "-out", str(pair.cert), "-days", DAYS, "-extfile", str(ext),
        )  # fmt: skip
    return pair


def _is_ip(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class TestPki:
    """What a local TLS broker and its clients need."""

    __test__ = False  # not a pytest test class

    ca: KeyPair
    server: KeyPair
    client: KeyPair


def make_test_pki(directory: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> TestPki:
    ca = make_ca(directory)
    return TestPki(ca, issue(ca, directory, "server", hosts), issue(ca, directory, "client"))
