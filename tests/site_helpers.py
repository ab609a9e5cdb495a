"""Site-directory helpers shared by the provisioning tests: adding a device, running `xaso`."""

from __future__ import annotations

import argparse

from controller.site.cli import register
from controller.site.devices import add_device
from controller.site.directory import Site


def add(site: Site, device_id: str = "loa-1", groups: tuple[str, ...] = ("thon-1",), **kw):
    return add_device(
        site.dir,
        device_id,
        ["speaker"],
        list(groups),
        broker_host="10.0.0.2",
        broker_port=1883,
        state_dir=site.dir / "state",
        **kw,
    )


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="xaso")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
