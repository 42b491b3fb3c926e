"""Starting and stopping a set of bench services, for the CLI and the pytest fixtures alike."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.testbed.cache import cache_root, format_duration, is_stamped, log
from tests.testbed.install import Paths, paths
from tests.testbed.kube import KubeAPIServer
from tests.testbed.procs import ServiceError, group_alive, kill_group, stop_all_under
from tests.testbed.services import SQS, Kafka, Prometheus, RabbitMQ, Redis, Service

SERVICES = ("kube", "kafka", "rabbitmq", "redis", "sqs", "prometheus")


class NotInstalledError(RuntimeError):
    """A service's binaries are not in the cache; `python -m tests.testbed install` fixes it."""


def check_installed(name: str, where: Paths) -> None:
    needed: dict[str, list[Path]] = {
        "kube": [where.kube_dir, where.etcd_dir],
        "kafka": [where.kafka_dir],
    }
    for directory in needed.get(name, []):
        if not is_stamped(directory):
            raise NotInstalledError(
                f"{name}: {directory} is not built; run `python -m tests.testbed install`"
            )
    binaries = {
        "redis": ["/usr/bin/redis-server"],
        "rabbitmq": ["/usr/lib/rabbitmq/bin/rabbitmq-server"],
        "prometheus": ["/usr/bin/prometheus"],
        "sqs": [str(where.moto_server)],
    }
    for binary in binaries.get(name, []):
        if not Path(binary).exists():
            raise NotInstalledError(
                f"{name}: {binary} is missing; run `python -m tests.testbed install`"
            )


def start_service(name: str, workdir: Path, where: Paths | None = None) -> Service:
    """Start one service in `workdir` and return it once it really answers.

    A start that fails is tried once more with fresh ports: a free port can be taken by
    another process between our check and the server's bind (envtest retries the same way).
    """
    where = where or paths()
    check_installed(name, where)
    try:
        return _start(name, workdir, where)
    except ServiceError as exc:
        log(name, f"start failed ({str(exc).splitlines()[0]}); retrying once with new ports")
        stop_all_under(workdir / name)
        shutil.rmtree(workdir / name, ignore_errors=True)
    try:
        return _start(name, workdir, where)
    except BaseException:
        stop_all_under(workdir / name)
        raise


def _start(name: str, workdir: Path, where: Paths) -> Service:
    started = time.monotonic()
    service: Service
    if name == "kube":
        service = KubeAPIServer.start(where, workdir / "kube")
    elif name == "kafka":
        service = Kafka(where, workdir / "kafka")
    elif name == "rabbitmq":
        service = RabbitMQ(where, workdir / "rabbitmq")
    elif name == "redis":
        service = Redis(where, workdir / "redis")
    elif name == "sqs":
        service = SQS(where, workdir / "sqs")
    elif name == "prometheus":
        service = Prometheus(where, workdir / "prometheus")
    else:
        raise ValueError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    log(name, f"ready in {format_duration(time.monotonic() - started)}")
    return service


RUN_ENV = "AUTOSCALE_TESTBED_RUN"


def state_file() -> Path:
    """Where a running `up` records itself: $AUTOSCALE_TESTBED_RUN, else <cache>/run."""
    configured = os.environ.get(RUN_ENV)
    return (Path(configured) if configured else cache_root() / "run") / "up.json"


class Bench:
    """A running set of services, recorded in a state file so `down` can stop them."""

    def __init__(self, names: tuple[str, ...], *, workdir: Path | None = None) -> None:
        self.names = names
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="autoscale-testbed-"))
        self.services: dict[str, Service] = {}

    def start(self) -> dict[str, Any]:
        try:
            for name in self.names:
                self.services[name] = start_service(name, self.workdir)
                self._record()
        except BaseException:
            self.stop()
            raise
        return self.endpoints()

    def endpoints(self) -> dict[str, Any]:
        return {name: service.endpoint() for name, service in self.services.items()}

    def _record(self) -> None:
        state = {
            "pid": os.getpid(),
            "workdir": str(self.workdir),
            "process_groups": [
                process.pid for service in self.services.values() for process in service.processes
            ],
            "endpoints": self.endpoints(),
        }
        target = state_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(state, indent=2))

    def stop(self) -> None:
        for name in reversed(list(self.services)):
            with contextlib.suppress(Exception):
                self.services.pop(name).stop()
        with contextlib.suppress(FileNotFoundError):
            if json.loads(state_file().read_text()).get("pid") == os.getpid():
                state_file().unlink()
        shutil.rmtree(self.workdir, ignore_errors=True)


def down(timeout: float = 60.0) -> list[int]:
    """Stop a bench started by `up`: signal it, then kill any process group it left behind.

    Returns the process groups that had to be killed here rather than by `up` itself.
    """
    target = state_file()
    if not target.exists():
        return []
    state = json.loads(target.read_text())
    owner = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(owner, 15)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(owner):
        time.sleep(0.2)
    leftovers = [pgid for pgid in state["process_groups"] if group_alive(pgid)]
    for pgid in leftovers:
        kill_group(pgid, timeout=10)
    shutil.rmtree(state["workdir"], ignore_errors=True)
    target.unlink(missing_ok=True)
    return leftovers


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return status != "Z"
