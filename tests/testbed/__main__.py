"""`python -m tests.testbed install | up [SERVICE...] | down | kubeconfig ... | demo`"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from tests.testbed.bench import SERVICES, Bench, NotInstalledError, down, state_file
from tests.testbed.cache import format_duration, log
from tests.testbed.install import COMPONENTS, InstallError, install, paths
from tests.testbed.kube import KubeAPIServer
from tests.testbed.procs import ServiceError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    install_cmd = commands.add_parser("install", help="build or fetch what is missing")
    install_cmd.add_argument(
        "components", nargs="*", metavar="COMPONENT", help=", ".join(COMPONENTS)
    )
    up_cmd = commands.add_parser("up", help="start services, print their endpoints as JSON")
    up_cmd.add_argument("services", nargs="*", metavar="SERVICE", help=", ".join(SERVICES))
    commands.add_parser("down", help="stop what `up` started")
    commands.add_parser("demo", help="show the operator scaling a Deployment 0 -> N -> 0")
    mint = commands.add_parser(
        "kubeconfig", help="mint a kubeconfig for a user/groups or a ServiceAccount"
    )
    who = mint.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="user name (client certificate CN)")
    who.add_argument("--service-account", metavar="NAMESPACE/NAME")
    mint.add_argument("--group", action="append", default=[], help="group (repeatable)")
    mint.add_argument("--output", "-o", type=Path, required=True)
    args = parser.parse_args(argv)

    try:
        if args.command == "install":
            unknown = set(args.components) - set(COMPONENTS)
            if unknown:
                raise ValueError(f"unknown component(s) {sorted(unknown)}; known: {COMPONENTS}")
            return _install(tuple(args.components) or COMPONENTS)
        if args.command == "up":
            return _up(tuple(args.services) or SERVICES)
        if args.command == "demo":
            from tests.testbed import demo

            return demo.main()
        if args.command == "down":
            leftovers = down()
            if leftovers:
                log("down", f"killed process groups left behind: {leftovers}")
            return 0
        return _mint(args.user, args.service_account, tuple(args.group), args.output)
    except (InstallError, NotInstalledError, ServiceError, ValueError) as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 1


def _install(components: tuple[str, ...]) -> int:
    started = time.monotonic()
    timings = install(components)
    summary = ", ".join(f"{name} {format_duration(secs)}" for name, secs in timings.items())
    log("install", f"done in {format_duration(time.monotonic() - started)} ({summary})")
    return 0


def _up(names: tuple[str, ...]) -> int:
    unknown = [name for name in names if name not in SERVICES]
    if unknown:
        raise ValueError(f"unknown service(s) {unknown}; known: {', '.join(SERVICES)}")
    if state_file().exists():
        raise ValueError(
            f"a bench is already up (see {state_file()}); run `python -m tests.testbed down`"
        )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    bench = Bench(names)
    try:
        endpoints = bench.start()
        print(json.dumps(endpoints), flush=True)
        log("up", "running; stop with Ctrl-C, SIGTERM or `python -m tests.testbed down`")
        while not stop.wait(1.0):
            for name, service in bench.services.items():
                dead = [p.name for p in service.processes if not p.running()]
                if dead:
                    log("up", f"{name}: {', '.join(dead)} exited; see {bench.workdir}")
                    return 1
    finally:
        bench.stop()
    return 0


def _mint(
    user: str | None, service_account: str | None, groups: tuple[str, ...], output: Path
) -> int:
    """Mint credentials for the apiserver that a running `up` serves."""
    if not state_file().exists():
        raise ValueError("no bench is up; start one with `python -m tests.testbed up kube`")
    state = json.loads(state_file().read_text())
    if "kube" not in state["endpoints"]:
        raise ValueError("the running bench has no kube service")
    kube = KubeAPIServer.attach(paths(), Path(state["workdir"]) / "kube")
    if user is not None:
        kube.kubeconfig_for_user(user, groups=groups, path=output)
    else:
        namespace, _, name = (service_account or "").partition("/")
        if not namespace or not name:
            raise ValueError("--service-account takes NAMESPACE/NAME")
        kube.kubeconfig_for_service_account(namespace, name, path=output)
    print(output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
