"""Readings for the benchmarks: /proc (CPU, RSS, sockets), operator metrics text, quantiles.

Pure helpers take text or numbers; the /proc readers take pids, so they work the same for a
Python operator and a Go binary.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
_OBJECT = re.compile(r'scaledObject="([^"]*)"')
_LE = re.compile(r'le="([^"]*)"')

# --- /proc ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def connections(pid: int, ports: dict[str, int]) -> dict[str, int]:
    """Established TCP connections of `pid` to each named remote port on this host."""
    inodes = socket_inodes(pid)
    by_port = {port: name for name, port in ports.items()}
    counts = dict.fromkeys(ports, 0)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "01" or fields[9] not in inodes:
                continue
            name = by_port.get(int(fields[2].rsplit(":", 1)[1], 16))
            if name is not None:
                counts[name] += 1
    return counts


# --- operator metrics (text exposition, parsed by line: it is large at 10,000 objects) ------


def scrape(url: str, timeout: float = 600.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def objects_with(text: str, metric: str) -> set[str]:
    """scaledObject label values that have a sample of `metric`."""
    prefix = metric + "{"
    found = set()
    for line in text.splitlines():
        if line.startswith(prefix):
            match = _OBJECT.search(line)
            if match:
                found.add(match.group(1))
    return found


def sum_of(text: str, metric: str) -> float:
    """The sum of every sample of `metric` (with or without labels)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith((metric + "{", metric + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def values_of(text: str, metric: str) -> list[float]:
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((metric + "{", metric + " "))
    ]


def buckets_of(text: str, metric: str) -> dict[float, float]:
    """A histogram's cumulative buckets, summed over label sets: le -> count."""
    buckets: dict[float, float] = {}
    prefix = metric + "_bucket"
    for line in text.splitlines():
        if line.startswith(prefix):
            match = _LE.search(line)
            if match:
                le = float(match.group(1))
                buckets[le] = buckets.get(le, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def bucket_delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: count - before.get(le, 0.0) for le, count in after.items()}


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus-style linear interpolation inside the bucket that holds the quantile."""
    ordered = sorted(buckets.items())
    total = ordered[-1][1] if ordered else 0
    if not total:
        return None
    rank, previous_le, previous_count = q * total, 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if le == float("inf"):
                return previous_le
            share = (
                (rank - previous_count) / (count - previous_count) if count > previous_count else 0
            )
            return round(previous_le + (le - previous_le) * share, 4)
        previous_le, previous_count = le, count
    return None


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 4)


# --- the machine and the checkout ------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 2**20, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_commit(repo: Path) -> dict[str, Any]:
    """HEAD and whether tracked files differ from it (read-only git commands)."""

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=30, check=False
        )
        return result.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }
