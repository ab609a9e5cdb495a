"""The bulletin inbox: what a province's source-information system sends down.

Circular 39/2020/TT-BTTTT decides what happens on arrival (DOMAIN.md): an
emergency bulletin (khẩn cấp) plays at once wherever it is addressed, and a
priority one (ưu tiên) goes on air at once ahead of normal items, neither with
an acceptance step; a normal one (thông thường) waits in the inbox until the
commune operator accepts it (into the schedule, or to play now) or declines
it. A schedule from above (``proposed`` times, whatever its level) waits too,
and accepting it without times of one's own schedules it as proposed, at its
level. The same bulletin sent twice (same source and id) is received once. What
comes from above owes no approval; what an operator makes of a normal bulletin
passes the commune's approval gate like anything else they prepare.

Each bulletin is for a commune, or for the province (None: every commune's to
see, the province's to decide), and asks controller/auth/tenancy.py like clips
do: a commune reads its own and the province's, decides only its own, and never
sees another commune's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from controller.auth import tenancy
from controller.db.broadcast_tables import BulletinRow, ClipRow
from controller.radio.broadcast_reads import BroadcastInfo
from controller.radio.broadcasting import Broadcasting, Held
from controller.radio.clip_library import (
    ClipLibrary,
    Conflict,
    Invalid,
    NotFound,
    OutOfScope,
)
from controller.radio.schedule_entries import EntryInput
from controller.radio.scheduling import Scheduling
from controller.radio.targets import LEVELS, Clock, Target
from plumbing.clock import wall_ms

MAX_TITLE = 200
MAX_ID = 128
UNAIRED_AFTER_MS = 60_000


@dataclass(frozen=True)
class Bulletin:
    id: int
    source: str
    external_id: str
    title: str
    level: str
    clip_sha256: str | None
    stream_url: str | None
    stream_duration_s: int | None
    lang: str
    targets: list[Target]
    received_ms: int
    state: str  # pending | accepted | declined | aired
    decided_by: str | None
    decided_ms: int | None
    note: str
    schedule_id: int | None
    broadcast_id: str | None
    commune: str | None  # the commune it is for (None: the province, every commune's)
    proposed: dict[str, Any] | None = None  # a schedule from above: dtstart, times, rrule, until

    @classmethod
    def of(cls, row: BulletinRow) -> Bulletin:
        return cls(
            row.id,
            row.source,
            row.external_id,
            row.title,
            row.level,
            row.clip_sha256,
            row.stream_url,
            row.stream_duration_s,
            row.lang,
            [Target(t["kind"], t["id"]) for t in row.targets],
            row.received_ms,
            row.state,
            row.decided_by,
            row.decided_ms,
            row.note,
            row.schedule_id,
            row.broadcast_id,
            row.commune,
            row.proposed,
        )


def _text(value: str, limit: int, what_vi: str, what_en: str) -> str:
    cleaned = " ".join(value.split())
    if not cleaned or len(cleaned) > limit:
        raise Invalid(
            "bad_bulletin",
            f"{what_vi} phải có từ 1 đến {limit} ký tự",
            f"The {what_en} must have 1 to {limit} characters",
        )
    return cleaned


class BulletinInbox:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        scheduling: Scheduling,
        broadcasting: Broadcasting,
        *,
        clock: Clock = wall_ms,
    ) -> None:
        self.sessions = sessions
        self.scheduling = scheduling
        self.broadcasting = broadcasting
        self.clock = clock

    def receive(
        self,
        *,
        source: str,
        external_id: str,
        title: str,
        level: Literal["normal", "priority", "emergency"],
        targets: Sequence[Target],
        clip_sha256: str | None = None,
        stream_url: str | None = None,
        stream_duration_s: int | None = None,
        lang: str = "vi",
        commune: str | None = None,
        sender: str | None = None,
        proposed: Mapping[str, Any] | None = None,
    ) -> Bulletin:
        """Take a bulletin from an integration (``source`` is its API token's name,
        ``sender`` its owner's commune) for ``commune`` (None: the sender's);
        ``proposed``: a schedule from above (EntryInput's dtstart, times, rrule, until).

        The audio comes first through the clip library (``clip_sha256``), or
        is a stream to relay. Emergency and priority bulletins go on air here, as
        the sender's: a province system's emergency is the province's, which no
        commune stops (tenancy.may_stop).
        """
        commune = self._addressed(sender, commune)
        if level not in LEVELS:
            raise Invalid("bad_level", f"Mức {level!r} không hợp lệ", f"Unknown level {level!r}")
        if (clip_sha256 is None) == (stream_url is None):
            raise Invalid(
                "bad_source",
                "Bản tin cần đúng một nguồn: tệp âm thanh hoặc luồng phát",
                "A bulletin needs exactly one source: a clip or a stream",
            )
        if stream_url is not None and not stream_duration_s:
            raise Invalid(
                "bad_source",
                "Luồng phát cần thời lượng (giây)",
                "A stream needs its duration in seconds",
            )
        for target in targets:
            self.scheduling.fleet.members_within(target, commune)
        if not targets:
            raise Invalid("no_target", "Bản tin chưa có nơi phát", "The bulletin names no target")
        row = BulletinRow(
            source=_text(source, 100, "Nguồn", "source"),
            external_id=_text(external_id, MAX_ID, "Mã bản tin", "bulletin id"),
            title=_text(title, MAX_TITLE, "Tiêu đề", "title"),
            level=level,
            clip_sha256=clip_sha256,
            stream_url=stream_url,
            stream_duration_s=stream_duration_s,
            lang=lang,
            targets=[{"kind": t.kind, "id": t.id} for t in targets],
            received_ms=self.clock(),
            state="pending",
            note="",
            commune=commune,
            proposed=dict(proposed) if proposed is not None else None,
        )
        bulletin_id: int | None
        with self.sessions() as session:
            seen = session.scalar(
                select(BulletinRow).where(
                    BulletinRow.source == row.source, BulletinRow.external_id == row.external_id
                )
            )
            if seen is not None and not self._unaired(seen):
                return Bulletin.of(seen)
            if seen is not None:  # its airing failed (the broker went away): air it now
                bulletin_id = seen.id
            elif clip_sha256 is not None and not self._readable(session, clip_sha256, commune):
                raise Invalid(
                    "unknown_clip",
                    f"Không có tệp âm thanh {clip_sha256[:12]} trong thư viện",
                    f"No clip {clip_sha256[:12]} in the library",
                )
            else:
                bulletin_id = self._add(session, row)
            if bulletin_id is None:  # the same bulletin, received at once by another replica
                return self.receive(
                    source=source,
                    external_id=external_id,
                    title=title,
                    level=level,
                    targets=targets,
                    clip_sha256=clip_sha256,
                    stream_url=stream_url,
                    stream_duration_s=stream_duration_s,
                    lang=lang,
                    commune=commune,
                    sender=sender,
                    proposed=proposed,
                )
        if level == "normal" or proposed is not None:
            return self.get(bulletin_id)
        sent = self._air(self.get(bulletin_id), by=f"auto:{source}", approved=True, commune=sender)
        return self._decide(bulletin_id, "aired", by=f"auto:{source}", broadcast=sent)

    def accept(
        self,
        bulletin_id: int,
        *,
        by: str,
        play_now: bool = False,
        dtstart: str | None = None,
        rrule: str = "FREQ=DAILY;COUNT=1",
        until: str | None = None,
        targets: Sequence[Target] | None = None,
        approved: bool = False,
        commune: str | None = None,
    ) -> Bulletin:
        """Put a pending bulletin on air: now, or into the schedule from ``dtstart``
        (local time) with ``rrule``, or with none as a schedule from above proposed it;
        ``targets`` narrows or changes where.

        Unless ``approved`` (the operator may approve), the approval gate may hold
        the broadcast or the entry back until a leader approves it. ``commune``: the
        operator's; what they accept is their commune's, for their speakers only, and
        only a bulletin for their commune (the province's is the province's to decide)."""
        bulletin = self._pending(bulletin_id, commune)
        if play_now:
            sent = self._air(bulletin, by=by, targets=targets, approved=approved, commune=commune)
            return self._decide(bulletin_id, "accepted", by=by, broadcast=sent)
        times: list[str] = []
        if dtstart is None and bulletin.proposed is not None:
            plan = bulletin.proposed
            dtstart, rrule, until, times = (
                plan["dtstart"],
                plan["rrule"],
                plan["until"],
                plan["times"],
            )
        if dtstart is None:
            raise Invalid(
                "no_time",
                "Chọn giờ phát hoặc phát ngay",
                "Choose when to play it, or play it now",
            )
        chosen = list(dict.fromkeys(targets or bulletin.targets))
        entry = self.scheduling.create(
            EntryInput(
                target_kind=chosen[0].kind,
                target_id=chosen[0].id,
                more_targets=chosen[1:],
                clip_sha256=bulletin.clip_sha256,
                stream_url=bulletin.stream_url,
                stream_duration_s=bulletin.stream_duration_s,
                dtstart=dtstart,
                rrule=rrule,
                until=until,
                times=times,
                level=bulletin.level,  # type: ignore[arg-type]
                label=bulletin.title,
                lang=bulletin.lang,
            ),
            by=by,
            approved=approved,
            commune=commune,
        )
        return self._decide(bulletin_id, "accepted", by=by, schedule_id=entry.id)

    def decline(
        self, bulletin_id: int, *, by: str, note: str = "", commune: str | None = None
    ) -> Bulletin:
        self._pending(bulletin_id, commune)
        return self._decide(bulletin_id, "declined", by=by, note=note[:500])

    def get(self, bulletin_id: int, commune: str | None = None) -> Bulletin:
        """A bulletin ``commune`` may read: its own or the province's (another's: 404)."""
        with self.sessions() as session:
            row = session.get(BulletinRow, bulletin_id)
            if row is None or not tenancy.reads(commune, row.commune):
                raise NotFound(
                    "bulletin_not_found",
                    f"Không có bản tin số {bulletin_id}",
                    f"No bulletin {bulletin_id}",
                )
            return Bulletin.of(row)

    def inbox(
        self, state: str | None = None, limit: int = 100, commune: str | None = None
    ) -> list[Bulletin]:
        """Newest first; ``state="pending"`` is what waits for the operator. A commune's:
        the bulletins for it and for the province (tenancy.reads)."""
        with self.sessions() as session:
            query = select(BulletinRow).order_by(BulletinRow.received_ms.desc()).limit(limit)
            if state is not None:
                query = query.where(BulletinRow.state == state)
            if commune is not None:
                query = query.where(
                    or_(BulletinRow.commune.is_(None), BulletinRow.commune == commune)
                )
            return [Bulletin.of(row) for row in session.scalars(query)]

    def _unaired(self, row: BulletinRow) -> bool:
        """A priority or emergency bulletin still pending a while after it came: its
        airing on arrival failed (another replica's, still under way, is not this)."""
        if row.state != "pending" or row.level == "normal" or row.proposed is not None:
            return False
        return self.clock() - row.received_ms > UNAIRED_AFTER_MS

    @staticmethod
    def _add(session: Session, row: BulletinRow) -> int | None:
        """The new bulletin's id; None if another replica stored it first."""
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
        return row.id

    @staticmethod
    def _readable(session: Session, sha256: str, commune: str | None) -> bool:
        """Whether the clip is in the library and the commune it is for may play it."""
        if session.get(ClipRow, sha256) is None:
            return False
        return tenancy.reads_any(commune, ClipLibrary.holders(session, sha256))

    def _addressed(self, sender: str | None, named: str | None) -> str | None:
        """The commune a bulletin is for, refused if unknown or not the sender's."""
        commune = tenancy.bulletin_for(sender, named)
        if commune is not None and commune not in {
            c.id for c in self.scheduling.fleet.site.communes()
        }:
            raise Invalid(
                "bad_commune",
                f"Không có xã {commune}: chọn một xã trong danh sách",
                f"No commune {commune}: choose one from the list",
            )
        if not tenancy.sees(sender, commune):
            raise OutOfScope(
                "bulletin_other_commune",
                "Mã truy cập của xã chỉ gửi bản tin cho chính xã đó: bỏ trường xã hoặc ghi "
                "đúng xã của mình",
                "A commune's token sends bulletins for its own commune only: leave the "
                "commune out or name your own",
            )
        return commune

    def _pending(self, bulletin_id: int, commune: str | None = None) -> Bulletin:
        bulletin = self.get(bulletin_id, commune)
        if not tenancy.sees(commune, bulletin.commune):
            raise OutOfScope(
                "province_bulletin",
                f"Bản tin số {bulletin_id} gửi cho cấp tỉnh: xã xem được nhưng không xử lý; "
                "liên hệ cấp tỉnh",
                f"Bulletin {bulletin_id} is for the province: a commune sees it but does not "
                "handle it; contact the province",
            )
        if bulletin.state != "pending":
            raise Conflict(
                "already_decided",
                f"Bản tin đã được xử lý ({bulletin.state})",
                f"The bulletin was already handled ({bulletin.state})",
            )
        return bulletin

    def _air(
        self,
        bulletin: Bulletin,
        *,
        by: str,
        targets: Sequence[Target] | None = None,
        approved: bool = False,
        commune: str | None = None,
    ) -> BroadcastInfo | Held:
        return self.broadcasting.play_now(
            list(targets or bulletin.targets),
            by=by,
            clip_sha256=bulletin.clip_sha256,
            stream_url=bulletin.stream_url,
            stream_duration_s=bulletin.stream_duration_s,
            level=bulletin.level,  # type: ignore[arg-type]
            label=bulletin.title,
            approved=approved,
            commune=commune,
        )

    def _decide(
        self,
        bulletin_id: int,
        state: str,
        *,
        by: str,
        broadcast: BroadcastInfo | Held | None = None,
        schedule_id: int | None = None,
        note: str = "",
    ) -> Bulletin:
        with self.sessions.begin() as session:
            row = session.get(BulletinRow, bulletin_id, with_for_update=True)
            assert row is not None  # bulletins are never deleted
            if row.state != "pending":
                raise Conflict(
                    "already_decided",
                    f"Bản tin đã được xử lý ({row.state})",
                    f"The bulletin was already handled ({row.state})",
                )
            row.state, row.decided_by, row.decided_ms, row.note = state, by, self.clock(), note
            row.broadcast_id = broadcast.id if isinstance(broadcast, BroadcastInfo) else None
            row.schedule_id = schedule_id
            return Bulletin.of(row)
