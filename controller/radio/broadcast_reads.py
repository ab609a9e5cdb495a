"""What a broadcast looks like when read back: its row, the speakers it reached and their
answers, in one snapshot and in a few statements whatever the number of rows.

Kept apart from controller/radio/broadcasting.py (the sends and the acks' counts) so
that reading stays a few statements: a province's broadcast reaches 20,000 speakers,
and a commune that sees it reads only its own few dozen, picked out in SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from controller.db.broadcast_tables import BroadcastAckRow, BroadcastCommuneRow, BroadcastRow
from controller.radio.targets import Target


@dataclass(frozen=True)
class DeviceAck:
    device: str
    ok: bool | None  # None: no answer yet
    error: str | None
    detail: str | None
    acked_ms: int | None


@dataclass(frozen=True)
class BroadcastInfo:
    id: str
    kind: str
    targets: list[Target]
    level: str
    priority: int
    clip_sha256: str | None
    stream_url: str | None
    label: str
    at_ms: int | None
    created_by: str
    created_ms: int
    status: str  # sent | acked | refused | partial
    acks: list[DeviceAck]  # one per speaker reached, by device id
    answered_count: int
    ok_count: int
    commune: str | None = None  # the commune it was made for; None: the province
    communes: tuple[str, ...] = ()  # the communes whose speakers it reached

    @property
    def reached(self) -> int:
        return len(self.acks)

    @property
    def answered(self) -> bool:
        return self.answered_count >= self.reached


def status_of(total: int, answered: int, ok: int) -> str:
    if answered < total:
        return "sent"
    if ok == answered:
        return "acked"
    return "refused" if ok == 0 else "partial"


def one_snapshot(session: Session) -> None:
    """Let the session's next reads see one snapshot (call it first): REPEATABLE READ on
    PostgreSQL, whose READ COMMITTED gives each statement its own; on SQLite a BEGIN,
    which Python's sqlite3 leaves out before a SELECT (each read its own, otherwise)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    else:
        session.connection().exec_driver_sql("BEGIN")


def infos(
    session: Session, rows: Sequence[BroadcastRow], only: set[str] | None = None
) -> list[BroadcastInfo]:
    """The broadcasts with their acks and reached communes: three statements whatever the
    number of rows, the acks as plain columns (a province's broadcast has thousands);
    ``only``: of those devices only, the ones each reached picked out in SQL (a fourth
    statement), so the rows may leave their ``devices`` unloaded."""
    ids = [row.id for row in rows]
    acks: dict[str, dict[str, DeviceAck]] = {i: {} for i in ids}
    a = BroadcastAckRow
    cols = select(a.broadcast_id, a.device, a.ok, a.error, a.detail, a.acked_ms).where(
        a.broadcast_id.in_(ids)
    )
    if only is not None:
        cols = cols.where(a.device.in_(sorted(only)))
    for bid, device, ok, error, detail, at in session.execute(cols):
        acks[bid][device] = DeviceAck(device, ok, error, detail, at)
    reached: dict[str, list[str]] = {i: [] for i in ids}
    for bid, commune in session.execute(
        select(BroadcastCommuneRow.broadcast_id, BroadcastCommuneRow.commune)
        .where(BroadcastCommuneRow.broadcast_id.in_(ids))
        .order_by(BroadcastCommuneRow.commune)
    ):
        reached[bid].append(commune)
    among = None if only is None else reached_among(session, ids, only)
    return [
        replace(
            _info(row, acks[row.id], row.devices if among is None else among[row.id]),
            communes=tuple(reached[row.id]),
        )
        for row in rows
    ]


def reached_among(session: Session, ids: Sequence[str], devices: set[str]) -> dict[str, list[str]]:
    """Which of ``devices`` each broadcast reached, by id: its ``devices`` list is
    unnested and matched in SQL, not read whole (20,000 ids for a few dozen)."""
    b = BroadcastRow
    if session.get_bind().dialect.name == "postgresql":
        each = func.json_array_elements_text(b.devices).table_valued("value").lateral()
    else:
        each = func.json_each(b.devices).table_valued("value")
    query = (
        select(b.id, each.c.value)
        .join_from(b, each, true())
        .where(b.id.in_(ids), each.c.value.in_(sorted(devices)))
    )
    found: dict[str, list[str]] = {i: [] for i in ids}
    for bid, device in session.execute(query):
        found[bid].append(device)
    return {bid: sorted(reached) for bid, reached in found.items()}


def info_of(row: BroadcastRow, acks: dict[str, DeviceAck]) -> BroadcastInfo:
    """A broadcast as sent: its row and the answers so far."""
    return _info(row, acks, row.devices)


def _info(row: BroadcastRow, acks: dict[str, DeviceAck], devices: Sequence[str]) -> BroadcastInfo:
    """The broadcast, one answer per device of ``devices`` (a device with no row: none
    yet)."""
    return BroadcastInfo(
        id=row.id,
        kind=row.kind,
        targets=[Target(t["kind"], t["id"]) for t in row.targets],
        level=row.level,
        priority=row.priority,
        clip_sha256=row.clip_sha256,
        stream_url=row.stream_url,
        label=row.label,
        at_ms=row.at_ms,
        created_by=row.created_by,
        created_ms=row.created_ms,
        status=row.status,
        acks=[acks.get(d) or DeviceAck(d, None, None, None, None) for d in devices],
        answered_count=row.answered,
        ok_count=row.answered_ok,
        commune=row.commune,
    )
