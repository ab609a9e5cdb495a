"""Topic names of the wire contract: the only place they are spelled."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from protocol.errors import ProtocolError

ID_PATTERN = r"[a-z0-9][a-z0-9-]{0,47}"
_ID_RE = re.compile(ID_PATTERN)
DEFAULT_ROOT = "xaso"

Scope = Literal["dev", "grp"]
DEVICE_LEAVES = (
    "status",
    "telemetry",
    "event",
    "calls",
    "office",
    "ack",
    "cmd",
    "config",
    "schedule",
    "bookings",
    "receipt",
)
GROUP_LEAVES = ("cmd", "schedule")
# what the controller signs, and a target names (bookings: a kiosk's booked citizens)
INBOUND_LEAVES = ("cmd", "config", "schedule", "bookings")


def check_id(value: str, what: str = "device id") -> str:
    """Return ``value`` if it is a valid device or group id, else raise."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ProtocolError(
            f"{what} {value!r} is not valid: use 1-48 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return value


def check_root(root: str) -> str:
    if not root or any(c in root for c in "+#") or root.startswith("/") or root.endswith("/"):
        raise ProtocolError(
            f"topic root {root!r} is not valid: no wildcards, no leading or trailing '/'"
        )
    return root


@dataclass(frozen=True)
class TopicRef:
    scope: Scope
    id: str
    leaf: str

    @classmethod
    def of(cls, topic: str) -> TopicRef:
        """The scope, id and leaf of a topic under any root: the last three levels."""
        parts = topic.split("/")
        if len(parts) < 4:
            raise ProtocolError(f"topic {topic!r} is not a topic of the contract")
        return Topics("/".join(parts[:-3])).parse(topic)


@dataclass(frozen=True)
class Topics:
    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        check_root(self.root)

    def dev(self, device_id: str, leaf: str) -> str:
        if leaf not in DEVICE_LEAVES:
            raise ProtocolError(f"unknown device topic {leaf!r}")
        return f"{self.root}/dev/{check_id(device_id)}/{leaf}"

    def grp(self, group: str, leaf: str) -> str:
        if leaf not in GROUP_LEAVES:
            raise ProtocolError(f"unknown group topic {leaf!r}")
        return f"{self.root}/grp/{check_id(group, 'group id')}/{leaf}"

    def status(self, device_id: str) -> str:
        return self.dev(device_id, "status")

    def telemetry(self, device_id: str) -> str:
        return self.dev(device_id, "telemetry")

    def event(self, device_id: str) -> str:
        return self.dev(device_id, "event")

    def calls(self, device_id: str) -> str:
        """A kiosk's hall calls: its ``ticket.called`` events again, for its hall speakers."""
        return self.dev(device_id, "calls")

    def office(self, device_id: str) -> str:
        """A kiosk's entries of its office's shared queue, for the other kiosks of that office."""
        return self.dev(device_id, "office")

    def ack(self, device_id: str) -> str:
        return self.dev(device_id, "ack")

    def receipt(self, device_id: str) -> str:
        """The controller's receipts of a device's events, once stored (docs/delivery.md)."""
        return self.dev(device_id, "receipt")

    def cmd(self, device_id: str) -> str:
        return self.dev(device_id, "cmd")

    def device_inbound(self, device_id: str, groups: list[str] | tuple[str, ...]) -> list[str]:
        """Every topic a device subscribes to: its own and its groups' commands and documents."""
        topics = [self.dev(device_id, leaf) for leaf in ("cmd", "config", "schedule", "bookings")]
        for group in groups:
            topics += [self.grp(group, leaf) for leaf in GROUP_LEAVES]
        return topics

    def all_devices(self, leaf: str) -> str:
        """A wildcard subscription for one leaf of every device (the controller's ingest)."""
        if leaf not in DEVICE_LEAVES:
            raise ProtocolError(f"unknown device topic {leaf!r}")
        return f"{self.root}/dev/+/{leaf}"

    def parse(self, topic: str) -> TopicRef:
        parts = topic.split("/")
        prefix = self.root.split("/")
        if len(parts) != len(prefix) + 3 or parts[: len(prefix)] != prefix:
            raise ProtocolError(f"topic {topic!r} is not under {self.root!r}")
        scope, ident, leaf = parts[len(prefix) :]
        if scope == "dev" and leaf in DEVICE_LEAVES:
            return TopicRef("dev", check_id(ident), leaf)
        if scope == "grp" and leaf in GROUP_LEAVES:
            return TopicRef("grp", check_id(ident, "group id"), leaf)
        raise ProtocolError(f"topic {topic!r} is not a topic of the contract")
