"""Where the bench keeps what it builds, and the lock and stamps that make installs idempotent."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "AUTOSCALE_TESTBED_CACHE"


def cache_root() -> Path:
    """The cache directory: $AUTOSCALE_TESTBED_CACHE, else ~/.cache/autoscale-testbed."""
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured) if configured else Path.home() / ".cache" / "autoscale-testbed"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache so concurrent installs never build twice."""
    with open(root / ".lock", "w") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("cache", f"waiting for another install holding {root / '.lock'}")
            fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


STAMP = ".ok"


def is_stamped(directory: Path) -> bool:
    return (directory / STAMP).is_file()


@contextlib.contextmanager
def building(directory: Path) -> Iterator[Path]:
    """Build into `directory.tmp`, then move it into place and stamp it, all or nothing."""
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    yield staging
    (staging / STAMP).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)


def log(component: str, message: str) -> None:
    """Progress goes to stderr, so `up` keeps stdout for its one JSON object."""
    print(f"[testbed] {component}: {message}", file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"
