"""Who a broadcast or a schedule is for: a group or one speaker, and the speakers it reaches.

Shared by scheduling, broadcasting and the bulletin inbox, with the levels by
name and the clock they all take (epoch milliseconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from broadcast.levels import Level
from controller.radio.clip_library import Invalid
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

    def speakers(self) -> list[DeviceEntry]:
        return [d for d in self.site.devices() if "speaker" in d.roles]

    def groups(self) -> list[str]:
        """The speakers' groups: "all" (the whole commune) first, then by name."""
        found = {g for d in self.speakers() for g in d.groups}
        return sorted(found, key=lambda g: (g != "all", g))

    def find(self, query: str, page: int, per_page: int) -> tuple[list[DeviceEntry], int]:
        """One page of the speakers whose id or name holds ``query`` (any case), and how
        many there are in all; an empty query finds every speaker."""
        wanted = query.strip().casefold()
        found = [
            d
            for d in self.speakers()
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
