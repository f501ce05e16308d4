"""/livez and /readyz: refreshed by the role's own event loop, served next to /metrics."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from jurystream.exporters.health import Health, beating
from jurystream.exporters.metrics import MonitorMetrics
from jurystream.stream.broker import free_port
from jurystream.stream.processes import RoleGroup


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return 0, str(exc)


def wait_for(port: int, path: str, status: int, timeout_s: float) -> tuple[int, str]:
    deadline = time.monotonic() + timeout_s
    got = get(port, path)
    while got[0] != status and time.monotonic() < deadline:
        time.sleep(0.2)
        got = get(port, path)
    return got


def test_health_states() -> None:
    now = [0.0]
    health = Health(stale_after_s=5.0, clock=lambda: now[0])
    assert health.live()[0] is False  # no beat yet: a startup probe waits
    health.beat()
    assert health.live() == (True, "ok")
    assert health.ready()[0] is False  # live but not consuming
    health.consuming(assigned=0)
    assert "no partitions" in health.ready()[1]
    health.consuming(assigned=2)
    assert health.ready() == (True, "ok: 2 partitions")
    now[0] = 6.0
    assert health.live()[0] is False and health.ready()[0] is False
    assert "silent for 6.0s" in health.live()[1]


def test_a_hung_event_loop_fails_livez_within_seconds() -> None:
    metrics = MonitorMetrics()
    metrics.health.stale_after_s = 1.0
    port = free_port()
    metrics.serve(port, "127.0.0.1")
    hang = threading.Event()

    async def role() -> None:
        while not hang.is_set():
            metrics.health.consuming(assigned=1)
            await asyncio.sleep(0.05)
        time.sleep(4.0)  # a blocking call: the loop is stuck, the HTTP thread is not

    thread = threading.Thread(target=lambda: asyncio.run(beating(metrics.health, role())))
    thread.start()
    try:
        assert wait_for(port, "/livez", 200, 10)[0] == 200
        assert wait_for(port, "/readyz", 200, 10)[0] == 200
        hang.set()
        started = time.monotonic()
        status, body = wait_for(port, "/livez", 503, 3.5)
        assert status == 503 and "hung" in body
        assert time.monotonic() - started < 3.5
        assert get(port, "/readyz")[0] == 503
        status, body = get(port, "/metrics")
        assert status == 200 and "jurystream_role_info" in body  # the one registry, same port
    finally:
        thread.join()


@pytest.mark.parametrize("role_name", ["reviewer", "monitor"])
def test_a_role_process_is_live_then_ready_once_assigned(roles: RoleGroup, role_name: str) -> None:
    port = free_port()
    role = roles.start(
        role_name,
        env={
            "JURYSTREAM_METRICS__PORT": str(port),
            "JURYSTREAM_METRICS__HOST": "127.0.0.1",
            "JURYSTREAM_REVIEWER__CHAIN": '["oracle"]',
        },
    )
    assert wait_for(port, "/livez", 200, 60)[0] == 200, roles.logs()
    status, body = wait_for(port, "/readyz", 200, 60)
    assert status == 200 and "partitions" in body, roles.logs()
    assert role.alive


def test_a_worker_process_beats_from_faust_and_is_ready_once_assigned(
    roles: RoleGroup, sklearn_jurors: list[Path]
) -> None:
    port = free_port()
    roles.start(
        "worker",
        *[a for j in sklearn_jurors for a in ("--juror", str(j))],
        env={"JURYSTREAM_METRICS__PORT": str(port), "JURYSTREAM_METRICS__HOST": "127.0.0.1"},
    )
    assert wait_for(port, "/livez", 200, 60)[0] == 200, roles.logs()
    status, body = wait_for(port, "/readyz", 200, 60)
    assert status == 200 and "partitions" in body, roles.logs()
    # faust's own directory is under data_dir: the image's working directory is read-only.
    assert (roles.workdir / "var" / "faust").is_dir()
