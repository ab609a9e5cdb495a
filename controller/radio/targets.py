"""Who a broadcast or a schedule is for: a group or one speaker, and the speakers it reaches.

Shared by scheduling, broadcasting and the bulletin inbox, with the levels by
name and the clock they all take (epoch milliseconds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from broadcast.levels import Level
from controller.auth import tenancy
from controller.radio.clip_library import Invalid, OutOfScope
from controller.site.directory import DeviceEntry, Site
from protocol.errors import ProtocolError
from protocol.topics import Topics, check_id

LEVELS: dict[str, Level] = {
    "normal": Level.NORMAL,
    "priority": Level.PRIORITY,
    "emergency": Level.EMERGENCY,
}
Clock = Callable[[], int]


@dataclass(frozen=True)
class Target:
    kind: Literal["group", "device"]
    id: str

    def topic(self, topics: Topics, leaf: str) -> str:
        return topics.grp(self.id, leaf) if self.kind == "group" else topics.dev(self.id, leaf)


class Fleet:
    """The site's speakers, read from the registry on each question (it can change)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.topics = Topics(site.root)

    def speakers(self, commune: str | None = None) -> list[DeviceEntry]:
        """Every speaker, or a commune's (``commune``: a commune user's scope)."""
        if commune is None:
            return list(self.site.derived("speakers", _speakers))
        return list(_speakers(self.site.devices_of(commune)))

    def groups(self, commune: str | None = None) -> list[str]:
        """The speakers' groups: "all" (the whole site) first, then the communes' own
        groups, then by name. A commune's: its own group first, never "all"."""
        if commune is None:
            found = set(self.site.derived("groups", _groups))
        else:
            found = set(_groups(self.site.devices_of(commune))) - {"all"}
        communes = {c.id for c in self.site.communes()}
        return sorted(found, key=lambda g: (g != "all", g not in communes, g))

    def find(
        self, query: str, page: int, per_page: int, commune: str | None = None
    ) -> tuple[list[DeviceEntry], int]:
        """One page of the speakers whose id or name holds ``query`` (any case), and how
        many there are in all; an empty query finds every speaker (of ``commune``)."""
        wanted = query.strip().casefold()
        found = [
            d
            for d in self.speakers(commune)
            if not wanted or wanted in d.id.casefold() or wanted in d.name.casefold()
        ]
        start = (page - 1) * per_page
        return found[start : start + per_page], len(found)

    def members(self, target: Target) -> list[str]:
        """Speakers a target reaches; an unknown target is refused."""
        if target.kind not in ("group", "device"):
            raise Invalid(
                "bad_target",
                f"Loại đích {target.kind!r} không hợp lệ (group hoặc device)",
                f"Target kind {target.kind!r} is not valid: use group or device",
            )
        try:
            check_id(target.id, f"{target.kind} id")
        except ProtocolError as exc:
            raise Invalid("bad_target", f"Mã đích không hợp lệ: {target.id!r}", str(exc)) from None
        found = [
            d.id
            for d in self.speakers()
            if (d.id == target.id if target.kind == "device" else target.id in d.groups)
        ]
        if not found:
            what_vi = "cụm loa" if target.kind == "device" else "nhóm loa"
            raise Invalid(
                "unknown_target",
                f"Không có {what_vi} {target.id!r} trong hệ thống",
                f"No speaker {target.kind} {target.id!r} at this site",
            )
        return found

    def members_within(self, target: Target, commune: str | None) -> list[str]:
        """The speakers a target reaches, refused unless every one is in ``commune``'s
        scope (controller/auth/tenancy.py: None, the province, reaches any)."""
        found = self.members(target)
        if commune is None:
            return found
        of = {d.id: d.commune or None for d in self.speakers()}
        if not tenancy.target_allowed(commune, [of.get(d) for d in found]):
            names = {c.id: c.name for c in self.site.communes()}
            where = names.get(commune, commune)
            what_vi = "Cụm loa" if target.kind == "device" else "Nhóm"
            what_en = "Speaker" if target.kind == "device" else "Group"
            raise OutOfScope(
                "outside_commune",
                f"{what_vi} {target.id} có cụm loa ngoài {where}: chỉ chọn nhóm hoặc cụm loa "
                f"của {where}",
                f"{what_en} {target.id} reaches speakers outside {where}: choose only groups "
                f"or speakers of {where}",
            )
        return found


def _speakers(devices: Iterable[DeviceEntry]) -> tuple[DeviceEntry, ...]:
    return tuple(d for d in devices if "speaker" in d.roles)


def _groups(devices: Iterable[DeviceEntry]) -> frozenset[str]:
    """The groups of those of ``devices`` that are speakers."""
    return frozenset(g for d in devices if "speaker" in d.roles for g in d.groups)
