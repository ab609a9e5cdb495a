"""Duplicate identity: two agents taking turns under one device's credentials.

A cloned SD card starts a second agent with the first one's identity. The
broker lets one session per client id live, so the two throw each other off
and each says ``online`` again on every return. Each run of an agent has its
own random ``instance`` (protocol.uplink.Status): a restart shows a new
instance once, and the old one never comes back; a clone shows an instance
coming back after another one came online. Pure: no I/O, the time is an
argument. The sightings are kept on the device's state row (ingest_writes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.fleet.alert_rules import IDENTITY_DUPLICATE, MINUTE_MS, AlertSpec

WINDOW_MIN = 120.0  # how long a return still counts; a clone that went away clears after it
KEEP = 16  # sightings kept per device: enough for several rounds of two clones


@dataclass(frozen=True)
class Sighting:
    """One ``online`` status: which run of the agent, from where, when it came (controller
    clock) and when it was said (the status's own ``ts``: the order the runs spoke in, the
    same for every replica, whatever order a replica catching up receives them in)."""

    instance: str
    addresses: tuple[str, ...]
    received_ms: int
    said_ms: int = 0  # 0: kept before the status's ts was

    @property
    def order(self) -> int:
        return self.said_ms or self.received_ms

    def as_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "addresses": list(self.addresses),
            "ms": self.received_ms,
            "ts": self.said_ms,
        }

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Sighting:
        addresses = tuple(map(str, row.get("addresses", ())))
        return cls(str(row["instance"]), addresses, int(row["ms"]), int(row.get("ts", 0)))


def remember(kept: Sequence[Sighting], seen: Sighting) -> list[Sighting]:
    """The newest KEEP sightings with ``seen`` appended, unless it is one already kept (a
    redelivered status: every replica reads every status, and QoS 1 may bring it twice)."""
    if seen.said_ms and any((k.instance, k.said_ms) == (seen.instance, seen.said_ms) for k in kept):
        return list(kept)
    return [*kept, seen][-KEEP:]


def duplicate_identity(
    device_id: str, sightings: Iterable[Sighting], now_ms: int, window_min: float = WINDOW_MIN
) -> AlertSpec | None:
    """The alert when, within the window, a run came back online after another run did."""
    recent = sorted(
        (s for s in sightings if now_ms - s.received_ms <= window_min * MINUTE_MS),
        key=lambda s: s.order,
    )
    latest: dict[str, Sighting] = {}
    pair: tuple[Sighting, Sighting] | None = None
    previous: Sighting | None = None
    for sighting in recent:
        back = sighting.instance in latest
        if back and previous is not None and previous.instance != sighting.instance:
            pair = (sighting, previous)  # came back after another run came online
        latest[sighting.instance] = sighting
        previous = sighting
    if pair is None:
        return None
    first, second = (latest[pair[0].instance], latest[pair[1].instance])
    where = [_where(first), _where(second)]
    return AlertSpec(
        IDENTITY_DUPLICATE,
        device_id,
        "critical",
        f"Hai máy đang dùng chung danh tính {device_id} (từ {where[0]} và {where[1]}), có thể "
        "do sao chép thẻ nhớ: tắt một máy và cấp cho nó danh tính riêng",
        f"Two machines are using the identity of {device_id} (from {where[0]} and {where[1]}), "
        "probably a cloned SD card: turn one off and give it its own identity",
        {
            "instances": [first.instance, second.instance],
            "addresses": [list(first.addresses), list(second.addresses)],
        },
    )


def _where(sighting: Sighting) -> str:
    return ", ".join(sighting.addresses) or f"?{sighting.instance[:6]}"
