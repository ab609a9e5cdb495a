"""The province's communes in the site directory: adding and listing them, and the rules
that tie devices and groups to one commune.

A commune is a tenant of the controller (docs/communes.md): an id that is a
valid MQTT topic level (``phu-an``) and a name as people say it ("Xã Phú
An"). A device in commune ``c`` is also in group ``c``, that commune's whole
("Toàn xã"); group ``all`` stays the whole site, the province. Every other
group belongs to the commune of its devices, so a group whose devices are in
two communes is refused. A site with no ``communes.json`` is run by one
commune and behaves as it did before communes existed.

Refusals name both languages ("Vietnamese / English"), as the site's other
refusals reach an operator in a terminal and a web page alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path

from controller.site.directory import (
    Commune,
    DeviceEntry,
    ProvisioningError,
    Site,
    locked,
    open_site,
    write_json,
)
from plumbing.clock import wall_ms
from protocol.errors import ProtocolError
from protocol.topics import check_id

ALL = "all"  # the group of every device of the site: the province


def add_commune(directory: Path, commune_id: str, name: str) -> Commune:
    """Add a commune (its id is final: it is an MQTT group); a known id gets the new name."""
    try:
        check_id(commune_id, "commune id")
    except ProtocolError as exc:
        raise ProvisioningError(
            f"Mã xã {commune_id!r} không hợp lệ: dùng chữ thường, số và '-', ví dụ phu-an / {exc}"
        ) from None
    display = " ".join(name.split())
    if not 1 <= len(display) <= 100 or not display.isprintable():
        raise ProvisioningError(
            "Tên xã cần 1-100 ký tự, ví dụ «Xã Phú An» / "
            "A commune's name needs 1-100 characters, such as «Xã Phú An»"
        )
    if commune_id == ALL:
        raise ProvisioningError(
            "'all' là nhóm của cả tỉnh, không thể là mã xã: chọn mã khác / "
            "'all' is the group of the whole province, not a commune id: pick another"
        )
    site = open_site(directory)
    with locked(site.dir):
        communes = {c.id: c for c in site.communes()}
        old = communes.get(commune_id)
        if old is None:
            for device in site.devices():
                if commune_id in device.groups and device.commune != commune_id:
                    raise ProvisioningError(
                        f"Mã {commune_id!r} đã là một nhóm loa (của {device.id}): chọn mã xã "
                        f"khác / {commune_id!r} is already a group (of {device.id}): pick "
                        "another commune id"
                    )
        commune = Commune(commune_id, display, old.created_ms if old else wall_ms())
        communes[commune_id] = commune
        rows = [asdict(c) for c in sorted(communes.values(), key=lambda c: c.id)]
        write_json(site.dir / "communes.json", {"version": 1, "communes": rows})
    return commune


def list_communes(directory: Path) -> list[Commune]:
    return open_site(directory).communes()


def commune_names(site: Site) -> dict[str, str]:
    """Each commune's name by id (empty for a site of one commune)."""
    return {c.id: c.name for c in site.communes()}


def checked_commune(site: Site, commune: str) -> str:
    """A device's commune: one the site has, or "" (none)."""
    if not commune:
        return ""
    known = commune_names(site)
    if commune not in known:
        listed = ", ".join(sorted(known)) or "-"
        raise ProvisioningError(
            f"Không có xã {commune!r}; các xã: {listed}. Thêm xã trước bằng "
            f"`xaso commune add {commune} --name ...` / No commune {commune!r}; the communes "
            f"are: {listed}. Add it first with `xaso commune add {commune} --name ...`"
        )
    return commune


def with_commune_group(entry: DeviceEntry) -> tuple[str, ...]:
    """A device's groups with its commune's own group (its "Toàn xã") among them."""
    if not entry.commune:
        return entry.groups
    return tuple(dict.fromkeys((*entry.groups, entry.commune)))


def check_groups(
    entry: DeviceEntry, devices: Mapping[str, DeviceEntry], communes: Iterable[str]
) -> None:
    """Refuse a group of ``entry`` that would span two communes, or name another commune.

    ``devices`` is the registry without ``entry`` (or with its old self).
    """
    commune_ids = set(communes)
    for group in entry.groups:
        if group == ALL:
            continue
        if group in commune_ids and group != entry.commune:
            raise ProvisioningError(
                f"Nhóm {group!r} là toàn bộ xã {group}; thiết bị {entry.id} thuộc "
                f"{_said(entry.commune)}: bỏ --group {group} hoặc đổi --commune / Group "
                f"{group!r} is the whole of commune {group}; device {entry.id} is in "
                f"{_told(entry.commune)}: drop --group {group} or change --commune"
            )
        for other in devices.values():
            if other.id != entry.id and group in other.groups and other.commune != entry.commune:
                raise ProvisioningError(
                    f"Nhóm {group!r} đã có {other.id} thuộc {_said(other.commune)}, còn "
                    f"{entry.id} thuộc {_said(entry.commune)}: một nhóm chỉ thuộc một xã, hãy "
                    f"dùng nhóm khác / Group {group!r} already has {other.id} in "
                    f"{_told(other.commune)} and {entry.id} is in {_told(entry.commune)}: a "
                    "group belongs to one commune, use another group"
                )


def _said(commune: str) -> str:
    return f"xã {commune}" if commune else "cấp tỉnh (không thuộc xã nào)"


def _told(commune: str) -> str:
    return f"commune {commune}" if commune else "the province (no commune)"
