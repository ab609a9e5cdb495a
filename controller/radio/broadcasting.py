""" "Play now", emergencies and stops: one signed command per target, with a shared `at`.

Every speaker of a broadcast gets the same ``at``, a lead time ahead of the
send, so the clip is fetched and decoded and all horns start together; the
lead is configurable because a 4G site fetches a clip slower than a LAN. A
group target is one publish on the group's command topic (the broker fans it
out). The send writes one row (the broadcast, the speakers it reaches, their
answers counted so far) and then publishes: nothing per device stands
between an emergency and its speakers. Each ack makes its device's row:
ingest's writer hands each batch of acks to ``record_acks_in``, in the
batch's own transaction, which adds them to the counts; ``wait_acks`` waits
for the answers.

Communes (controller/auth/tenancy.py): each send takes the ``commune`` its
author acts within (None: the province). A commune's targets must reach its
own speakers only; the row records the commune; a commune's emergency goes
one priority below the province's and its stop is capped below it, so a
province emergency plays through; a commune's stop while one is on air on
its speakers is refused.

Approval (controller.radio.approval_gate): with the commune's approval on, a
play-now whose author may not approve is kept whole as ``Held`` and sent only
when a leader approves it; an emergency is sent at once and flagged for review.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import msgspec
from sqlalchemy import bindparam, event, or_, select, update
from sqlalchemy.orm import Session, defer, sessionmaker

from broadcast.levels import DEFAULT_PRIORITY, level_of
from controller.auth import tenancy
from controller.db.broadcast_tables import (
    BroadcastAckRow,
    BroadcastCommuneRow,
    BroadcastRow,
    ClipRow,
)
from controller.db.fleet_tables import dialect_insert
from controller.radio.approval_gate import ApprovalGate, Ruling, ruling
from controller.radio.broadcast_reads import (
    BroadcastInfo,
    info_of,
    infos,
    one_snapshot,
    status_of,
)
from controller.radio.clip_library import ClipLibrary, Invalid, NotFound, OutOfScope
from controller.radio.targets import LEVELS, Clock, Fleet, Target
from controller.site.directory import Site
from controller.site.documents import Publisher
from plumbing.clock import wall_ms
from plumbing.validation import Faults, convert
from protocol.commands import (
    BroadcastPlay,
    BroadcastStop,
    BroadcastStream,
    StreamRef,
    Strict,
    checked,
)
from protocol.envelope import seal
from protocol.uplink import Ack

DEFAULT_LEAD_MS = 3_000
COMMAND_TTL_MS = 60_000  # after ``at``: a device that gets it later refuses it as expired
# how far back a commune's stop looks for a province emergency still on air (a clip of
# unknown length counts as on air that long)
ON_AIR_LOOKBACK_MS = 2 * 3_600_000
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
class Held:
    """A play-now that waits for a leader's approval; nothing was sent."""

    approval_id: int
    label: str
    targets: list[Target]


_SET_COUNTS = (
    update(BroadcastRow)
    .where(BroadcastRow.id == bindparam("b_id"))
    .values(
        answered=bindparam("b_answered"),
        answered_ok=bindparam("b_ok"),
        status=bindparam("b_status"),
    )
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
        gate: ApprovalGate | None = None,
        clock: Clock = wall_ms,
    ) -> None:
        self.sessions = sessions
        self.fleet = Fleet(site)
        self.site = site
        self.library = library
        self.publisher = publisher
        self.clip_base_url = clip_base_url
        self.lead_ms = lead_ms
        self.gate = gate
        self.clock = clock
        self._answered = threading.Condition()
        # told of each relay sent (its stream, start, speakers, priority): the station
        # pulls hold its mount; and of each stop (its speakers, the priority it cuts up
        # to): they let go of a relay it cut on every speaker
        self.on_relay: Callable[[StreamRef, int, frozenset[str], int], None] = (
            lambda stream, at_ms, devices, priority: None
        )
        self.on_stop: Callable[[frozenset[str], int], None] = lambda devices, priority: None

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
        device_auth: bool = False,
        approved: bool = False,
        commune: str | None = None,
    ) -> BroadcastInfo | Held:
        """Play a clip (or relay a stream) on every speaker of ``targets`` at one instant.

        Unless ``approved`` (its author may approve, it came from above, or a leader
        approved it), the approval gate may hold it back: then nothing is sent.
        ``commune``: the one its author acts within (None: the province)."""
        request = {
            "targets": [{"kind": t.kind, "id": t.id} for t in targets],
            "clip_sha256": clip_sha256, "stream_url": stream_url,
            "stream_duration_s": stream_duration_s, "level": level, "label": label,
            "gain_db": gain_db, "repeat": repeat, "device_auth": device_auth,
        }  # fmt: skip
        if commune is not None:
            request["commune"] = commune
            for target in targets:
                self.fleet.members_within(target, commune)
        decision = Ruling.AIR
        if self.gate is not None:
            required = self.gate.required(commune=commune)
            decision = ruling(required=required, level=level, approved=approved)
        if decision is Ruling.HOLD and self.gate is not None:
            self._command(request, at=self.clock())  # bad input is refused, not kept
            if not targets:
                raise Invalid("no_target", "Chưa chọn nơi phát", "No target chosen")
            for target in targets:
                self.fleet.members(target)
            with self.sessions.begin() as session:
                row = self.gate.hold_play(
                    session, by=by, label=label, targets=targets, request=request,
                    commune=commune,
                )  # fmt: skip
                return Held(row.id, label, list(targets))
        info = self._play(request, by=by, lead_ms=lead_ms)
        if decision is Ruling.REVIEW and self.gate is not None:
            with self.sessions.begin() as session:
                self.gate.flag_emergency(
                    session, by=by, label=label, targets=targets, broadcast_id=info.id,
                    commune=commune,
                )  # fmt: skip
        return info

    def send_approved(self, request: dict[str, Any], *, by: str) -> BroadcastInfo:
        """A held play-now or relay, once a leader approved it: sent now, in its author's
        name."""
        if "relay" in request:
            relay = request["relay"]
            sent = self.relay_now(
                [Target(t["kind"], t["id"]) for t in request["targets"]],
                convert(relay["stream"], StreamRef),
                by=by,
                level=relay["level"],
                label=relay["label"],
                approved=True,
                commune=request.get("commune"),
            )
            assert isinstance(sent, BroadcastInfo)  # approved: never held
            return sent
        return self._play(request, by=by)

    def _play(
        self, request: dict[str, Any], *, by: str, lead_ms: int | None = None
    ) -> BroadcastInfo:
        now = self.clock()
        at = now + (self.lead_ms if lead_ms is None else lead_ms)
        kind, body = self._command(request, at=at)
        commune = request.get("commune")
        return self._send(
            kind,
            [Target(t["kind"], t["id"]) for t in request["targets"]],
            body,
            by=by,
            level=request["level"],
            clip_sha256=request["clip_sha256"],
            stream_url=request["stream_url"],
            label=request["label"],
            at=at,
            now=now,
            ttl_ms=at - now + COMMAND_TTL_MS,
            commune=commune,
        )

    def _command(self, request: dict[str, Any], *, at: int) -> tuple[str, Strict]:
        """The command a play-now request sends, checked by the wire schema."""
        clip_sha256, stream_url = request["clip_sha256"], request["stream_url"]
        level, label, gain_db = request["level"], request["label"], request["gain_db"]
        if (clip_sha256 is None) == (stream_url is None):
            raise Invalid(
                "bad_source",
                "Chọn đúng một nguồn: tệp âm thanh hoặc luồng phát",
                "Give exactly one source: a clip or a stream",
            )
        if level not in LEVELS:
            raise Invalid("bad_level", f"Mức {level!r} không hợp lệ", f"Unknown level {level!r}")
        priority = DEFAULT_PRIORITY[LEVELS[level]]
        if level == "emergency":
            priority = tenancy.emergency_priority(request.get("commune"))
        body: Strict
        try:
            if clip_sha256 is not None:
                clip = self.library.ref(clip_sha256, self.clip_base_url)
                body = checked(
                    BroadcastPlay(
                        clip=clip,
                        priority=priority,
                        gain_db=gain_db,
                        repeat=request["repeat"],
                        at=at,
                        label=label,
                    )
                )
                kind = "play"
            else:
                body = convert(
                    {
                        "url": stream_url,
                        "duration_s": request["stream_duration_s"],
                        "priority": priority,
                        "gain_db": gain_db,
                        "at": at,
                        "label": label,
                        "device_auth": request.get("device_auth", False),
                    },
                    BroadcastStream,
                )
                kind = "stream"
        except NotFound as exc:
            raise Invalid("unknown_clip", exc.message_vi, exc.message_en) from None
        except Faults as exc:
            first = exc.problems[0]
            where = ".".join(str(p) for p in first.loc)
            raise Invalid(
                "bad_broadcast",
                f"Lệnh phát không hợp lệ ({where}): {first.msg}",
                f"Invalid broadcast ({where}): {first.msg}",
            ) from None
        return kind, body

    def relay_now(
        self,
        targets: Sequence[Target],
        stream: StreamRef,
        *,
        by: str,
        level: Level,
        label: str,
        lead_ms: int | None = None,
        approved: bool = False,
        commune: str | None = None,
    ) -> BroadcastInfo | Held:
        """Relay a station's stream (controller.radio.relay_stations) on every speaker of
        ``targets`` from one instant, its fallback clip with it.

        A station's URL is anyone's to type in, so a relay owes approval as a play-now
        does: held whole, it starts when a leader approves it, for its full length.
        ``commune``: its author's, whose speakers only it may reach and whose approval
        setting holds it."""
        if level not in ("normal", "priority"):
            raise Invalid("bad_level", f"Mức {level!r} không hợp lệ", f"Unknown level {level!r}")
        if commune is not None:
            for target in targets:
                self.fleet.members_within(target, commune)
        if self.gate is not None and not approved:
            required = self.gate.required(commune=commune)
            decision = ruling(required=required, level=level, approved=approved)
            if decision is Ruling.HOLD:
                if not targets:
                    raise Invalid("no_target", "Chưa chọn nơi phát", "No target chosen")
                for target in targets:
                    self.fleet.members(target)
                request = {
                    "targets": [{"kind": t.kind, "id": t.id} for t in targets],
                    "relay": {"stream": msgspec.to_builtins(stream), "level": level,
                              "label": label},
                }  # fmt: skip
                if commune is not None:
                    request["commune"] = commune
                with self.sessions.begin() as session:
                    row = self.gate.hold_play(
                        session, by=by, label=label, targets=targets, request=request,
                        commune=commune,
                    )  # fmt: skip
                    return Held(row.id, label, list(targets))
        now = self.clock()
        at = now + (self.lead_ms if lead_ms is None else lead_ms)
        body = BroadcastStream(
            url=stream.url,
            duration_s=stream.duration_s,
            priority=DEFAULT_PRIORITY[LEVELS[level]],
            at=at,
            label=label[:200],
            fallback=stream.fallback,
            device_auth=stream.device_auth,
            direct_url=stream.direct_url,
        )
        devices = frozenset(d for t in targets for d in self.fleet.members_within(t, commune))
        self.on_relay(stream, at, devices, body.priority)  # pulled before speakers connect
        return self._send(
            "stream",
            targets,
            body,
            by=by,
            level=level,
            clip_sha256=stream.fallback.sha256 if stream.fallback else None,
            stream_url=stream.url,
            label=body.label,
            at=at,
            now=now,
            ttl_ms=at - now + COMMAND_TTL_MS,
            commune=commune,
        )

    def emergency(
        self,
        targets: Sequence[Target],
        clip_sha256: str,
        *,
        by: str,
        label: str = "",
        commune: str | None = None,
    ) -> BroadcastInfo:
        """Khẩn cấp: interrupts whatever plays and ignores quiet hours (Circular 39).

        Never held back; with approval on, a leader reviews it afterwards. The
        province's (``commune`` None) preempts a commune's."""
        info = self.play_now(
            targets,
            by=by,
            clip_sha256=clip_sha256,
            level="emergency",
            label=label,
            commune=commune,
        )
        assert isinstance(info, BroadcastInfo)  # the gate never holds an emergency
        return info

    def stop(
        self,
        targets: Sequence[Target],
        *,
        by: str,
        level: Level = "emergency",
        commune: str | None = None,
    ) -> BroadcastInfo:
        """Stop what plays at or below ``level`` (all of it by default).

        A commune's stop (``commune``) is refused while a province emergency is on
        air on one of its speakers, and is capped below the province's emergency
        priority anyway, so the speaker keeps playing it (controller/auth/tenancy.py)."""
        if level not in LEVELS:
            raise Invalid("bad_level", f"Mức {level!r} không hợp lệ", f"Unknown level {level!r}")
        now = self.clock()
        devices = frozenset(d for t in targets for d in self.fleet.members_within(t, commune))
        if commune is not None:
            self._refuse_stopping_the_province(devices, commune, level, now)
        priority_max = max(p for p in range(10) if level_of(p) <= LEVELS[level])
        priority_max = tenancy.stop_cap(commune, priority_max)
        body = BroadcastStop(priority_max=priority_max)
        info = self._send(
            "stop",
            targets,
            body,
            by=by,
            level=level,
            now=now,
            ttl_ms=COMMAND_TTL_MS,
            priority=priority_max,
            commune=commune,
        )
        self.on_stop(devices, priority_max)
        return info

    def _refuse_stopping_the_province(
        self, devices: frozenset[str], commune: str, level: str, now: int
    ) -> None:
        """Refuse a commune's stop that would reach a broadcast it may not stop
        (``tenancy.may_stop``) still on air on one of ``devices``: sent, and its clip's
        length not yet over."""
        if level != "emergency":
            return  # a stop below the emergency level never reaches one
        with self.sessions() as session:
            rows = session.execute(
                select(BroadcastRow, ClipRow.duration_ms)
                .outerjoin(ClipRow, ClipRow.sha256 == BroadcastRow.clip_sha256)
                .where(
                    BroadcastRow.kind.in_(("play", "stream")),
                    BroadcastRow.level == "emergency",
                    BroadcastRow.commune.is_(None),
                    BroadcastRow.created_ms >= now - ON_AIR_LOOKBACK_MS,
                )
            ).all()
        for row, duration_ms in rows:
            ends = (row.at_ms or row.created_ms) + (duration_ms or ON_AIR_LOOKBACK_MS)
            if ends < now or not devices & set(row.devices):
                continue
            if not tenancy.may_stop(commune, row.commune, row.level):
                raise OutOfScope(
                    "province_emergency",
                    f"Đang phát bản tin khẩn cấp của tỉnh «{row.label}» trên cụm loa của xã: "
                    "chỉ cán bộ cấp tỉnh mới dừng được. Liên hệ tỉnh nếu cần dừng.",
                    f"The province's emergency broadcast «{row.label}» is on air on the "
                    "commune's speakers: only a province user can stop it. Contact the "
                    "province if it must stop.",
                )

    def device_command(
        self,
        kind: str,
        targets: Sequence[Target],
        body: Strict,
        *,
        by: str,
        priority: int = 0,
        commune: str | None = None,
    ) -> BroadcastInfo:
        """A device.* command (volume, test tone, restart) to speakers, its acks kept as a
        broadcast's are, so the console shows them the same way."""
        return self._send(
            kind, targets, body, by=by, level="normal", now=self.clock(),
            ttl_ms=COMMAND_TTL_MS, priority=priority, commune=commune,
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
        commune: str | None = None,
    ) -> BroadcastInfo:
        if not targets:
            raise Invalid("no_target", "Chưa chọn nơi phát", "No target chosen")
        devices = sorted({d for t in targets for d in self.fleet.members_within(t, commune)})
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
        row = BroadcastRow(
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
            devices=devices,
            answered=0,
            answered_ok=0,
            commune=tenancy.broadcast_commune(commune),
        )
        if kind in ("play", "stream") and level == "emergency":
            row.priority = tenancy.emergency_priority(commune)
        of = {d.id: d.commune for d in self.fleet.speakers()}
        reached = sorted({c for d in devices if (c := of.get(d))})
        info = replace(info_of(row, {}), communes=tuple(reached))
        with self.sessions.begin() as session:
            # the row first: an ack may come back before publish() returns
            session.add(row)
            session.flush()
            session.add_all(BroadcastCommuneRow(broadcast_id=row.id, commune=c) for c in reached)
        for topic, payload in payloads.items():
            self.publisher.publish(topic, payload, qos=1)
        return info

    def record_acks_in(self, session: Session, acks: Sequence[tuple[str, Ack]]) -> None:
        """Store the answers to broadcasts among ``acks`` (device, ack) in ``session``.

        Ingest's writer calls it in each batch's transaction, so a thousand acks
        cost a few statements, not a transaction each, whatever the broadcast's
        size: lock the touched broadcasts (in id order: a replica recording acks
        of the same broadcast waits, then counts on ours), read what these
        devices had answered, write their rows, add the new answers to the
        counts. Acks of other commands or from devices the broadcast did not
        reach, and a device's ``replay`` refusal of a copy it already got (it
        was in two targeted groups), say nothing new and are ignored.
        """
        latest = {
            (ack.cmd, device): ack
            for device, ack in acks
            if ack.cmd is not None and ack.error != "replay"
        }
        if not latest:
            return
        touched = session.execute(
            select(BroadcastRow.id, BroadcastRow.devices, BroadcastRow.answered,
                   BroadcastRow.answered_ok)
            .where(BroadcastRow.id.in_(sorted({cmd for cmd, _device in latest})))
            .order_by(BroadcastRow.id)
            .with_for_update()
        ).all()  # fmt: skip
        reached = {b: set(devices) for b, devices, _n, _ok in touched}
        ours = {key: a for key, a in latest.items() if key[1] in reached.get(key[0], ())}
        if not ours:
            return
        conn = session.connection()
        before: dict[tuple[str, str], bool | None] = {
            (b, d): ok
            for b, d, ok in conn.execute(
                select(BroadcastAckRow.broadcast_id, BroadcastAckRow.device, BroadcastAckRow.ok)
                .where(BroadcastAckRow.broadcast_id.in_(sorted({b for b, _d in ours})))
                .where(BroadcastAckRow.device.in_(sorted({d for _b, d in ours})))
            )
        }
        upsert = dialect_insert(session, BroadcastAckRow)
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=["broadcast_id", "device"],
                set_={c: upsert.excluded[c] for c in ("ok", "error", "detail", "acked_ms")},
            ),
            [
                {"broadcast_id": b, "device": d, "ok": a.ok, "error": a.error,
                 "detail": a.detail, "acked_ms": a.ts}
                for (b, d), a in ours.items()
            ],
        )  # fmt: skip
        counts = {b: [n, ok] for b, _devices, n, ok in touched}
        for key, a in ours.items():
            had = before.get(key)
            counts[key[0]][0] += had is None
            counts[key[0]][1] += int(a.ok) - int(had is True)
        conn.execute(
            _SET_COUNTS,
            [
                {"b_id": b, "b_answered": n, "b_ok": ok,
                 "b_status": status_of(len(reached[b]), n, ok)}
                for b, (n, ok) in counts.items()
                if b in {key[0] for key in ours}
            ],
        )  # fmt: skip
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
            with self.sessions() as session:
                row = session.get(BroadcastRow, broadcast_id)
                done = row is not None and row.answered >= len(row.devices)
            left = deadline - time.monotonic()
            if done or left <= 0:
                return self.get(broadcast_id)  # unknown: NotFound
            with self._answered:
                self._answered.wait(min(left, 0.5))

    def get(self, broadcast_id: str) -> BroadcastInfo:
        """The row and its acks in one snapshot: read apart, an ack batch committed between
        the two reads showed every answer under a status still "sent"."""
        with self.sessions() as session:
            one_snapshot(session)
            row = session.get(BroadcastRow, broadcast_id)
            if row is None:
                raise NotFound(
                    "broadcast_not_found",
                    f"Không có lệnh phát {broadcast_id}",
                    f"No broadcast {broadcast_id}",
                )
            (info,) = infos(session, [row])
            return info

    def seen_by(
        self, info: BroadcastInfo, commune: str | None, mine: set[str] | None = None
    ) -> BroadcastInfo | None:
        """``info`` as ``commune``'s users see it (controller/auth/tenancy.py), or None
        if they do not. Another's broadcast that reached the commune (the province's)
        shows only the commune's own speakers (``mine``, if the caller has them), and
        its targets as the commune."""
        if not tenancy.sees_broadcast(commune, info.commune, info.communes):
            return None
        if commune is None or tenancy.sees(commune, info.commune):
            return info
        if mine is None:
            mine = {d.id for d in self.fleet.speakers(commune)}
        acks = [a for a in info.acks if a.device in mine]
        answered = [a for a in acks if a.ok is not None]
        ok = sum(1 for a in answered if a.ok)
        return replace(
            info,
            targets=[Target("group", commune)],
            acks=acks,
            answered_count=len(answered),
            ok_count=ok,
            status=status_of(len(acks), len(answered), ok),
            communes=(commune,),
        )

    def recent(
        self,
        limit: int = 50,
        kinds: Sequence[str] = BROADCAST_KINDS,
        *,
        commune: str | None = None,
        offset: int = 0,
    ) -> list[BroadcastInfo]:
        """The newest first (None: every one), ``limit`` of them from ``offset``; a
        commune's: its own and those that reached its speakers, as it sees them
        (``seen_by``)."""
        with self.sessions() as session:
            query = select(BroadcastRow).where(BroadcastRow.kind.in_(kinds))
            if commune is not None:  # its own, and those that reached it (the province's)
                reached = select(BroadcastCommuneRow.broadcast_id).where(
                    BroadcastCommuneRow.commune == commune
                )
                query = query.where(
                    or_(BroadcastRow.commune == commune, BroadcastRow.id.in_(reached))
                )
            if commune is not None:  # its speakers are picked out of the lists in SQL
                query = query.options(defer(BroadcastRow.devices))
            one_snapshot(session)
            rows = session.scalars(
                query.order_by(BroadcastRow.created_ms.desc(), BroadcastRow.id)
                .offset(offset)
                .limit(limit)
            ).all()
            # a commune reads only its speakers' acks and lists of the province's broadcasts
            mine = None if commune is None else {d.id for d in self.fleet.speakers(commune)}
            seen = (self.seen_by(info, commune, mine) for info in infos(session, rows, mine))
            return [info for info in seen if info is not None]
