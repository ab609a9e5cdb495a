"""What an edge sends up: status, acks, events and telemetry (PROTOCOL.md).

The controller validates everything it ingests with these Structs; the edge
builds its messages with them, so both sides agree by construction.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from protocol.commands import EpochMs, drop_none

U = TypeVar("U")

Role = Literal["speaker", "kiosk"]
ROLES: tuple[Role, ...] = ("speaker", "kiosk")
EventId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+\Z")]
Address = Annotated[str, Meta(max_length=64)]


class Open(msgspec.Struct):
    """Uplink messages accept unknown fields: newer agents may report more."""


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
    instance: Annotated[str, Meta(max_length=64)] = ""
    addresses: Annotated[list[Address], Meta(max_length=8)] = []
    thrown_off: Annotated[int, Meta(ge=0)] = 0  # sessions lost soon after connecting, lately


class Ack(Open, kw_only=True):
    cmd: str | None
    ok: bool
    error: str | None = None
    detail: str | None = None
    ts: EpochMs
    result: dict[str, Any] | None = None


class Event(Open):
    id: EventId
    type: Annotated[str, Meta(min_length=1, max_length=64)]
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
    network: NetworkState = msgspec.field(default_factory=NetworkState)
    clock: ClockState = msgspec.field(default_factory=ClockState)
    audio: dict[str, Any] | None = None
    amplifier: dict[str, Any] | None = None
    printer: dict[str, Any] | None = None
    office_queue: dict[str, Any] | None = None  # a kiosk sharing a queue (kiosk.shared_queue)
    hall_calls: dict[str, int] | None = None  # a hall speaker (kiosk.hall_calls)
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
    disk_free_pct: float | None = None  # reported by some agents, not ours (yet)


def uplink_json(msg: Open) -> bytes:
    """``msg`` as the edge publishes it: its fields that are not None."""
    return msgspec.json.encode(drop_none(msg))


def read_uplink(payload: bytes, model: type[U]) -> U:
    """An uplink message from its JSON, as lax as the uplink always was: numbers in
    text are numbers, and NaN or Infinity (which Python's json writes) are read, for
    the controller to store as null. Raises ``msgspec.ValidationError`` (not fitting)
    or ``msgspec.DecodeError`` (not JSON)."""
    try:
        return msgspec.json.decode(payload, type=model, strict=False)
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError:
        if b"NaN" not in payload and b"Infinity" not in payload:
            raise
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise msgspec.DecodeError(f"JSON is malformed: {exc}") from None
    return msgspec.convert(doc, model, strict=False)
