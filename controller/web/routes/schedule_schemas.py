"""The JSON bodies of the schedule API: an entry in and out, the calendar's plans, a preview.

The routes are controller/web/routes/schedules.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.radio.clip_library import Invalid
from controller.radio.schedule_calendar import DevicePlan
from controller.radio.schedule_entries import Entry, EntryInput
from controller.web.routes.broadcast_schemas import StreamUrl, TargetIn
from protocol.topics import ID_PATTERN

LocalTime = Annotated[str, Field(min_length=10, max_length=32)]


class EntryIn(BaseModel):
    """A schedule entry: what, where, at which level, and when (RFC 5545 in local time).

    Where: ``target``, or several in ``targets`` (both may be given). When: the
    rule from ``dtstart``, at each of ``times`` (local "HH:MM") if given, each a
    wire item ``<item_id>-<HHMM>``; without ``times`` at the time of ``dtstart``.
    """

    model_config = ConfigDict(extra="forbid")

    target: TargetIn | None = None
    targets: Annotated[list[TargetIn], Field(max_length=1000)] = []
    times: Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=1000)] = Field(
        [], examples=[["06:30", "17:00"]]
    )
    rrule: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        examples=["FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR"]
    )
    dtstart: LocalTime = Field(examples=["2026-12-01T06:30:00"])
    until: LocalTime | None = None
    exdates: Annotated[list[LocalTime], Field(max_length=1000)] = []
    tz: Annotated[str, Field(min_length=1, max_length=64)] = "Asia/Ho_Chi_Minh"
    level: Literal["normal", "priority", "emergency"] = "normal"
    priority: Annotated[int, Field(ge=0, le=9)] | None = None
    clip_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    stream_url: StreamUrl | None = None
    stream_duration_s: Annotated[int, Field(ge=1, le=86_400)] | None = None
    station_id: Annotated[int, Field(strict=True, ge=1, le=2**31 - 1)] | None = Field(
        None, description="Relay this station (GET /api/stations) for stream_duration_s"
    )
    label: Annotated[str, Field(max_length=200)] = ""
    gain_db: Annotated[float, Field(ge=-60, le=20)] = 0.0
    lang: Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")] = "vi"
    enabled: bool = True
    item_id: Annotated[str, Field(pattern=f"^{ID_PATTERN}$")] | None = None

    def to_input(self) -> EntryInput:
        """The entry for the services; no target at all is refused in the user's words."""
        chosen = list(
            dict.fromkeys(
                t.target() for t in [*([self.target] if self.target else []), *self.targets]
            )
        )
        if not chosen:
            raise Invalid(
                "no_target",
                "Chọn ít nhất một nơi phát (một nhóm, «Toàn xã» hoặc một cụm loa)",
                "Choose at least one target (a group, the whole commune or a speaker)",
            )
        fields = self.model_dump(exclude={"target", "targets"})
        first = chosen[0]
        return EntryInput(
            target_kind=first.kind, target_id=first.id, more_targets=chosen[1:], **fields
        )


class EntryUpdate(EntryIn):
    expected_version: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Refuse (409) if someone changed the entry since this version"
    )


class EntryOut(BaseModel):
    id: int
    item_id: str
    target: TargetIn
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
    station_id: int | None
    gain_db: float
    lang: str
    enabled: bool
    version: int
    created_by: str
    updated_ms: int
    approval: Literal["approved", "pending", "rejected"] = Field(
        description="Only an approved entry is sent to the speakers (approval before air)"
    )
    times: list[str]
    targets: list[TargetIn] = Field(description="Every target; `target` is the first")

    @classmethod
    def of(cls, e: Entry) -> EntryOut:
        data = {k: v for k, v in vars(e).items() if k not in ("target", "targets")}
        every = [TargetIn(kind=t.kind, id=t.id) for t in e.targets]
        return cls(target=every[0], targets=every, **data)


class RowOut(BaseModel):
    device: str
    key: str
    item_id: str
    label: str
    source: str
    level: str
    priority: int
    planned_start_ms: int
    planned_end_ms: int
    outcome: Literal["completed", "preempted", "missed"]
    start_ms: int | None
    end_ms: int | None
    reason: str | None
    preempted_by: str | None
    clip_sha256: str | None
    offset_ms: int = Field(
        description="Joined late: how much of its beginning is skipped, so it ends on time"
    )
    conflicted: bool


class PlanOut(BaseModel):
    device: str
    rows: list[RowOut]
    violations: list[str] = Field(description="Local broadcasting rules broken")

    @classmethod
    def of(cls, plan: DevicePlan) -> PlanOut:
        rows = [RowOut(**vars(r), conflicted=r.conflicted) for r in plan.rows]
        return cls(device=plan.device, rows=rows, violations=plan.violations)


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entry: EntryIn
    start: dt.date
    days: Annotated[int, Field(ge=1, le=31)] = 7
