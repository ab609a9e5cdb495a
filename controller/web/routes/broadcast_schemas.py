"""The JSON bodies of the broadcast API: targets, play, emergency and stop, and a broadcast.

The routes are controller/web/routes/broadcasts.py; the bulletin and schedule
APIs take the same targets and stream URLs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.radio.broadcast_reads import BroadcastInfo
from controller.radio.targets import Target
from protocol.topics import ID_PATTERN

ClipSha = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Label = Annotated[str, Field(max_length=200)]
StreamUrl = Annotated[str, Field(max_length=2048, pattern=r"^(https?|rtsp|rtmp)://[!-~]+$")]


class TargetIn(BaseModel):
    """A group of speakers (a village, a zone, "all") or one speaker."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["group", "device"]
    id: Annotated[str, Field(pattern=f"^{ID_PATTERN}$")]

    def target(self) -> Target:
        return Target(self.kind, self.id)


Targets = Annotated[list[TargetIn], Field(min_length=1, max_length=100)]


class PlayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: Targets
    clip_sha256: ClipSha | None = None
    stream_url: StreamUrl | None = None
    stream_duration_s: Annotated[int, Field(ge=1, le=86_400)] | None = None
    level: Literal["normal", "priority"] = Field(
        "normal", description="An emergency goes through POST /api/broadcasts/emergency"
    )
    label: Label = ""
    gain_db: Annotated[float, Field(ge=-60, le=20)] = 0.0
    repeat: Annotated[int, Field(ge=1, le=100)] = 1


class EmergencyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: Targets
    clip_sha256: ClipSha
    label: Label = ""
    confirm: Literal[True] = Field(description="Must be true: the explicit confirmation")


class StopIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: Targets
    level: Literal["normal", "priority", "emergency"] = Field(
        "emergency", description="Stop what plays at or below this level (all by default)"
    )


class AckOut(BaseModel):
    device: str
    ok: bool | None = Field(description="None: no answer yet")
    error: str | None
    detail: str | None
    acked_ms: int | None


class TargetOut(BaseModel):
    kind: str
    id: str


class BroadcastSentOut(BaseModel):
    """A broadcast and how many of its speakers answered; the answers themselves are on
    `GET /api/broadcasts/{id}` (what a send and the list return: small, whatever the
    fleet's size)."""

    id: str
    kind: Literal["play", "stream", "stop"]
    targets: list[TargetOut]
    level: str
    priority: int
    clip_sha256: str | None
    stream_url: str | None
    label: str
    at_ms: int | None = Field(description="The shared instant every speaker starts at")
    created_by: str
    created_ms: int
    status: Literal["sent", "acked", "partial", "refused"]
    reached: int = Field(description="Speakers the broadcast reached")
    answered: int = Field(description="Of them, how many answered so far")
    answered_ok: int = Field(description="Of those, how many accepted")

    @classmethod
    def fields_of(cls, info: BroadcastInfo) -> dict[str, Any]:
        return {
            "id": info.id,
            "kind": info.kind,
            "targets": [TargetOut(kind=t.kind, id=t.id) for t in info.targets],
            "level": info.level,
            "priority": info.priority,
            "clip_sha256": info.clip_sha256,
            "stream_url": info.stream_url,
            "label": info.label,
            "at_ms": info.at_ms,
            "created_by": info.created_by,
            "created_ms": info.created_ms,
            "status": info.status,
            "reached": info.reached,
            "answered": info.answered_count,
            "answered_ok": info.ok_count,
        }

    @classmethod
    def of(cls, info: BroadcastInfo) -> BroadcastSentOut:
        return cls(**cls.fields_of(info))


class BroadcastOut(BroadcastSentOut):
    """A broadcast with every reached speaker's answer."""

    acks: list[AckOut]

    @classmethod
    def of(cls, info: BroadcastInfo) -> BroadcastOut:
        return cls(**cls.fields_of(info), acks=[AckOut(**vars(a)) for a in info.acks])
