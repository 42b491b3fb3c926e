"""The README's first command: `python -m tests.testbed demo` (what `make demo` runs) shows two
Deployments going 0 -> N -> 0 and exits cleanly; Ctrl-C part-way leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.testbed.procs import group_alive

pytestmark = pytest.mark.testbed

REPO = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    """Every live descendant of `pid` (the demo starts its services in their own sessions)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found


def test_demo_scales_both_workers_to_n_and_back() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.testbed", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # Each worker is activated from 0 by its own trigger, and returns to 0 after the cooldown.
    assert re.search(r"orders-worker .* 0 -> [1-8]: s0-kafka-orders=\d+ > 0", out), out
    assert re.search(r"emails-worker .* 0 -> [1-8]: s0-redis-streams-emails=\d+ > 0", out), out
    assert re.search(r"orders-worker .* [1-8] -> 0: no trigger active", out), out
    assert re.search(r"emails-worker .* [1-8] -> 0: no trigger active", out), out
    assert "done: both Deployments went 0 -> N -> 0" in out


def test_ctrl_c_leaves_nothing_running() -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "tests.testbed", "demo"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    started = time.monotonic()
    for line in demo.stdout:  # interrupt once the operator is running
        if "operator running" in line:
            break
        assert time.monotonic() - started < 120, "the demo did not get going"
    descendants = children_of(demo.pid)
    assert descendants
    demo.send_signal(signal.SIGINT)
    remaining = demo.communicate(timeout=120)[0]
    assert demo.returncode == 130, remaining
    assert "interrupted: cleaning up" in remaining
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in descendants):
        time.sleep(0.2)
    assert not [pid for pid in descendants if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return group_alive(pid) or Path(f"/proc/{pid}").exists()
