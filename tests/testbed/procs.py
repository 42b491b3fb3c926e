"""Processes the bench starts: free loopback ports, readiness waits, and clean stops."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service did not start or did not become ready; the message carries its log's tail."""


def free_port() -> int:
    """A port nobody listens on right now (the same small race envtest accepts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class ManagedProcess:
    """One child in its own process group, with its output in a log file.

    Every instance is remembered in `started` until stopped, so a service whose start fails
    half-way can have what it did start cleaned up (`stop_all_under`).
    """

    started: ClassVar[list[ManagedProcess]] = []

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        ManagedProcess.started.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, reason: str) -> ServiceError:
        return ServiceError(
            f"{self.name}: {reason}\n--- last lines of {self.log_path} ---\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the whole group, then SIGKILL what is left after `timeout`."""
        kill_group(self.pid, timeout=timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)
        self._log.close()
        with contextlib.suppress(ValueError):
            ManagedProcess.started.remove(self)

    def kill(self) -> None:
        """SIGKILL the group at once (fault tests)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()


def stop_all_under(directory: Path) -> None:
    """Stop every process started with its log file under `directory`."""
    for process in list(ManagedProcess.started):
        if directory in process.log_path.parents:
            process.stop()


def kill_group(pgid: int, *, timeout: float) -> None:
    """Terminate a process group politely, then forcefully; no-op if it is gone."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    while group_alive(pgid):
        time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists and is not a zombie."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg succeeds on zombies too; look for a live member.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    # Reap our own zombie child if it is one.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pgid, os.WNOHANG)
    return False


def wait_until(
    process: ManagedProcess,
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> None:
    """Poll `check` until it returns True; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.running():
            raise process.fail(f"exited with code {process.popen.returncode} before {what}")
        try:
            if check():
                return
        except (OSError, ValueError):
            pass
        time.sleep(interval)
    raise process.fail(f"not {what} after {timeout:.0f}s")


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def http_ok(
    url: str,
    *,
    context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 2.0,
) -> bool:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return 200 <= int(response.status) < 300
    except urllib.error.URLError:
        return False
