"""`python -m tests.testbed install`: build or fetch every component the bench runs.

- kube-apiserver and kubectl of a pinned Kubernetes release, built from the Go module proxy
  through a wrapper module that pins each staging module to its `v0.Y.Z` tag;
- etcd, built from the Go module proxy through a wrapper `main` around `etcdmain`;
- Apache Kafka's broker jars from Maven Central, run in KRaft mode;
- redis-server, rabbitmq-server (with its management plugin) and prometheus from Debian;
- moto's server from PyPI (a dependency of the project's dev extra: only checked here);
- helm (v3), built from the Go module proxy, to render the chart in deploy/helm in tests.

Everything lands in a versioned cache outside the repository (see cache.py). Each component is
stamped when complete, so a second run checks the stamps and returns in a second or two.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.testbed import versions
from tests.testbed.cache import building, cache_root, format_duration, is_stamped, locked, log


class InstallError(RuntimeError):
    """A component could not be built or fetched; the message says which and why."""


@dataclass(frozen=True)
class Paths:
    """Where each installed component lives once `install` has run."""

    root: Path

    @property
    def kube_dir(self) -> Path:
        return self.root / f"kube-v{versions.KUBERNETES}-r{versions.RECIPE}"

    @property
    def kube_apiserver(self) -> Path:
        return self.kube_dir / "kube-apiserver"

    @property
    def kubectl(self) -> Path:
        return self.kube_dir / "kubectl"

    @property
    def etcd_dir(self) -> Path:
        return self.root / f"etcd-v{versions.ETCD}-r{versions.RECIPE}"

    @property
    def etcd(self) -> Path:
        return self.etcd_dir / "etcd"

    @property
    def kafka_dir(self) -> Path:
        return self.root / f"kafka-{versions.SCALA}-{versions.KAFKA}-r{versions.RECIPE}"

    @property
    def kafka_libs(self) -> Path:
        return self.kafka_dir / "libs"

    @property
    def helm_dir(self) -> Path:
        return self.root / f"helm-v{versions.HELM}-r{versions.RECIPE}"

    @property
    def helm(self) -> Path:
        return self.helm_dir / "helm"

    @property
    def moto_server(self) -> Path:
        return Path(sys.executable).parent / "moto_server"


def paths() -> Paths:
    return Paths(cache_root())


COMPONENTS = ("etcd", "kube", "kafka", "debian", "moto", "helm")


def install(components: tuple[str, ...] = COMPONENTS) -> dict[str, float]:
    """Install what is missing; return the seconds each component took."""
    where = paths()
    timings: dict[str, float] = {}
    with locked(where.root):
        for component in components:
            started = time.monotonic()
            INSTALLERS[component](where)
            timings[component] = time.monotonic() - started
    return timings


# --- Go builds -------------------------------------------------------------------------------


def _go_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(root / "go" / "mod"),
        GOCACHE=str(root / "go" / "build"),
        GOFLAGS="-trimpath -buildvcs=false",
        CGO_ENABLED="0",
        GOTOOLCHAIN="local",
        GOWORK="off",
    )
    return env


def _require_tool(name: str, why: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise InstallError(f"`{name}` is not on PATH; it is needed to {why}")
    return found


def _run(component: str, args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise InstallError(f"{component}: `{' '.join(args)}` failed:\n{tail}")
    return result.stdout


def _go_build(
    component: str, package: str, output: Path, *, cwd: Path, env: dict[str, str], ldflags: str
) -> None:
    """`go build -v`, reporting how many of the package's dependencies have been compiled."""
    deps = _run(component, ["go", "list", "-deps", package], cwd=cwd, env=env).split()
    total = len(deps)
    compiled = 0
    proc = subprocess.Popen(
        [
            "go",
            "build",
            "-v",
            "-p",
            str(os.cpu_count() or 2),
            "-ldflags",
            ldflags,
            "-o",
            str(output),
            package,
        ],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = time.monotonic()
    last_report = started
    errors: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.strip()
        if line in deps or line == "command-line-arguments":
            compiled += 1
        elif line:
            errors.append(line)
        now = time.monotonic()
        if now - last_report >= 15:
            log(
                component,
                f"compiling {output.name}: {compiled}/{total} packages "
                f"({format_duration(now - started)})",
            )
            last_report = now
    if proc.wait() != 0:
        raise InstallError(f"{component}: go build {package} failed:\n" + "\n".join(errors[-30:]))
    log(component, f"built {output.name} in {format_duration(time.monotonic() - started)}")


def _write_files(workdir: Path, files: dict[str, str]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (workdir / name).write_text(text)


def install_kube(where: Paths) -> None:
    """kube-apiserver + kubectl from k8s.io/kubernetes, with staging modules pinned to v0.Y.Z."""
    component = f"kube v{versions.KUBERNETES}"
    if is_stamped(where.kube_dir):
        log(component, f"present in {where.kube_dir}")
        return
    _require_tool("go", "build kube-apiserver and kubectl from the Go module proxy")
    env = _go_env(where.root)
    kube_version = f"v{versions.KUBERNETES}"
    staging_version = "v0." + versions.KUBERNETES.split(".", 1)[1]
    minor = versions.KUBERNETES.split(".")[1]
    workdir = where.root / "src" / f"kube-{kube_version}"
    shutil.rmtree(workdir, ignore_errors=True)
    _write_files(
        workdir,
        {
            "tools.go": "//go:build tools\n\npackage tools\n\nimport (\n"
            '\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n'
            '\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n',
        },
    )
    log(component, "step 1/3: resolving modules (downloads ~1 GB on a cold cache)")
    _run(component, ["go", "mod", "init", "local/kubebench"], cwd=workdir, env=env)
    info = json.loads(
        _run(
            component,
            ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{kube_version}"],
            cwd=workdir,
            env=env,
        )
    )
    upstream_gomod = Path(info["GoMod"]).read_text()
    edits = [f"-require=k8s.io/kubernetes@{kube_version}"]
    for module in re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/", upstream_gomod, re.M):
        edits.append(f"-replace={module}={module}@{staging_version}")
    go_directive = re.search(r"^go (\S+)", upstream_gomod, re.M)
    if go_directive:
        edits.append(f"-go={go_directive.group(1)}")
    _run(component, ["go", "mod", "edit", *edits], cwd=workdir, env=env)
    godebug = re.findall(r"^godebug .*$", upstream_gomod, re.M)
    if godebug:  # keep the release's GODEBUG defaults, not those of our newer Go
        with open(workdir / "go.mod", "a") as gomod:
            gomod.write("\n" + "\n".join(godebug) + "\n")
    _run(component, ["go", "mod", "tidy"], cwd=workdir, env=env)
    ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={kube_version}",
            "-X k8s.io/component-base/version.gitMajor=1",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            "-X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z",
            f"-X k8s.io/client-go/pkg/version.gitVersion={kube_version}",
            "-X k8s.io/client-go/pkg/version.gitMajor=1",
            f"-X k8s.io/client-go/pkg/version.gitMinor={minor}",
        ]
    )
    with building(where.kube_dir) as staging:
        log(component, "step 2/3: compiling kube-apiserver (5-10 minutes cold on 2 cores)")
        _go_build(
            component,
            "k8s.io/kubernetes/cmd/kube-apiserver",
            staging / "kube-apiserver",
            cwd=workdir,
            env=env,
            ldflags=ldflags,
        )
        log(component, "step 3/3: compiling kubectl (reuses most of the build cache)")
        _go_build(
            component,
            "k8s.io/kubernetes/cmd/kubectl",
            staging / "kubectl",
            cwd=workdir,
            env=env,
            ldflags=ldflags,
        )


ETCD_MAIN = """package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


def install_etcd(where: Paths) -> None:
    """etcd from go.etcd.io/etcd/server/v3, whose own replace directives rule out `go install`."""
    component = f"etcd v{versions.ETCD}"
    if is_stamped(where.etcd_dir):
        log(component, f"present in {where.etcd_dir}")
        return
    _require_tool("go", "build etcd from the Go module proxy")
    env = _go_env(where.root)
    workdir = where.root / "src" / f"etcd-v{versions.ETCD}"
    shutil.rmtree(workdir, ignore_errors=True)
    _write_files(workdir, {"main.go": ETCD_MAIN})
    log(component, "step 1/2: resolving modules")
    _run(component, ["go", "mod", "init", "local/etcdbench"], cwd=workdir, env=env)
    _run(
        component,
        ["go", "mod", "edit", f"-require=go.etcd.io/etcd/server/v3@v{versions.ETCD}"],
        cwd=workdir,
        env=env,
    )
    _run(component, ["go", "mod", "tidy"], cwd=workdir, env=env)
    with building(where.etcd_dir) as staging:
        log(component, "step 2/2: compiling etcd (about 1 minute cold)")
        _go_build(component, ".", staging / "etcd", cwd=workdir, env=env, ldflags="-s -w")


HELM_TOOLS = """//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
"""


def install_helm(where: Paths) -> None:
    """helm from helm.sh/helm/v3 through a wrapper module requiring exactly the release."""
    component = f"helm v{versions.HELM}"
    if is_stamped(where.helm_dir):
        log(component, f"present in {where.helm_dir}")
        return
    _require_tool("go", "build helm from the Go module proxy")
    env = _go_env(where.root)
    version = f"v{versions.HELM}"
    workdir = where.root / "src" / f"helm-{version}"
    shutil.rmtree(workdir, ignore_errors=True)
    _write_files(workdir, {"tools.go": HELM_TOOLS})
    log(component, "step 1/2: resolving modules")
    _run(component, ["go", "mod", "init", "local/helmbench"], cwd=workdir, env=env)
    _run(
        component,
        ["go", "mod", "edit", f"-require=helm.sh/helm/v3@{version}"],
        cwd=workdir,
        env=env,
    )
    _run(component, ["go", "mod", "tidy"], cwd=workdir, env=env)
    # As helm's Makefile does: the default Kubernetes version (for `helm template` and kubeVersion
    # checks) is the one of the client-go it is built with, v0.Y.Z meaning 1.Y.
    client_go = _run(
        component,
        ["go", "list", "-m", "-f", "{{.Version}}", "k8s.io/client-go"],
        cwd=workdir,
        env=env,
    ).strip()
    k8s_minor = client_go.split(".")[1]
    ldflags = " ".join(
        [
            "-s -w",
            f"-X helm.sh/helm/v3/internal/version.version={version}",
            "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
            "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
            f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={k8s_minor}",
            "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
            f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={k8s_minor}",
        ]
    )
    with building(where.helm_dir) as staging:
        log(component, "step 2/2: compiling helm (2-4 minutes cold on 2 cores)")
        _go_build(
            component,
            "helm.sh/helm/v3/cmd/helm",
            staging / "helm",
            cwd=workdir,
            env=env,
            ldflags=ldflags,
        )


# --- Kafka from Maven Central -----------------------------------------------------------------

KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.autoscale</groupId><artifactId>kafka-bench</artifactId><version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


def install_kafka(where: Paths) -> None:
    """Apache Kafka's broker and its runtime jars, resolved by Maven."""
    component = f"kafka {versions.KAFKA}"
    if is_stamped(where.kafka_dir):
        log(component, f"present in {where.kafka_dir}")
        return
    _require_tool("java", "run the Kafka broker (Java 17 or later)")
    mvn = _require_tool("mvn", "fetch Kafka's jars from Maven Central")
    with building(where.kafka_dir) as staging:
        (staging / "pom.xml").write_text(
            KAFKA_POM.format(scala=versions.SCALA, kafka=versions.KAFKA, log4j=versions.LOG4J)
        )
        log(component, "resolving kafka_2.13 and its runtime dependencies from Maven Central")
        repository = where.root / "m2"
        stop = _heartbeat(component, "jars in the Maven repository", lambda: _count(repository))
        try:
            _run(
                component,
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    "pom.xml",
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    "-DoutputDirectory=libs",
                    f"-Dmaven.repo.local={where.root / 'm2'}",
                ],
                cwd=staging,
            )
        finally:
            stop()
        log(component, f"{_count(staging / 'libs')} jars in place")


def _count(directory: Path) -> int:
    return sum(1 for _ in directory.rglob("*.jar")) if directory.is_dir() else 0


def _heartbeat(component: str, message: str, progress: Callable[[], int]) -> Callable[[], None]:
    """Print `message` with a counter every 15 s until the returned function is called."""
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(15):
            log(
                component,
                f"{message}: {progress()} so far ({format_duration(time.monotonic() - started)})",
            )

    threading.Thread(target=beat, daemon=True).start()
    return done.set


# --- Debian packages and PyPI ----------------------------------------------------------------


def install_debian(where: Paths) -> None:
    """redis-server, rabbitmq-server and prometheus from Debian, without starting them."""
    missing = [pkg for binary, pkg in versions.DEBIAN.values() if not Path(binary).exists()]
    if not missing:
        log("debian", "redis-server, rabbitmq-server and prometheus present")
        return
    if os.geteuid() != 0:
        raise InstallError(
            f"Debian packages missing: {' '.join(missing)}; run as root or "
            f"`sudo apt-get install --no-install-recommends {' '.join(missing)}`"
        )
    apt = _require_tool("apt-get", "install Debian packages")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Keep the packages' init scripts from starting system-wide daemons on install.
    policy = Path("/usr/sbin/policy-rc.d")
    created_policy = not policy.exists()
    if created_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        log("debian", "apt-get update")
        _run("debian", [apt, "update", "-q"], cwd=where.root, env=env)
        log("debian", f"apt-get install {' '.join(missing)}")
        _run(
            "debian",
            [apt, "install", "-y", "-q", "--no-install-recommends", *missing],
            cwd=where.root,
            env=env,
        )
    finally:
        if created_policy:
            policy.unlink(missing_ok=True)
    still_missing = [pkg for binary, pkg in versions.DEBIAN.values() if not Path(binary).exists()]
    if still_missing:
        raise InstallError(f"apt-get did not provide {' '.join(still_missing)}")


def install_moto(where: Paths) -> None:
    if not where.moto_server.exists():
        raise InstallError(
            f"{where.moto_server} is missing: install the project's dev extra "
            "(`pip install -e '.[dev]'`), which brings moto[server]"
        )
    log("moto", f"moto_server present ({where.moto_server})")


INSTALLERS: dict[str, Callable[[Paths], None]] = {
    "etcd": install_etcd,
    "kube": install_kube,
    "kafka": install_kafka,
    "debian": install_debian,
    "moto": install_moto,
    "helm": install_helm,
}
