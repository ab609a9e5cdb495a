"""Devices holding an older document than the controller sent, and which are due a resend.

Pure: no I/O, the time is an argument. The controller's database is the truth
for documents (docs/protocol.md): a retained copy can be lost (a broker
rebuilt, a cluster node that never had it), and a device that never got the
newest `config.set` or `schedule.set` says so in the versions it reports.
The dashboard shows what ``behind`` finds; the resender
(controller/radio/resends.py) sends what ``resend_plan`` says, and keeps one
``Memory`` per device so that it resends after a grace, then less and less
often, never in a storm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from protocol.errors import ProtocolError
from protocol.topics import TopicRef, Topics

Leaf = Literal["config", "schedule"]


@dataclass(frozen=True)
class Behind:
    """One document a device holds an older version of (``held`` 0: none at all)."""

    topic: str
    leaf: Leaf
    group: str | None  # the group whose schedule it is; None: the device's own document
    held: int
    current: int


@dataclass(frozen=True)
class DeviceDocuments:
    """What one registered device should hold, and what it last said it holds."""

    device_id: str
    expected: tuple[str, ...]  # expected_topics()
    held: Mapping[str, int]  # held_documents()
    state: str | None = None  # online | offline | None (never said)
    last_seen_ms: int | None = None  # controller clock


@dataclass(frozen=True)
class Memory:
    """The resender's record of a device found behind: since when, and resends so far."""

    since_ms: int
    resent_ms: int | None = None
    resends: int = 0


@dataclass(frozen=True)
class ResendPolicy:
    after_ms: int = 120_000  # seen behind this long: resend
    backoff_max_ms: int = 3_600_000  # the wait between resends doubles up to this
    offline_after_ms: int = 600_000  # silent this long: not online (as the dashboard says)

    def wait_ms(self, resends: int) -> int:
        """After ``resends`` resends (at least 1): after, 2 x after, 4 x after, ... capped."""
        return min(self.after_ms << min(resends - 1, 32), self.backoff_max_ms)


@dataclass
class Plan:
    """One pass: what to write to the memory, whom to resend to, and each topic once."""

    first_seen: list[str] = field(default_factory=list)  # start remembering (since now)
    due: dict[str, list[Behind]] = field(default_factory=dict)  # device: its documents
    forget: list[str] = field(default_factory=list)  # caught up, or no longer registered

    @property
    def topics(self) -> list[str]:
        """Every topic to resend, once however many devices are behind on it."""
        return sorted({b.topic for docs in self.due.values() for b in docs})


def expected_topics(topics: Topics, device_id: str, groups: Iterable[str]) -> tuple[str, ...]:
    """The documents a device subscribes to: its own config and schedule, its groups'."""
    own = (topics.dev(device_id, "config"), topics.dev(device_id, "schedule"))
    return own + tuple(topics.grp(g, "schedule") for g in sorted(groups))


def held_documents(
    status_documents: Any,
    status_ts_ms: int | None,
    telemetry_documents: Any,
    telemetry_ts_ms: int | None,
) -> dict[str, int]:
    """What the device holds by its newer report: the status (on every connect) or the
    latest telemetry sample (every 30 s); both are stamped by the device's one clock."""
    newer_telemetry = telemetry_ts_ms is not None and (
        status_ts_ms is None or telemetry_ts_ms >= status_ts_ms
    )
    found = telemetry_documents if newer_telemetry else status_documents
    if not isinstance(found, Mapping):  # an older agent's sample, or never reported
        found = status_documents if isinstance(status_documents, Mapping) else {}
    return {t: v for t, v in found.items() if isinstance(v, int) and not isinstance(v, bool)}


def behind(
    expected: Iterable[str], held: Mapping[str, int], published: Mapping[str, int]
) -> list[Behind]:
    """The expected documents whose last signed version (``published``, by topic) is
    above what the device holds."""
    found = []
    for topic in expected:
        current = published.get(topic)
        have = held.get(topic, 0)
        if current is None or have >= current:
            continue
        try:
            ref = TopicRef.of(topic)
        except ProtocolError:
            continue  # not a topic of the contract: nothing the device could hold
        leaf: Leaf = "config" if ref.leaf == "config" else "schedule"
        found.append(Behind(topic, leaf, ref.id if ref.scope == "grp" else None, have, current))
    return found


def is_online(device: DeviceDocuments, policy: ResendPolicy, now_ms: int) -> bool:
    """Said online (or nothing yet) and heard from recently: as the dashboard decides."""
    recent = device.last_seen_ms is not None and now_ms - device.last_seen_ms < (
        policy.offline_after_ms
    )
    return recent and device.state in ("online", None)


def resend_plan(
    devices: Iterable[DeviceDocuments],
    published: Mapping[str, int],
    memory: Mapping[str, Memory],
    policy: ResendPolicy,
    now_ms: int,
) -> Plan:
    """Who is behind and due a resend at ``now_ms``.

    A device is remembered the first time it is seen behind and is due once
    it has stayed behind ``after_ms``: a document just signed is on its way,
    and a device reports at a reconnect before the retained copies arrive.
    Then it is due again after ``wait_ms(resends)``, and only while online: an
    offline device gets the retained copy when it comes back, or is resent
    then. A device caught up, or no longer in ``devices``, is forgotten.
    """
    plan = Plan()
    seen = set()
    for device in devices:
        seen.add(device.device_id)
        lagging = behind(device.expected, device.held, published)
        known = memory.get(device.device_id)
        if not lagging:
            if known is not None:
                plan.forget.append(device.device_id)
            continue
        if not is_online(device, policy, now_ms):
            continue  # remembered as it was: it resumes when the device is back
        if known is None:
            plan.first_seen.append(device.device_id)
        elif known.resent_ms is None:
            if now_ms - known.since_ms >= policy.after_ms:
                plan.due[device.device_id] = lagging
        elif now_ms - known.resent_ms >= policy.wait_ms(known.resends):
            plan.due[device.device_id] = lagging
    plan.forget += sorted(set(memory) - seen)
    return plan
