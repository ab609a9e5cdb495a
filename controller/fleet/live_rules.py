"""Pure rules of the live pages: what is on air, and what changed since the last look.

No I/O: the feed (controller/fleet/live.py) reads the rows and hands them here.
What a speaker is playing is told by its own play records, in the order it
made them: the latest of its ``play.started``, ``play.finished`` and
``play.interrupted`` says. A preempted item ends (``play.finished``) before
the emergency starts, and starts again when it resumes, so the latest record
is always the one on air. A speaker that is not online plays nothing we can
vouch for, whatever it last said.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from broadcast.levels import Level, level_of

PLAY_TYPES = ("play.started", "play.finished", "play.interrupted")
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class PlayMark:
    """One play record of one speaker; ``row`` (the event's row id) orders records of
    the same millisecond as they were stored, which is the order the device sent them."""

    device: str
    ts_ms: int
    row: int
    type: str
    key: str
    priority: int
    label: str

    @property
    def order(self) -> tuple[int, int]:
        return (self.ts_ms, self.row)

    @classmethod
    def of(
        cls, device: str, ts_ms: int, row: int, type_: str, body: Mapping[str, Any] | None
    ) -> PlayMark:
        """From a stored event; a body missing a field still orders (it is what was said)."""
        body = body or {}
        priority = body.get("priority")
        label = body.get("label")
        return cls(
            device=device,
            ts_ms=ts_ms,
            row=row,
            type=type_,
            key=str(body.get("key", "")),
            priority=priority if isinstance(priority, int) and 0 <= priority <= 9 else 0,
            label=label if isinstance(label, str) else "",
        )


@dataclass(frozen=True)
class OnAir:
    key: str
    label: str
    priority: int
    since_ms: int

    @property
    def level(self) -> str:
        """normal, priority or emergency (background plays count as normal)."""
        found = level_of(self.priority)
        return {Level.PRIORITY: "priority", Level.EMERGENCY: "emergency"}.get(found, "normal")


def fold_plays(latest: Mapping[str, PlayMark], marks: Iterable[PlayMark]) -> dict[str, PlayMark]:
    """Each speaker's latest play record, ``marks`` added (in any order, repeats welcome)."""
    folded = dict(latest)
    for mark in marks:
        held = folded.get(mark.device)
        if held is None or mark.order > held.order:
            folded[mark.device] = mark
    return folded


def on_air(latest: Mapping[str, PlayMark], online: Container[str]) -> dict[str, OnAir]:
    """What each online speaker is playing now, by its latest record."""
    return {
        device: OnAir(m.key, m.label, m.priority, m.ts_ms)
        for device, m in latest.items()
        if m.type == "play.started" and device in online
    }


def changes(before: Mapping[K, V], after: Mapping[K, V]) -> dict[K, V | None]:
    """What differs from ``before`` to ``after``; None for what is gone."""
    changed: dict[K, V | None] = {k: v for k, v in after.items() if before.get(k) != v}
    changed.update({k: None for k in before if k not in after})
    return changed
