"""Helpers for end-to-end tests: the operator process and polling waits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, http_ok

REPO = Path(__file__).resolve().parents[2]


class Operator:
    """`autoscale run` as a child process."""

    def __init__(
        self,
        *,
        kubeconfig: Path,
        namespace: str,
        log_path: Path,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log_path = log_path
        self.process = ManagedProcess(
            f"autoscale-{log_path.stem}",
            [
                sys.executable,
                "-m",
                "autoscale",
                "run",
                f"--kubeconfig={kubeconfig}",
                f"--namespace={namespace}",
                f"--metrics-port={self.metrics_port}",
                f"--health-port={self.health_port}",
                f"--bind-address={LOOPBACK}",
                "--log-format=json",
                "--log-level=debug",
                *extra_args,
            ],
            log_path=log_path,
            env={**os.environ, "POD_NAMESPACE": namespace, **(env or {})},
            cwd=REPO,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.running():
                raise self.process.fail("exited before becoming ready")
            if http_ok(f"http://{LOOPBACK}:{self.health_port}/healthz"):
                return
            time.sleep(0.2)
        raise self.process.fail("/healthz never answered")

    def logs(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                entries.append({"msg": line})
        return entries

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://{LOOPBACK}:{self.metrics_port}/metrics", timeout=5
        ) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        """Keep the last metrics beside the log (for the secret scan), then SIGTERM."""
        if self.process.running():
            with contextlib.suppress(OSError):
                self.log_path.with_suffix(".metrics").write_text(self.metrics())
        self.process.stop(timeout=20)

    def kill(self) -> None:
        self.process.kill()

    def terminate(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)


def wait_for(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.2, what: str
) -> Any:
    """Poll until `condition()` is truthy and return it; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def make_pending(client: Any, stream: str, count: int, group: str = "workers") -> list[str]:
    """Add `count` entries and deliver them to a consumer without acknowledging them."""
    for i in range(count):
        client.xadd(stream, {"job": str(i)})
    delivered = client.xreadgroup(group, "worker-1", {stream: ">"}, count=count)
    return [entry_id for entry_id, _ in delivered[0][1]]


# Secret values the e2e tests hand to the operator; tests/e2e/test_zz_secret_scan.py looks for
# every one of them in everything the operator produced during the session.
SECRETS: set[str] = set()


def remember_secret(value: str) -> str:
    SECRETS.add(value)
    return value
