"""A schedule entry as a broadcaster writes it, as it is stored, and what a publish sent.

The entries' service is controller.radio.scheduling; these are its values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from controller.db.broadcast_tables import ScheduleRow
from controller.radio.targets import Target
from protocol.commands import DEFAULT_TZ


class EntryInput(BaseModel):
    """A schedule entry as a broadcaster writes it; the wire schema checks the rest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_kind: Literal["group", "device"]
    target_id: str
    rrule: str
    dtstart: str  # local ISO date-time in tz
    until: str | None = None
    exdates: list[str] = []
    tz: str = DEFAULT_TZ
    level: Literal["normal", "priority", "emergency"] = "normal"
    priority: int | None = None  # within the level; its default otherwise
    clip_sha256: str | None = None
    stream_url: str | None = None
    stream_duration_s: int | None = None
    label: str = ""
    gain_db: float = 0.0
    lang: str = "vi"
    enabled: bool = True
    item_id: str | None = None  # the same id on a device replaces its group's item

    @property
    def target(self) -> Target:
        return Target(self.target_kind, self.target_id)


@dataclass(frozen=True)
class Entry:
    id: int
    item_id: str
    target: Target
    level: str
    priority: int
    label: str
    rrule: str
    dtstart: str
    until: str | None
    exdates: list[str]
    tz: str
    clip_sha256: str | None
    stream_url: str | None
    stream_duration_s: int | None
    gain_db: float
    lang: str
    enabled: bool
    version: int
    created_by: str
    updated_ms: int

    @classmethod
    def of(cls, row: ScheduleRow) -> Entry:
        return cls(
            row.id,
            row.item_id,
            Target(row.target_kind, row.target_id),  # type: ignore[arg-type]
            row.level,
            row.priority,
            row.label,
            row.rrule,
            row.dtstart,
            row.until,
            list(row.exdates),
            row.tz,
            row.clip_sha256,
            row.stream_url,
            row.stream_duration_s,
            row.gain_db,
            row.lang,
            row.enabled,
            row.version,
            row.created_by,
            row.updated_ms,
        )


@dataclass(frozen=True)
class Published:
    topic: str
    version: int
    envelope_id: str
    items: int

