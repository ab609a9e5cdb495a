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
    "commune": "controller.site.cli",
    "demo": "cli.demo.run",
    "clip": "broadcast.clip_cli",
}


# our packages: a missing module of ours is a bug, never a role left uninstalled
OURS = frozenset({"cli", "edge", "controller", "broadcast", "kiosk", "protocol", "plumbing"})


class RoleNotInstalled(Exception):
    """A subcommand whose program's libraries this installation lacks."""

    def __init__(self, command: str, library: str | None) -> None:
        super().__init__(
            f"xaso {command}: this installation lacks {library!r}; install the role that"
            " runs it (see docs/operations.md, 'Installing by role')"
        )


def _lacking(exc: ModuleNotFoundError) -> str | None:
    """The third-party library an import lacks; re-raises a missing module of ours."""
    if exc.name is None or exc.name.split(".")[0] in OURS:
        raise exc
    return exc.name


def _named(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names, if it is one of ours."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in SUBCOMMANDS else None
    return None


def _wanted(argv: Sequence[str]) -> list[str]:
    """The modules to load for ``argv``: the subcommand's alone when it names one."""
    command = _named(argv)
    if command is not None:
        return [SUBCOMMANDS[command]]
    return list(dict.fromkeys(SUBCOMMANDS.values()))


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for ``argv``; raises ``RoleNotInstalled`` when it names a subcommand whose
    program is not installed. For the full help, such programs are listed as missing."""
    parser = argparse.ArgumentParser(
        prog="xaso", description="Xã số: IP radio, queue kiosks and fleet health for communes."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    absent: list[str] = []
    for name in _wanted(argv):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            library = _lacking(exc)
            command = _named(argv)
            if command is not None:
                raise RoleNotInstalled(command, library) from None
            absent += [c for c, m in SUBCOMMANDS.items() if m == name]
            continue
        module.register(sub)
    if absent:
        parser.epilog = f"not installed here (another role's): {', '.join(absent)}"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(args_in).parse_args(args_in)
    except RoleNotInstalled as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except ModuleNotFoundError as exc:
        # a library imported when the command runs, e.g. `xaso controller` on a speaker
        print(RoleNotInstalled(args.command, _lacking(exc)), file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
