"""Operator subcommands of `xaso`: signing keys, communes and devices in a site directory.

Each handler returns an exit code; a refusal is one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

from controller.site.communes import add_commune, list_communes
from controller.site.devices import DEFAULT_STATE_DIR, add_device, list_devices, remove_device
from controller.site.directory import ProvisioningError, open_site
from controller.site.keys import init_site, new_key
from protocol.uplink import ROLES

DEFAULT_SITE = Path("xaso-site")
RELOAD_HINT = (
    "Reload the broker so it reads the new password and ACL files: "
    "`systemctl reload mosquitto` (or `kill -HUP <its pid>`)."
)

Handler = Callable[[argparse.Namespace], int]


def _site_dir(args: argparse.Namespace) -> Path:
    if args.site is not None:
        return Path(args.site)
    return Path(os.environ.get("XASO_SITE") or DEFAULT_SITE)


def _refusals(handler: Handler) -> Handler:
    """Turn a refusal into one line on stderr and exit code 2."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ProvisioningError as exc:
            print(f"xaso: {exc}", file=sys.stderr)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"xaso: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2

    return run


@_refusals
def _keys_new(args: argparse.Namespace) -> int:
    directory = _site_dir(args)
    if not (directory / "site.json").is_file():
        site = init_site(directory)
        user, _ = site.controller_credentials()
        print(f"Created the site {directory}.")
        print(
            f"The controller's MQTT user is {user!r}; its password is in "
            f"{site.controller_password_path}."
        )
        print(f"Active signing key: {site.active_kid()}")
        print(RELOAD_HINT)
        return 0
    kid = new_key(directory)
    print(f"Active signing key: {kid}; older keys stay trusted.")
    print(
        f"The configurations in {directory / 'devices'} now trust it: give devices theirs "
        "again before the controller signs with it."
    )
    return 0


@_refusals
def _keys_list(args: argparse.Namespace) -> int:
    site = open_site(_site_dir(args))
    active = site.active_kid()
    for kid, key in site.signing_keys().items():
        print(f"{kid}  {'active ' if kid == active else 'retired'}  {key.public.b64}")
    return 0


@_refusals
def _device_add(args: argparse.Namespace) -> int:
    path = add_device(
        _site_dir(args),
        args.id,
        args.role,
        args.group or [],
        broker_host=args.broker_host,
        broker_port=args.broker_port,
        name=args.name,
        state_dir=Path(args.state_dir),
        tls=args.tls,
        force=args.force,
        calls_from=args.calls_from or [],
        office_address=args.office_address,
        queue=args.queue,
        commune=args.commune,
    )
    print(
        f"Device {args.id} {'has a new password' if args.force else 'added'}; "
        f"its agent configuration is {path}"
    )
    print(
        "It holds the device's password: copy it to /etc/xaso/agent.toml on the device "
        "(mode 0600) and delete any other copy."
    )
    if "kiosk" in args.role and not args.office_address:
        print(
            "A kiosk needs its address on the office network for the tickets' QR code: "
            "set [kiosk] office_address (or public_url) in that file before starting it."
        )
    print(RELOAD_HINT)
    return 0


@_refusals
def _device_list(args: argparse.Namespace) -> int:
    directory = _site_dir(args)
    devices = list_devices(directory)
    if not devices:
        print(f"No devices in {directory}.")
    for d in devices:
        created = dt.datetime.fromtimestamp(d.created_ms / 1000, dt.UTC).strftime("%Y-%m-%d")
        groups = ",".join(d.groups) or "-"
        line = f"{d.id:<24} {','.join(d.roles):<14} {groups:<32} {created}"
        if d.commune:
            line += f"  [{d.commune}]"
        print(f"{line}  {d.name}".rstrip())
    return 0


@_refusals
def _commune_add(args: argparse.Namespace) -> int:
    commune = add_commune(_site_dir(args), args.id, args.name)
    print(
        f"Xã {commune.id} ({commune.name}) đã có trong hệ thống; thêm cụm loa bằng "
        f"`xaso device add ... --commune {commune.id}`. / Commune {commune.id} "
        f"({commune.name}) is in the site; add its devices with "
        f"`xaso device add ... --commune {commune.id}`."
    )
    return 0


@_refusals
def _commune_list(args: argparse.Namespace) -> int:
    directory = _site_dir(args)
    communes = list_communes(directory)
    if not communes:
        print(f"Chưa có xã nào trong {directory}: hệ thống phục vụ một xã. / No communes in "
              f"{directory}: the controller serves one commune.")  # fmt: skip
    devices = list_devices(directory) if communes else []
    for c in communes:
        count = sum(d.commune == c.id for d in devices)
        print(f"{c.id:<24} {count:>5}  {c.name}")
    return 0


@_refusals
def _device_remove(args: argparse.Namespace) -> int:
    remove_device(_site_dir(args), args.id)
    print(f"Device {args.id} removed. {RELOAD_HINT} The reload disconnects it.")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys new|list`, `commune add|list` and `device add|list|remove` to `xaso`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--site", help=f"the site directory (default: $XASO_SITE, else ./{DEFAULT_SITE})"
    )

    keys = subparsers.add_parser("keys", help="the controller's signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    new = keys_sub.add_parser(
        "new", parents=[common], help="create the site, or a new active key (older stay trusted)"
    )
    new.set_defaults(func=_keys_new)
    keys_sub.add_parser("list", parents=[common], help="list the keys").set_defaults(
        func=_keys_list
    )

    commune = subparsers.add_parser("commune", help="the province's communes (tenants)")
    commune_sub = commune.add_subparsers(dest="commune_command", required=True, metavar="ACTION")
    cadd = commune_sub.add_parser(
        "add", parents=[common], help="add a commune (or rename one already added)"
    )
    cadd.add_argument("id", help="its id, also its MQTT group: lower case, e.g. phu-an")
    cadd.add_argument("--name", required=True, help='its name, e.g. "Xã Phú An"')
    cadd.set_defaults(func=_commune_add)
    commune_sub.add_parser(
        "list", parents=[common], help="list the communes and their device counts"
    ).set_defaults(func=_commune_list)

    device = subparsers.add_parser("device", help="device credentials and configurations")
    device_sub = device.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    add = device_sub.add_parser(
        "add", parents=[common], help="register a device and write its agent configuration"
    )
    add.add_argument("id", help="the device id, also its MQTT user name")
    add.add_argument(
        "--role",
        action="append",
        required=True,
        choices=ROLES,
        help="speaker or kiosk; repeat for both",
    )
    add.add_argument("--group", action="append", help="a group it listens to; repeatable")
    add.add_argument(
        "--calls-from",
        action="append",
        metavar="KIOSK",
        help="a speaker that is this kiosk's hall speaker: it plays the kiosk's calls "
        "(and may read nothing else of it); repeatable",
    )
    add.add_argument(
        "--office-address",
        default="",
        metavar="ADDRESS",
        help="a kiosk's address on the office network (e.g. 192.168.1.10), for the QR code "
        "on its tickets",
    )
    add.add_argument(
        "--queue",
        default="",
        metavar="OFFICE",
        help="a kiosk sharing one number series and queue with the other kiosks given the "
        "same OFFICE id (e.g. tanphu-mot-cua)",
    )
    add.add_argument(
        "--commune",
        default="",
        metavar="COMMUNE",
        help="the commune it belongs to (see `xaso commune list`); it joins that "
        "commune's group too",
    )
    add.add_argument("--name", default="", help="shown to people in the controller's UI")
    add.add_argument(
        "--broker-host", required=True, help="the broker's address, seen from the device"
    )
    add.add_argument("--broker-port", type=int, default=1883, help="default 1883")
    add.add_argument(
        "--tls", action="store_true", help="connect with TLS (port 8883 in production)"
    )
    add.add_argument(
        "--state-dir",
        default=str(DEFAULT_STATE_DIR),
        help=f"the agent's state directory (default {DEFAULT_STATE_DIR})",
    )
    add.add_argument(
        "--force",
        action="store_true",
        help="replace an existing device's configuration, with a new password",
    )
    add.set_defaults(func=_device_add)
    device_sub.add_parser("list", parents=[common], help="list the devices").set_defaults(
        func=_device_list
    )
    remove = device_sub.add_parser("remove", parents=[common], help="forget a device")
    remove.add_argument("id")
    remove.set_defaults(func=_device_remove)
