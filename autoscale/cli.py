"""Command-line entry point: parses arguments and hands over; no logic lives here."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from autoscale import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoscale", description="Event-driven autoscaler for Kubernetes."
    )
    parser.add_argument("--version", action="version", version=f"autoscale {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("crds", help="print the CustomResourceDefinitions as YAML")
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
