"""Roles as child processes: how the demo runs them, and how tests run them like users do."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from jurystream.config import Topic, TopicSettings

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for children: on Linux they get SIGTERM when their parent dies, even by
    SIGKILL (a timed-out test, an OOM kill), instead of running on unowned. Found in CI: a demo
    killed by its test's timeout left its worker and monitor running."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class RoleProcess:
    """One `jurystream <role>` child process, its output kept in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RoleProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jurystream.cli", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the parent, which stops us in order
                preexec_fn=die_with_parent,
            )
        return self

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (faust commits and leaves the group), then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class RoleGroup:
    """Roles that share one broker and one isolated set of topics and consumer groups."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        prefix: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        run = uuid.uuid4().hex[:8]
        self.prefix = prefix if prefix is not None else f"t{run}."
        self.topics = TopicSettings(prefix=self.prefix)  # the roles' default names, prefixed
        self.env = {
            **os.environ,
            "JURYSTREAM_BROKER__BOOTSTRAP": bootstrap,
            "JURYSTREAM_TOPICS__PREFIX": self.prefix,
            "JURYSTREAM_APP_ID": f"jurystream-{run}",
            "JURYSTREAM_DATA_DIR": str(workdir / "var"),
            "HF_HUB_OFFLINE": "1",
            **(env or {}),
        }
        self.started: list[RoleProcess] = []

    def topic(self, topic: Topic) -> str:
        return self.topics.name(topic)

    def start(self, *args: str, env: dict[str, str] | None = None) -> RoleProcess:
        log_path = self.workdir / "logs" / f"{args[0]}-{len(self.started)}.log"
        role = RoleProcess(list(args), {**self.env, **(env or {})}, log_path).start()
        self.started.append(role)
        return role

    def stop_all(self) -> None:
        for role in reversed(self.started):
            role.stop()

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(f"--- {r.log_path.name}\n{r.log()[-tail:]}" for r in self.started)
