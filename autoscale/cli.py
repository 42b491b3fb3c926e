"""Command-line entry point: parses flags (each also an AUTOSCALE_* variable) and hands over."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

from autoscale import __version__


def _env(name: str, default: Any, convert: Callable[[str], Any] = str) -> Any:
    raw = os.environ.get(f"AUTOSCALE_{name}")
    return default if raw is None or raw == "" else convert(raw)


def _bool(raw: str) -> bool:
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {raw!r}")


def _shards(raw: str) -> int:
    from autoscale.sharding import MAX_SHARDS

    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if not 0 <= value <= MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SHARDS}, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoscale", description="Event-driven autoscaler for Kubernetes."
    )
    parser.add_argument("--version", action="version", version=f"autoscale {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("crds", help="print the CustomResourceDefinitions as YAML")
    check = commands.add_parser(
        "check",
        help="validate manifests and poll their triggers once",
        description="Validate ScaledObjects and (Cluster)TriggerAuthentications (autoscale.dev "
        "or keda.sh) in YAML files and, unless --offline, poll every trigger once. "
        "Exit status: 0 valid, 1 invalid manifest, 2 a source could not be read.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="YAML files; - for stdin")
    check.add_argument("--offline", action="store_true", help="validate only; poll nothing")
    check.add_argument(
        "--current-replicas",
        type=int,
        default=None,
        help="replicas to decide from (default: read from the cluster, else 0)",
    )
    check.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="NAME.PARAM=VALUE",
        help="an auth parameter for authenticationRef NAME (repeatable)",
    )
    check.add_argument(
        "--namespace", default="default", help="namespace for objects that do not name one"
    )
    check.add_argument("--kubeconfig", default=None, help="cluster for auth and replica counts")
    check.add_argument(
        "--no-cluster",
        action="store_true",
        help="do not contact a cluster even if one is configured",
    )
    check.add_argument("--output", "-o", choices=("text", "json"), default="text")
    run = commands.add_parser(
        "run",
        help="run the operator",
        description="Watch ScaledObjects and scale their targets. Every flag can also be set "
        "with the environment variable named in its help (flags win).",
    )
    run.add_argument(
        "--kubeconfig",
        default=_env("KUBECONFIG", None),
        help="kubeconfig file (default: in-cluster, then $KUBECONFIG) [AUTOSCALE_KUBECONFIG]",
    )
    namespaces = _env("NAMESPACES", "")
    run.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        default=[n for n in namespaces.split(",") if n] or None,
        help="watch only this namespace; repeatable (default: all) "
        "[AUTOSCALE_NAMESPACES, comma-separated]",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=_env("METRICS_PORT", 8080, int),
        help="Prometheus metrics port, 0 for any free port [AUTOSCALE_METRICS_PORT]",
    )
    run.add_argument(
        "--health-port",
        type=int,
        default=_env("HEALTH_PORT", 8081, int),
        help="/healthz and /readyz port [AUTOSCALE_HEALTH_PORT]",
    )
    run.add_argument(
        "--bind-address",
        default=_env("BIND_ADDRESS", "0.0.0.0"),
        help="address the metrics and health servers listen on [AUTOSCALE_BIND_ADDRESS]",
    )
    run.add_argument(
        "--leader-elect",
        type=_bool,
        nargs="?",
        const=True,
        default=_env("LEADER_ELECT", False, _bool),
        help="elect a leader through a Lease; only the leader scales [AUTOSCALE_LEADER_ELECT]",
    )
    run.add_argument(
        "--shards",
        type=_shards,
        default=_env("SHARDS", 0, _shards),
        metavar="K",
        help="split the ScaledObjects into K shards (Leases) spread over all running replicas, "
        "each polling the shards it holds; 0: off. Excludes --leader-elect [AUTOSCALE_SHARDS]",
    )
    run.add_argument(
        "--identity",
        default=_env("IDENTITY", None),
        help="this replica's name in Leases; unique per replica (default: hostname_pid) "
        "[AUTOSCALE_IDENTITY]",
    )
    run.add_argument(
        "--lease-name",
        default=_env("LEASE_NAME", "autoscale-operator"),
        help="[AUTOSCALE_LEASE_NAME]",
    )
    run.add_argument(
        "--lease-namespace",
        default=_env("LEASE_NAMESPACE", None),
        help="default: the operator's namespace [AUTOSCALE_LEASE_NAMESPACE]",
    )
    run.add_argument(
        "--lease-duration",
        type=float,
        default=_env("LEASE_DURATION", 15.0, float),
        help="seconds [AUTOSCALE_LEASE_DURATION]",
    )
    run.add_argument(
        "--renew-deadline",
        type=float,
        default=_env("RENEW_DEADLINE", 10.0, float),
        help="seconds [AUTOSCALE_RENEW_DEADLINE]",
    )
    run.add_argument(
        "--retry-period",
        type=float,
        default=_env("RETRY_PERIOD", 2.0, float),
        help="seconds [AUTOSCALE_RETRY_PERIOD]",
    )
    run.add_argument(
        "--poll-timeout",
        type=float,
        default=_env("POLL_TIMEOUT", 10.0, float),
        help="seconds one trigger poll may take [AUTOSCALE_POLL_TIMEOUT]",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=_env("LOG_FORMAT", "text"),
        help="[AUTOSCALE_LOG_FORMAT]",
    )
    run.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "info"),
        choices=("debug", "info", "warning", "error"),
        help="[AUTOSCALE_LOG_LEVEL]",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "crds":
        from autoscale import crd_manifests

        print(crd_manifests.render_crds(), end="")
        return 0
    import asyncio

    if args.command == "check":
        return _check(args)
    from autoscale import app, logs
    from autoscale.settings import Settings, default_identity, operator_namespace

    if args.shards and args.leader_elect:
        parser.error(
            "--shards and --leader-elect exclude each other: with shards every replica is active"
        )
    logs.configure(log_format=args.log_format, level=args.log_level)
    own_namespace = operator_namespace()
    settings = Settings(
        kubeconfig=args.kubeconfig,
        namespaces=tuple(args.namespaces or ()),
        metrics_host=args.bind_address,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        leader_elect=args.leader_elect,
        shards=args.shards,
        lease_name=args.lease_name,
        lease_namespace=args.lease_namespace or own_namespace,
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        identity=args.identity or default_identity(),
        operator_namespace=own_namespace,
        poll_timeout=args.poll_timeout,
        log_format=args.log_format,
        log_level=args.log_level,
    )
    return asyncio.run(app.run(settings))


def _check(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import sys

    import yaml

    from autoscale import check

    logging.basicConfig(level=logging.ERROR)
    try:
        options = check.Options(
            offline=args.offline,
            current_replicas=args.current_replicas,
            auth=check.parse_auth_options(args.auth),
            namespace=args.namespace,
            kubeconfig=args.kubeconfig,
            use_cluster=not args.no_cluster,
        )
        documents = check.load_documents(args.files)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # unreadable file, bad YAML or --auth
        print(f"autoscale check: {exc}", file=sys.stderr)
        return check.EXIT_INVALID
    if not documents:
        print("autoscale check: no ScaledObject or TriggerAuthentication found", file=sys.stderr)
        return check.EXIT_INVALID
    reports, status = asyncio.run(check.check(documents, options))
    render = check.render_json if args.output == "json" else check.render_text
    render(reports, sys.stdout)
    return status
