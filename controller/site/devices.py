"""The device registry and each device's agent configuration, in the site directory.

Adding a device gives it a new password and writes its agent configuration
(``devices/<id>.toml``), then the registry and the broker's files; removing
or regrouping one rewrites what it touches.
"""

from __future__ import annotations

import secrets
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import tomli_w

from controller.site.broker_files import mosquitto_hash, write_broker_files
from controller.site.communes import check_groups, checked_commune, with_commune_group
from controller.site.directory import (
    DeviceEntry,
    ProvisioningError,
    Site,
    locked,
    open_site,
    write_atomic,
    write_json,
)
from plumbing.clock import wall_ms
from protocol.errors import ProtocolError
from protocol.topics import check_id
from protocol.uplink import ROLES

DEFAULT_STATE_DIR = Path("/var/lib/xaso")


def add_device(
    directory: Path,
    device_id: str,
    roles: Sequence[str],
    groups: Sequence[str] = (),
    *,
    broker_host: str,
    broker_port: int,
    root: str | None = None,
    name: str = "",
    state_dir: Path = DEFAULT_STATE_DIR,
    tls: bool = False,
    force: bool = False,
    calls_from: Sequence[str] = (),
    office_address: str = "",
    queue: str = "",
    commune: str = "",
) -> Path:
    """Register a device with a new password and write its agent configuration; return its path.

    An existing device is refused unless ``force``: then it keeps its entry's
    creation time and gets a new password (the old one stops working at the
    broker's next reload). ``calls_from`` makes a speaker the hall speaker of
    those kiosks (already registered): it may read their calls, nothing else.
    ``office_address`` is a kiosk's address on the office network, for its
    tickets' QR code; without it the agent refuses to start the kiosk until
    ``[kiosk] office_address`` or ``public_url`` is set on the device.
    ``queue`` names the office whose one queue a kiosk shares with the other
    kiosks given the same ``queue``: each of their configurations lists them
    all (``[kiosk] queue_kiosks``), and the broker lets them, and only them,
    read each other's ``office`` topic.
    """
    entry = _checked_entry(device_id, roles, groups, name)
    if office_address and ("kiosk" not in entry.roles or any(c.isspace() for c in office_address)):
        raise ProvisioningError(
            f"office address {office_address!r}: give a kiosk's address such as 192.168.1.10"
        )
    if not broker_host or any(c.isspace() for c in broker_host):
        raise ProvisioningError(f"broker host {broker_host!r} is not valid")
    if not 1 <= broker_port <= 65535:
        raise ProvisioningError(f"broker port {broker_port} is not in 1-65535")
    site = open_site(directory)
    with locked(site.dir):
        if root is not None and root != site.root:
            raise ProvisioningError(f"{site.dir} uses the topic root {site.root!r}, not {root!r}")
        if device_id in site.meta()["users"]:
            raise ProvisioningError(
                f"{device_id!r} is the controller's user name: pick another id",
                "reserved_id",
                id=device_id,
            )
        devices = {d.id: d for d in site.devices()}
        entry = replace(
            entry,
            calls_from=_checked_calls_from(entry, calls_from, devices),
            queue=_checked_queue(entry, queue),
            commune=checked_commune(site, commune),
        )
        entry = replace(entry, groups=with_commune_group(entry))
        check_groups(entry, devices, (c.id for c in site.communes()))
        old = devices.get(device_id)
        if old is not None and not force:
            raise ProvisioningError(
                f"device {device_id!r} already exists in {site.dir}: use --force to rewrite "
                "its configuration with a new password",
                "device_exists",
                id=device_id,
            )
        password = secrets.token_urlsafe(24)
        entry = replace(
            entry,
            password_hash=mosquitto_hash(password),
            created_ms=old.created_ms if old else wall_ms(),
        )
        config: dict[str, dict[str, Any]] = {
            "device": {
                "id": entry.id,
                "roles": entry.roles,
                "groups": entry.groups,
                "name": entry.name,
            },
            "mqtt": {
                "host": broker_host,
                "port": broker_port,
                "tls": tls,
                "username": entry.id,
                "password": password,
                "root": site.root,
            },
            "trust": {"keys": site.trusted_keys()},
            "state": {"dir": str(state_dir)},
            "telemetry": {"interval_s": 30.0},
        }
        if entry.calls_from:
            config["speaker"] = {"calls_from": entry.calls_from}
        if office_address:
            config["kiosk"] = {"office_address": office_address}
        path = site.device_config_path(device_id)
        # The configuration first: the broker never knows a password nobody has.
        write_atomic(path, _render_toml(config), 0o600)
        devices[device_id] = entry
        _write_registry(site, devices.values())
        _write_queue_members(site, devices.values(), {entry.queue, old.queue if old else ""})
        write_broker_files(site)
    return path


def remove_device(directory: Path, device_id: str) -> None:
    """Forget a device: its password and ACL entries go at the broker's next reload."""
    site = open_site(directory)
    with locked(site.dir):
        devices = {d.id: d for d in site.devices()}
        gone = devices.pop(device_id, None)
        if gone is None:
            raise ProvisioningError(f"no device {device_id!r} in {site.dir}")
        _write_registry(site, devices.values())
        _write_queue_members(site, devices.values(), {gone.queue})
        write_broker_files(site)
        site.device_config_path(device_id).unlink(missing_ok=True)


def list_devices(directory: Path) -> list[DeviceEntry]:
    return open_site(directory).devices()


def set_groups(directory: Path, device_id: str, groups: Sequence[str]) -> None:
    """Move a device to other groups: its registry entry, its configuration, the broker's ACL."""
    site = open_site(directory)
    with locked(site.dir):
        devices = {d.id: d for d in site.devices()}
        old = devices.get(device_id)
        if old is None:
            raise ProvisioningError(f"no device {device_id!r} in {site.dir}")
        entry = replace(old, groups=_checked_entry(device_id, old.roles, groups, old.name).groups)
        entry = replace(entry, groups=with_commune_group(entry))
        check_groups(entry, devices, (c.id for c in site.communes()))
        devices[device_id] = entry
        rewrite_config(site, device_id, lambda doc: doc["device"].update(groups=entry.groups))
        _write_registry(site, devices.values())
        write_broker_files(site)


def rewrite_config(site: Site, device_id: str, change: Callable[[dict[str, Any]], object]) -> None:
    """Edit a device's generated configuration in place, if there is one."""
    path = site.device_config_path(device_id)
    if not path.exists():
        return
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProvisioningError(f"{path}: not valid TOML: {exc}") from None
    change(doc)
    write_atomic(path, _render_toml(doc), 0o600)


def _checked_entry(
    device_id: str, roles: Sequence[str], groups: Sequence[str], name: str
) -> DeviceEntry:
    try:
        check_id(device_id)
        for group in groups:
            check_id(group, "group id")
    except ProtocolError as exc:
        raise ProvisioningError(str(exc)) from None
    if not roles or any(r not in ROLES for r in roles):
        raise ProvisioningError(f"roles {list(roles)} are not valid: use one or more of {ROLES}")
    if not name.isprintable():
        raise ProvisioningError(f"name {name!r} has control characters")
    return DeviceEntry(device_id, tuple(dict.fromkeys(roles)), tuple(dict.fromkeys(groups)), name)


def _checked_calls_from(
    entry: DeviceEntry, kiosks: Sequence[str], devices: Mapping[str, DeviceEntry]
) -> tuple[str, ...]:
    """Only a speaker plays calls, and only those of registered kiosks other than itself."""
    if kiosks and "speaker" not in entry.roles:
        raise ProvisioningError("--calls-from needs the speaker role: add --role speaker")
    for kiosk in kiosks:
        if kiosk == entry.id:
            raise ProvisioningError(
                f"{kiosk!r} cannot take calls from itself: a kiosk that is also a speaker "
                "calls through its own player"
            )
        known = devices.get(kiosk)
        if known is None or "kiosk" not in known.roles:
            raise ProvisioningError(
                f"--calls-from {kiosk}: no kiosk {kiosk!r} in the site; add it first "
                f"(`xaso device add {kiosk} --role kiosk ...`)"
            )
    return tuple(dict.fromkeys(kiosks))


def _checked_queue(entry: DeviceEntry, queue: str) -> str:
    if not queue:
        return ""
    if "kiosk" not in entry.roles:
        raise ProvisioningError("--queue needs the kiosk role: add --role kiosk")
    try:
        return check_id(queue, "office queue id")
    except ProtocolError as exc:
        raise ProvisioningError(str(exc)) from None


def _write_queue_members(site: Site, devices: Iterable[DeviceEntry], queues: set[str]) -> None:
    """Every kiosk of these queues lists the kiosks of its queue (their order makes the slots)."""
    entries = list(devices)
    for queue in sorted(queues - {""}):
        members = sorted(d.id for d in entries if d.queue == queue)

        def join(doc: dict[str, Any], q: str = queue, m: list[str] = members) -> None:
            doc.setdefault("kiosk", {}).update(queue=q, queue_kiosks=m)

        for member in members:
            rewrite_config(site, member, join)


def _write_registry(site: Site, devices: Iterable[DeviceEntry]) -> None:
    # a device of no commune is written as before communes existed
    rows = [
        {k: v for k, v in asdict(d).items() if k != "commune" or v}
        for d in sorted(devices, key=lambda d: d.id)
    ]
    write_json(site.dir / "devices.json", {"version": 1, "devices": rows})


def _render_toml(doc: Mapping[str, Mapping[str, Any]]) -> str:
    header = "# Generated by `xaso device add`: copy to /etc/xaso/agent.toml (mode 0600).\n\n"
    return header + tomli_w.dumps({table: dict(values) for table, values in doc.items()})
