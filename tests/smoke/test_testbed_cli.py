"""`python -m tests.testbed`: install is idempotent, up prints one JSON object of endpoints,
and down (or a signal to up) leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.testbed.procs import group_alive

pytestmark = pytest.mark.testbed


def run_testbed(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.testbed", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_install_twice_does_nothing_the_second_time() -> None:
    """A warm cache: every component reports itself present, nothing is rebuilt."""
    result = run_testbed("install", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    for component in ("etcd v", "kube v", "kafka "):
        assert any(
            line.startswith(f"[testbed] {component}") and "present in" in line
            for line in result.stderr.splitlines()
        ), result.stderr
    assert "compiling" not in result.stderr


@pytest.mark.parametrize("stop_with", ["down", "sigterm"])
def test_up_prints_endpoints_and_stopping_leaves_nothing(tmp_path: Path, stop_with: str) -> None:
    env = dict(os.environ, AUTOSCALE_TESTBED_RUN=str(tmp_path))
    up = subprocess.Popen(
        [sys.executable, "-m", "tests.testbed", "up", "redis", "sqs"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert up.stdout is not None
        endpoints = json.loads(up.stdout.readline())
        assert set(endpoints) == {"redis", "sqs"}
        host, port = endpoints["redis"]["url"].removeprefix("redis://").split("/")[0].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(16) == b"+PONG\r\n"
        with urllib.request.urlopen(endpoints["sqs"]["endpoint"] + "/moto-api/", timeout=5) as r:
            assert r.status == 200
        state = json.loads((tmp_path / "up.json").read_text())
        groups = state["process_groups"]
        assert len(groups) == 2
        if stop_with == "down":
            result = run_testbed("down", env=env)
            assert result.returncode == 0, result.stderr
        else:
            up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
    finally:
        if up.poll() is None:
            up.kill()
    assert not [pgid for pgid in groups if group_alive(pgid)]
    assert not (tmp_path / "up.json").exists()
    assert not Path(state["workdir"]).exists()
