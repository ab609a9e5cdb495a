"""What an edge sends up: status, acks, events and telemetry (PROTOCOL.md).

The controller validates everything it ingests with these models; the edge
builds its messages with them, so both sides agree by construction.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.commands import EpochMs

Role = Literal["speaker", "kiosk"]
ROLES: tuple[Role, ...] = ("speaker", "kiosk")
EventId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Address = Annotated[str, Field(max_length=64)]


class Open(BaseModel):
    """Uplink models accept unknown fields: newer agents may report more."""

    model_config = ConfigDict(extra="allow")


class Status(Open):
    state: Literal["online", "offline"]
    ts: EpochMs
    agent: str = ""
    roles: list[Role] = []
    boot: EpochMs | None = None
    config_version: int = 0
    schedule_version: int = 0
    documents: dict[str, int] = {}
    # This run of the agent (random at each start) and where it connects from: two
    # runs taking turns under one identity are a cloned SD card (docs/broker-security.md).
    instance: Annotated[str, Field(max_length=64)] = ""
    addresses: Annotated[list[Address], Field(max_length=8)] = []
    thrown_off: Annotated[int, Field(ge=0)] = 0  # sessions lost soon after connecting, lately


class Ack(Open):
    cmd: str | None
    ok: bool
    error: str | None = None
    detail: str | None = None
    ts: EpochMs
    result: dict[str, Any] | None = None


class Event(Open):
    id: EventId
    type: Annotated[str, Field(min_length=1, max_length=64)]
    ts: EpochMs
    body: dict[str, Any] = {}  # read as its type's model with protocol.events.read_body


class ClockState(Open):
    synced: bool | Literal["unknown"] = "unknown"
    offset_ms: float | None = None
    source: str = "unknown"


class NetworkState(Open):
    iface: str | None = None
    signal_dbm: float | None = None


class Telemetry(Open):
    ts: EpochMs
    uptime_s: float
    agent_uptime_s: float = 0
    cpu_temp_c: float | None = None
    load1: float | None = None
    mem_used_pct: float | None = None
    disk_free_mb: float | None = None
    rss_mb: float | None = None
    cpu_pct: float | None = None
    network: NetworkState = NetworkState()
    clock: ClockState = ClockState()
    audio: dict[str, Any] | None = None
    amplifier: dict[str, Any] | None = None
    printer: dict[str, Any] | None = None
    config_version: int = 0
    schedule_version: int = 0
    documents: dict[str, int] = {}
    volume_pct: int | None = None
    clip_cache: dict[str, int] = {}
    outbox_len: int = 0
    outbox_awaiting: int = 0  # of outbox_len: with the broker, waiting for a receipt
    outbox_resent: int = 0  # rows sent again for want of a receipt, since the agent started
    refused: dict[str, int] = {}
    agent: str = ""
