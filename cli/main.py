"""The `xaso` command: one entry point for every program of the project.

Each program adds its own subcommands through a ``register(subparsers)`` of
its own. This module imports a program only when one of its subcommands runs
(or for the full ``xaso --help``), so `xaso agent` on a Pi loads nothing of
the controller, and a speaker installed without the controller's
dependencies still has a working command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# subcommand -> the module whose register() adds it
SUBCOMMANDS = {
    "agent": "edge.main",
    "controller": "controller.cli",
    "user": "controller.cli",
    "keys": "controller.site.cli",
    "device": "controller.site.cli",
    "demo": "cli.demo.run",
    "clip": "broadcast.clip_cli",
}


def _wanted(argv: Sequence[str]) -> list[str]:
    """The modules to load for ``argv``: the subcommand's alone when it names one."""
    for arg in argv:
        if not arg.startswith("-"):
            module = SUBCOMMANDS.get(arg)
            if module is not None:
                return [module]
            break
    return list(dict.fromkeys(SUBCOMMANDS.values()))


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xaso", description="Xã số: IP radio, queue kiosks and fleet health for communes."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _wanted(argv):
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_in).parse_args(args_in)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except ModuleNotFoundError as exc:
        # a role this machine was not installed for, e.g. `xaso controller` on a speaker
        print(
            f"xaso {args.command}: this installation lacks {exc.name!r}; install the role"
            f" that runs it (see docs/operations.md, 'Installing by role')",
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
