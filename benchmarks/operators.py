"""The operators a benchmark can run: ours (`autoscale run`, one or several processes) and KEDA's.

`launch(kind, ...)` starts the operator process(es) against the bench's apiserver and returns a
`Launched`: its pids (for CPU, RSS and socket counts from /proc) and metrics URLs. The CRDs and
the ScaledObject apiVersion differ per kind (`api_group`, `crd_manifests`).

KEDA comes from `benchmarks/keda.py` (ensure_built, crd_manifests, command); it is imported
only when asked for, so ours runs without it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, http_ok

REPO = Path(__file__).resolve().parents[1]
KINDS = ("ours", "keda")


def api_group(kind: str) -> tuple[str, str]:
    """(group, version) of the ScaledObject the operator of `kind` reads."""
    return ("keda.sh", "v1alpha1") if kind == "keda" else ("autoscale.dev", "v1alpha1")


def crd_manifests(kind: str) -> list[dict[str, Any]]:
    if kind == "keda":
        from benchmarks import keda

        return list(keda.crd_manifests())
    import yaml

    from autoscale import crd_manifests as ours

    return [doc for doc in yaml.safe_load_all(ours.render_crds()) if doc]


def ours_supports_shards() -> bool:
    """Whether this checkout's `autoscale run` has `--shards` (the sharded mode)."""
    result = subprocess.run(
        [sys.executable, "-m", "autoscale", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    return "--shards" in result.stdout


@dataclass
class Launched:
    """Operator process(es) of one run; `describe` says what was started, for the results."""

    kind: str
    processes: list[ManagedProcess]
    metrics_urls: list[str]
    health_urls: list[str] = field(default_factory=list)
    describe: list[list[str]] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def check_running(self) -> None:
        for process in self.processes:
            if not process.running():
                raise process.fail("the operator exited")

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Until every process answers its health (ours) or metrics (KEDA) endpoint."""
        deadline = time.monotonic() + timeout
        for url in self.health_urls or self.metrics_urls:
            while not http_ok(url, timeout=5):
                self.check_running()
                if time.monotonic() > deadline:
                    raise self.processes[0].fail(f"{url} never answered")
                time.sleep(0.3)

    def stop(self) -> None:
        for process in self.processes:
            process.stop(timeout=30)


def launch(
    kind: str,
    *,
    kubeconfig: Path,
    namespace: str,
    workdir: Path,
    replicas: int = 1,
    shards: int = 0,
    log_level: str = "warning",
) -> Launched:
    if kind == "keda":
        if replicas != 1 or shards:
            raise ValueError("KEDA runs one active operator; --replicas/--shards are ours only")
        return _launch_keda(kubeconfig=kubeconfig, namespace=namespace, workdir=workdir)
    if kind != "ours":
        raise ValueError(f"unknown operator {kind!r}; known: {', '.join(KINDS)}")
    if shards and not ours_supports_shards():
        raise RuntimeError(
            "`autoscale run --shards` is not in this checkout yet (the sharded mode is being "
            "built); run without --shards"
        )
    launched = Launched(kind="ours", processes=[], metrics_urls=[])
    try:
        for index in range(replicas):
            extra: list[str] = []
            if shards:
                extra = [f"--shards={shards}", f"--identity=replica-{index}"]
            elif replicas > 1:
                # Several replicas without shards: one leader scales, the others stand by.
                extra = ["--leader-elect"]
            if extra:
                extra.append(f"--lease-namespace={namespace}")
            metrics_port, health_port = free_port(), free_port()
            argv = [
                sys.executable,
                "-m",
                "autoscale",
                "run",
                f"--kubeconfig={kubeconfig}",
                f"--namespace={namespace}",
                f"--metrics-port={metrics_port}",
                f"--health-port={health_port}",
                f"--bind-address={LOOPBACK}",
                f"--log-level={log_level}",
                *extra,
            ]
            launched.processes.append(
                ManagedProcess(
                    f"autoscale-{index}",
                    argv,
                    log_path=workdir / f"operator-{index}.log",
                    env={**os.environ, "POD_NAMESPACE": namespace, "POD_NAME": f"replica-{index}"},
                    cwd=REPO,
                )
            )
            launched.metrics_urls.append(f"http://{LOOPBACK}:{metrics_port}/metrics")
            launched.health_urls.append(f"http://{LOOPBACK}:{health_port}/healthz")
            launched.describe.append(_shown(argv))
    except BaseException:
        launched.stop()
        raise
    return launched


def _launch_keda(*, kubeconfig: Path, namespace: str, workdir: Path) -> Launched:
    from benchmarks import keda

    keda.ensure_built()
    metrics_port = free_port()
    argv, env = keda.command(kubeconfig, namespace, metrics_port)
    process = ManagedProcess(
        "keda-operator",
        argv,
        log_path=workdir / "keda-operator.log",
        env={**os.environ, **env},
        cwd=workdir,
    )
    return Launched(
        kind="keda",
        processes=[process],
        metrics_urls=[f"http://{LOOPBACK}:{metrics_port}/metrics"],
        describe=[_shown(argv)],
    )


def _shown(argv: list[str]) -> list[str]:
    """argv for the results: the interpreter and temporary paths made short and stable."""
    shown = [".venv/bin/python" if arg == sys.executable else arg for arg in argv]
    return [
        arg.split("=", 1)[0] + "=<bench>" if arg.startswith("--kubeconfig=") else arg
        for arg in shown
    ]
