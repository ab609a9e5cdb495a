"""The `xaso` command: one entry point for every program of the project.

Subcommands import their modules lazily, so `xaso agent` on a Pi does not
load the controller's web stack.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def _agent(args: argparse.Namespace) -> int:
    from edge.main import run_agent

    return run_agent(Path(args.config))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xaso", description="Xã số: IP radio, queue kiosks and fleet health for communes."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    agent = sub.add_parser("agent", help="run the edge agent on a device")
    agent.add_argument("--config", required=True, help="the agent's TOML configuration file")
    agent.set_defaults(func=_agent)

    from controller.auth_cli import register as register_controller

    register_controller(sub)

    from controller.ops_cli import register as register_ops

    register_ops(sub)

    from controller.demo import register as register_demo

    register_demo(sub)

    from broadcast.clip_cli import register as register_clip

    register_clip(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
