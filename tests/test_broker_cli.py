"""`jurystream broker`: starts Tansu, creates topics, prints the address, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jurystream.stream.broker import BrokerError, EmbeddedBroker, ensure_topics


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jurystream.cli", "broker", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JURYSTREAM_TOPICS__PARTITIONS": "3", **(env or {})},
    )


def test_broker_command_creates_topics_and_stops_on_sigterm() -> None:
    proc = start_cli()
    assert proc.stdout is not None
    bootstrap = proc.stdout.readline().strip()
    assert bootstrap.startswith("127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
    created = asyncio.run(ensure_topics(bootstrap, ["jurystream.posts", "extra"], 3))
    assert created == ["extra"]  # the configured topics were already there
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    port = int(bootstrap.rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "Tansu still listening after stop"


def test_port_taken_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match="already taken"):
            EmbeddedBroker(port=port).start()
        proc = start_cli("--port", str(port))
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        assert "already taken" in err


def test_missing_binary_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = start_cli(env={"JURYSTREAM_TANSU_BIN": str(tmp_path / "nope")})
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "missing or not executable" in err


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for init to reap it counts: it runs nothing)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_roles_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    """A demo, bench or test killed by SIGKILL leaves no role (or broker) running unowned."""
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from jurystream.stream.processes import RoleProcess\n"
        "role = RoleProcess(['broker', '--port', '0'], dict(os.environ), Path(sys.argv[1]))\n"
        "print(role.start().proc.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    log = tmp_path / "broker.log"
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(log)], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 60
    while "127.0.0.1:" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)  # the broker is up: Tansu runs as its child in turn
    port = int(log.read_text().split("127.0.0.1:", 1)[1].split()[0])
    parent.kill()
    parent.wait()
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _gone(child), log.read_text()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "Tansu still listening"
