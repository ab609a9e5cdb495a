""" "Play now", emergencies and stops: one signed command per target, with a shared `at`.

Every speaker of a broadcast gets the same ``at``, a lead time ahead of the
send, so the clip is fetched and decoded and all horns start together; the
lead is configurable because a 4G site fetches a clip slower than a LAN. A
group target is one publish on the group's command topic (the broker fans it
out). Each speaker the broadcast reaches gets a row that its ack fills in:
ingest's writer hands each batch of acks to ``record_acks_in``, in the
batch's own transaction, and ``wait_acks`` waits for the answers.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError
from sqlalchemy import bindparam, case, event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from broadcast.levels import DEFAULT_PRIORITY, level_of
from controller.db.broadcast_tables import BroadcastAckRow, BroadcastRow
from controller.radio.clip_library import ClipLibrary, Invalid, NotFound
from controller.radio.targets import LEVELS, Clock, Fleet, Target
from controller.site.directory import Site
from controller.site.documents import Publisher
from plumbing.clock import wall_ms
from protocol.commands import BroadcastPlay, BroadcastStop, BroadcastStream, Strict
from protocol.envelope import seal
from protocol.uplink import Ack

DEFAULT_LEAD_MS = 3_000
COMMAND_TTL_MS = 60_000  # after ``at``: a device that gets it later refuses it as expired
Level = Literal["normal", "priority", "emergency"]
# a row's kind and the command it sent; the technician's console sends the device.* ones
MSG_TYPES = {
    "play": "broadcast.play",
    "stream": "broadcast.stream",
    "stop": "broadcast.stop",
    "volume": "device.volume",
    "tone": "device.test_tone",
    "restart": "device.restart_agent",
}
BROADCAST_KINDS = ("play", "stream", "stop")


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
    acks: list[DeviceAck]

    @property
    def answered(self) -> bool:
        return all(a.ok is not None for a in self.acks)


def _status(total: int, answered: int, ok: int) -> str:
    if answered < total:
        return "sent"
    if ok == answered:
        return "acked"
    return "refused" if ok == 0 else "partial"


_RECORD_ACK = (
    update(BroadcastAckRow)
    .where(
        BroadcastAckRow.broadcast_id == bindparam("b_id"),
        BroadcastAckRow.device == bindparam("b_device"),
    )
    .values(
        ok=bindparam("b_ok"),
        error=bindparam("b_error"),
        detail=bindparam("b_detail"),
        acked_ms=bindparam("b_ts"),
    )
)
_SET_STATUS = (
    update(BroadcastRow)
    .where(BroadcastRow.id == bindparam("b_id"))
    .values(status=bindparam("b_status"))
)


class Broadcasting:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        site: Site,
        library: ClipLibrary,
        publisher: Publisher,
        *,
        clip_base_url: str,
        lead_ms: int = DEFAULT_LEAD_MS,
        clock: Clock = wall_ms,
    ) -> None:
        self.sessions = sessions
        self.fleet = Fleet(site)
        self.site = site
        self.library = library
        self.publisher = publisher
        self.clip_base_url = clip_base_url
        self.lead_ms = lead_ms
        self.clock = clock
        self._answered = threading.Condition()

    def play_now(
        self,
        targets: Sequence[Target],
        *,
        by: str,
        clip_sha256: str | None = None,
        stream_url: str | None = None,
        stream_duration_s: int | None = None,
        level: Level = "normal",
        label: str = "",
        gain_db: float = 0.0,
        repeat: int = 1,
        lead_ms: int | None = None,
    ) -> BroadcastInfo:
        """Play a clip (or relay a stream) on every speaker of ``targets`` at one instant."""
        if (clip_sha256 is None) == (stream_url is None):
            raise Invalid(
                "bad_source",
                "Chọn đúng một nguồn: tệp âm thanh hoặc luồng phát",
                "Give exactly one source: a clip or a stream",
            )
        if level not in LEVELS:
            raise Invalid("bad_level", f"Mức {level!r} không hợp lệ", f"Unknown level {level!r}")
        now = self.clock()
        at = now + (self.lead_ms if lead_ms is None else lead_ms)
        priority = DEFAULT_PRIORITY[LEVELS[level]]
        body: Strict
        try:
            if clip_sha256 is not None:
                clip = self.library.ref(clip_sha256, self.clip_base_url)
                body = BroadcastPlay(
                    clip=clip, priority=priority, gain_db=gain_db, repeat=repeat, at=at, label=label
                )
                kind = "play"
            else:
                body = BroadcastStream.model_validate(
                    {
                        "url": stream_url,
                        "duration_s": stream_duration_s,
                        "priority": priority,
                        "gain_db": gain_db,
                        "at": at,
                        "label": label,
                    }
                )
                kind = "stream"
        except NotFound as exc:
            raise Invalid("unknown_clip", exc.message_vi, exc.message_en) from None
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise Invalid(
                "bad_broadcast",
                f"Lệnh phát không hợp lệ ({where}): {err['msg']}",
                f"Invalid broadcast ({where}): {err['msg']}",
            ) from None
        return self._send(
            kind,
            targets,
            body,
            by=by,
            level=level,
            clip_sha256=clip_sha256,
            stream_url=stream_url,
            label=label,
            at=at,
            now=now,
            ttl_ms=at - now + COMMAND_TTL_MS,
        )

    def emergency(
        self, targets: Sequence[Target], clip_sha256: str, *, by: str, label: str = ""
    ) -> BroadcastInfo:
        """Khẩn cấp: interrupts whatever plays and ignores quiet hours (Circular 39)."""
        return self.play_now(
            targets, by=by, clip_sha256=clip_sha256, level="emergency", label=label
        )

    def stop(
        self, targets: Sequence[Target], *, by: str, level: Level = "emergency"
    ) -> BroadcastInfo:
        """Stop what plays at or below ``level`` (all of it by default)."""
        if level not in LEVELS:
            raise Invalid("bad_level", f"Mức {level!r} không hợp lệ", f"Unknown level {level!r}")
        priority_max = max(p for p in range(10) if level_of(p) <= LEVELS[level])
        body = BroadcastStop(priority_max=priority_max)
        return self._send(
            "stop",
            targets,
            body,
            by=by,
            level=level,
            now=self.clock(),
            ttl_ms=COMMAND_TTL_MS,
            priority=priority_max,
        )

    def device_command(
        self, kind: str, targets: Sequence[Target], body: Strict, *, by: str, priority: int = 0
    ) -> BroadcastInfo:
        """A device.* command (volume, test tone, restart) to speakers, its acks kept as a
        broadcast's are, so the console shows them the same way."""
        return self._send(
            kind, targets, body, by=by, level="normal", now=self.clock(),
            ttl_ms=COMMAND_TTL_MS, priority=priority,
        )  # fmt: skip

    def _send(
        self,
        kind: str,
        targets: Sequence[Target],
        body: Strict,
        *,
        by: str,
        level: str,
        now: int,
        ttl_ms: int,
        clip_sha256: str | None = None,
        stream_url: str | None = None,
        label: str = "",
        at: int | None = None,
        priority: int | None = None,
    ) -> BroadcastInfo:
        if not targets:
            raise Invalid("no_target", "Chưa chọn nơi phát", "No target chosen")
        devices = sorted({d for t in targets for d in self.fleet.members(t)})
        command_id = uuid.uuid4().hex
        # one envelope per target topic, all with one id: each names the topic it is
        # signed for, and a speaker in two targeted groups refuses the second as a replay
        payloads = {
            topic: seal(
                MSG_TYPES[kind],
                body,
                self.site.signing_key(),
                now,
                to=topic,
                ttl_ms=ttl_ms,
                cmd_id=command_id,
            )
            for topic in dict.fromkeys(t.topic(self.fleet.topics, "cmd") for t in targets)
        }
        with self.sessions.begin() as session:
            session.add(
                BroadcastRow(
                    id=command_id,
                    kind=kind,
                    targets=[{"kind": t.kind, "id": t.id} for t in targets],
                    level=level,
                    priority=priority if priority is not None else DEFAULT_PRIORITY[LEVELS[level]],
                    clip_sha256=clip_sha256,
                    stream_url=stream_url,
                    label=label,
                    at_ms=at,
                    created_by=by,
                    created_ms=now,
                    status="sent",
                )
            )
            session.flush()  # the broadcast before its acks (PostgreSQL checks the key at once)
            session.add_all(BroadcastAckRow(broadcast_id=command_id, device=d) for d in devices)
        # the rows first: an ack may come back before publish() returns
        for topic, payload in payloads.items():
            self.publisher.publish(topic, payload, qos=1)
        return self.get(command_id)

    def record_acks_in(self, session: Session, acks: Sequence[tuple[str, Ack]]) -> None:
        """Store the answers to broadcasts among ``acks`` (device, ack) in ``session``.

        Ingest's writer calls it in each batch's transaction, so a thousand acks
        cost a few statements, not a transaction each: one UPDATE for all of
        them, then each touched broadcast's status from counts. The broadcasts
        are locked first (in id order): a replica recording acks of the same
        broadcast waits, then counts ours too. Acks of other commands, and a
        device's ``replay`` refusal of a copy it already got (it was in two
        targeted groups), say nothing new and are ignored.
        """
        latest = {
            (ack.cmd, device): ack
            for device, ack in acks
            if ack.cmd is not None and ack.error != "replay"
        }
        if not latest:
            return
        touched = session.scalars(
            select(BroadcastRow.id)
            .where(BroadcastRow.id.in_(sorted({cmd for cmd, _device in latest})))
            .order_by(BroadcastRow.id)
            .with_for_update()
        ).all()
        if not touched:
            return
        ours = set(touched)
        answers = [
            {"b_id": cmd, "b_device": device, "b_ok": a.ok, "b_error": a.error,
             "b_detail": a.detail, "b_ts": a.ts}
            for (cmd, device), a in latest.items()
            if cmd in ours
        ]  # fmt: skip
        conn = session.connection()
        conn.execute(_RECORD_ACK, answers)
        counts = conn.execute(
            select(
                BroadcastAckRow.broadcast_id,
                func.count(),
                func.count(BroadcastAckRow.ok),
                func.coalesce(func.sum(case((BroadcastAckRow.ok.is_(True), 1), else_=0)), 0),
            )
            .where(BroadcastAckRow.broadcast_id.in_(touched))
            .group_by(BroadcastAckRow.broadcast_id)
        ).all()
        statuses = [
            {"b_id": b, "b_status": _status(n, answered, ok)} for b, n, answered, ok in counts
        ]
        if statuses:  # none for a broadcast that reached no speaker
            conn.execute(_SET_STATUS, statuses)
        event.listen(session, "after_commit", self._wake, once=True)

    def _wake(self, _session: Session) -> None:
        """After the commit: the waiters of this process read the acks at once."""
        with self._answered:
            self._answered.notify_all()

    def wait_acks(self, broadcast_id: str, timeout_s: float) -> BroadcastInfo:
        """The broadcast once every device answered, or as it stands at the timeout.

        Acks recorded by another process are seen too: the database is read
        again every half second.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.get(broadcast_id)
            left = deadline - time.monotonic()
            if info.answered or left <= 0:
                return info
            with self._answered:
                self._answered.wait(min(left, 0.5))

    def get(self, broadcast_id: str) -> BroadcastInfo:
        with self.sessions() as session:
            row = session.get(BroadcastRow, broadcast_id)
            if row is None:
                raise NotFound(
                    "broadcast_not_found",
                    f"Không có lệnh phát {broadcast_id}",
                    f"No broadcast {broadcast_id}",
                )
            acks = session.scalars(
                select(BroadcastAckRow)
                .where(BroadcastAckRow.broadcast_id == broadcast_id)
                .order_by(BroadcastAckRow.device)
            ).all()
            return _info(row, acks)

    def recent(
        self, limit: int = 50, kinds: Sequence[str] = BROADCAST_KINDS
    ) -> list[BroadcastInfo]:
        with self.sessions() as session:
            rows = session.scalars(
                select(BroadcastRow)
                .where(BroadcastRow.kind.in_(kinds))
                .order_by(BroadcastRow.created_ms.desc())
                .limit(limit)
            ).all()
            return [self.get(row.id) for row in rows]


def _info(row: BroadcastRow, acks: Sequence[BroadcastAckRow]) -> BroadcastInfo:
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
        acks=[DeviceAck(a.device, a.ok, a.error, a.detail, a.acked_ms) for a in acks],
    )
