"""Schedules: entries per group and per device, and the signed retained documents.

The database is the truth (docs/protocol.md): each change rebuilds the whole
``schedule.set`` document of the target it touches, signs it with the site's
active key at a version above any sent before on that topic, stores it, and
publishes it retained. Every entry is checked by the contract's own schema
(protocol.commands.ScheduleItem) and by broadcast.schedule before it is kept,
so nothing the controller accepts is refused by a speaker.

The entries' values are controller.radio.schedule_entries', their targets
controller.radio.targets'; the calendar and the conflict preview are
controller.radio.schedule_calendar's.

Approval (controller.radio.approval_gate): with the commune's approval on, a
new or changed entry whose author may not approve is kept as ``pending`` and
left out of its target's document until a leader approves it (``approve``).

Communes (controller/auth/tenancy.py): an entry is its author's commune's
(``schedules.commune``; None: the province's). A commune user's entry may
target only their commune's speakers (``Fleet.members_within``) and name only
clips and stations their commune may play; they list, change and delete only
their commune's entries (another's is not found; a province entry, which they
see in the calendar where it reaches their speakers, is read-only: 403). Their
commune's approval setting holds it, for their commune's leaders.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import msgspec
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from broadcast.levels import DEFAULT_PRIORITY, level_of
from broadcast.schedule import Schedule
from controller.auth import tenancy
from controller.db.broadcast_tables import ClipRow, ScheduleRow
from controller.radio.approval_gate import ApprovalGate, Ruling
from controller.radio.clip_library import (
    ClipLibrary,
    Conflict,
    Invalid,
    NotFound,
    OutOfScope,
    ServiceError,
    clip_not_found,
    clip_url,
)
from controller.radio.relay_stations import station_stream
from controller.radio.schedule_entries import (
    Entry,
    EntryInput,
    Published,
    check_targets,
    check_times,
    check_timing,
    item_times,
    more_targets_value,
    targets_of,
)
from controller.radio.streams import StreamServer
from controller.radio.targets import LEVELS, Clock, Fleet, Target
from controller.site.directory import Site
from controller.site.documents import Publisher, mark_delivered, sign_next
from plumbing.clock import wall_ms
from plumbing.validation import Faults, convert
from protocol.commands import DEFAULT_TZ, ClipRef, ScheduleItem, ScheduleSet
from protocol.envelope import MAX_PAYLOAD_BYTES, seal


def _invalid(exc: Faults) -> Invalid:
    first = exc.problems[0]
    where = ".".join(str(p) for p in first.loc) or "entry"
    return Invalid(
        "bad_entry",
        f"Lịch phát không hợp lệ ({where}): {first.msg}",
        f"Invalid schedule entry ({where}): {first.msg}",
    )


def _priority(level: str, priority: int | None) -> int:
    wanted = LEVELS[level]
    if priority is None:
        return DEFAULT_PRIORITY[wanted]
    if not 0 <= priority <= 9 or level_of(priority) is not wanted:
        raise Invalid(
            "bad_priority",
            f"Độ ưu tiên {priority} không thuộc mức {level}",
            f"Priority {priority} is not within the {level} level",
        )
    return priority


class Scheduling:
    """CRUD of schedule entries and their target's signed, retained documents."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        site: Site,
        *,
        clip_base_url: str,
        publisher: Publisher | None = None,
        gate: ApprovalGate | None = None,
        streams: StreamServer | None = None,
        clock: Clock = wall_ms,
    ) -> None:
        self.sessions = sessions
        self.streams = streams  # relays of a station go through its mount there
        self.fleet = Fleet(site)
        self.site = site
        self.clip_base_url = clip_base_url
        self.publisher = publisher
        self.gate = gate
        self.clock = clock

    # entries

    def create(
        self, entry: EntryInput, *, by: str, approved: bool = False, commune: str | None = None
    ) -> Entry:
        """Keep a new entry and publish its target's document (unless it waits for approval).

        ``approved``: its author may approve, so it owes no approval. ``commune``: its
        author's, whose speakers only it may reach."""
        now = self.clock()
        with self.sessions.begin() as session:
            row = ScheduleRow(created_by=by, created_ms=now, version=1, commune=commune)
            self.fill(session, row, entry, now)
            session.add(row)
            session.flush()
            for target in entry.targets:
                self._check_target(session, target)
            held = self._consult_gate(session, row, by=by, approved=approved)
            result = Entry.of(row)
        if not held:
            self._publish_targets(entry.targets)
        return result

    def update(
        self,
        entry_id: int,
        entry: EntryInput,
        *,
        by: str,
        expected_version: int | None = None,
        approved: bool = False,
        commune: str | None = None,
    ) -> Entry:
        """Replace an entry; ``expected_version`` refuses an edit made on a stale copy.

        With approval on, an edit waits again: the entry leaves the air until approved.
        ``commune``: the editor's; only their commune's entries are theirs to change."""
        now = self.clock()
        with self.sessions.begin() as session:
            row = self._row(session, entry_id, lock=True, commune=commune, change=True)
            if expected_version is not None and row.version != expected_version:
                raise Conflict(
                    "stale_entry",
                    "Lịch phát đã bị người khác sửa: tải lại rồi sửa lại",
                    "Someone else changed this entry: reload it and edit again",
                )
            touched = dict.fromkeys([*targets_of(row), *entry.targets])  # a dropped one too
            self.fill(session, row, entry, now, entry_id=entry_id)
            row.version += 1
            session.flush()
            self._consult_gate(session, row, by=by, approved=approved)
            for target in touched:
                self._check_target(session, target)
            result = Entry.of(row)
        self._publish_targets(touched)
        return result

    def delete(self, entry_id: int, *, by: str, commune: str | None = None) -> None:
        with self.sessions.begin() as session:
            row = self._row(session, entry_id, lock=True, commune=commune, change=True)
            targets = targets_of(row)
            if self.gate is not None:
                self.gate.withdraw_entry(session, entry_id)
            session.delete(row)
        self._publish_targets(targets)

    def _consult_gate(self, session: Session, row: ScheduleRow, *, by: str, approved: bool) -> bool:
        """Mark ``row`` as the gate rules; True when it is held back for approval."""
        if self.gate is None:
            row.approval = "approved"
            return False
        commune = row.commune
        decision = self.gate.rule(session, level=row.level, approved=approved, commune=commune)
        target = targets_of(row)[0]
        if decision is Ruling.HOLD:
            row.approval = "pending"
            label = row.label or row.item_id
            self.gate.hold_entry(session, row.id, row.version, by=by, label=label, target=target,
                                 commune=commune)  # fmt: skip
            return True
        row.approval = "approved"
        self.gate.withdraw_entry(session, row.id)
        if decision is Ruling.REVIEW:
            self.gate.flag_emergency(session, by=by, label=row.label or row.item_id,
                                     targets=targets_of(row), schedule_id=row.id,
                                     commune=commune)  # fmt: skip
        return False

    def decide(self, entry_id: int, approval: str, *, expected_version: int) -> Entry:
        """A leader's decision on a pending entry: ``approved`` puts it on air.

        ``expected_version`` is the version the leader saw: an entry edited since
        is refused, so nobody approves what they did not read."""
        with self.sessions.begin() as session:
            row = self._row(session, entry_id, lock=True)
            if row.approval != "pending" or row.version != expected_version:
                raise Conflict(
                    "already_decided",
                    "Mục này đã được duyệt, từ chối hoặc sửa lại: tải lại trang để xem",
                    "This item was already decided or changed: reload the page to see it",
                )
            row.approval = approval
            result = Entry.of(row)
            if approval == "approved":
                for target in result.targets:
                    self._check_target(session, target)
        if approval == "approved":
            try:
                self._publish_targets(result.targets)
            except Exception:  # not sent: it waits again, for the leader to retry
                with self.sessions.begin() as session:
                    self._row(session, entry_id, lock=True).approval = "pending"
                raise
        return result

    def get(self, entry_id: int, commune: str | None = None) -> Entry:
        """An entry ``commune`` sees: its own, or a province entry reaching its speakers
        (read-only); another commune's is not found."""
        with self.sessions() as session:
            return Entry.of(self._row(session, entry_id, commune=commune))

    def entries(self, target: Target | None = None, commune: str | None = None) -> list[Entry]:
        """Every entry, or a target's; ``commune``: that commune's own entries only."""
        with self.sessions() as session:
            query = select(ScheduleRow).order_by(ScheduleRow.id)
            if commune is not None:
                query = query.where(ScheduleRow.commune == commune)
            rows = session.scalars(query)
            return [Entry.of(r) for r in rows if target is None or target in targets_of(r)]

    def page(self, page: int, per_page: int, commune: str | None = None) -> tuple[list[Entry], int]:
        """One page of the entries (``commune``'s own), newest first, and how many there
        are in all."""
        with self.sessions() as session:
            count = select(func.count()).select_from(ScheduleRow)
            query = select(ScheduleRow)
            if commune is not None:
                count = count.where(ScheduleRow.commune == commune)
                query = query.where(ScheduleRow.commune == commune)
            total = session.scalar(count) or 0
            rows = session.scalars(
                query.order_by(ScheduleRow.id.desc()).offset((page - 1) * per_page).limit(per_page)
            )
            return [Entry.of(row) for row in rows], total

    def _row(
        self,
        session: Session,
        entry_id: int,
        *,
        lock: bool = False,
        commune: str | None = None,
        change: bool = False,
    ) -> ScheduleRow:
        """The entry, if ``commune`` sees it (tenancy.shows_in_calendar) and, to ``change``
        it, if it is theirs: a province entry is read-only to a commune (403)."""
        row = session.get(ScheduleRow, entry_id, with_for_update=lock)
        if row is not None and commune is not None and not tenancy.sees(commune, row.commune):
            of = {d.id: d.commune for d in self.fleet.speakers()}
            reached = [of.get(d) for t in targets_of(row) for d in self._reach(t)]
            if not tenancy.shows_in_calendar(commune, row.commune, reached):
                row = None
            elif change:
                raise OutOfScope(
                    "province_entry",
                    f"Lịch phát số {entry_id} do cấp tỉnh lập: xã xem được nhưng không sửa "
                    "hoặc xoá; liên hệ cấp tỉnh",
                    f"Schedule entry {entry_id} is the province's: a commune sees it but "
                    "may not change or delete it; contact the province",
                )
        if row is None:
            raise NotFound(
                "entry_not_found",
                f"Không có lịch phát số {entry_id}",
                f"No schedule entry {entry_id}",
            )
        return row

    def _reach(self, target: Target) -> list[str]:
        try:
            return self.fleet.members(target)
        except ServiceError:  # a target gone from the registry reaches nothing now
            return []

    def fill(
        self,
        session: Session,
        row: ScheduleRow,
        entry: EntryInput,
        now: int,
        entry_id: int | None = None,
    ) -> None:
        """Check ``entry`` and copy it into ``row``; the calendar's preview fills an unsaved
        row the same way, so a previewed entry is checked as saving would check it."""
        targets = entry.targets
        check_targets(targets)
        for target in targets:
            self.fleet.members_within(target, row.commune)
        self._check_sources(session, entry, row.commune)
        item_id = entry.item_id or row.item_id or f"muc-{uuid.uuid4().hex[:10]}"
        times = check_times(entry.times, entry.label or item_id, item_id)
        for other in session.scalars(select(ScheduleRow).where(ScheduleRow.item_id == item_id)):
            shared = [t for t in targets_of(other) if t in targets]
            if shared and other.id != entry_id:
                raise Conflict(
                    "item_id_taken",
                    f"Mã mục {item_id!r} đã có trong lịch của {shared[0].id}",
                    f"Item id {item_id!r} is already in the schedule of {shared[0].id}",
                )
        timing = (entry.rrule, entry.dtstart, entry.until, list(entry.exdates), entry.tz, times)
        retimed = timing != (row.rrule, row.dtstart, row.until, row.exdates, row.tz, row.times)
        if retimed:
            for _wire_id, dtstart in item_times(item_id, entry.dtstart, times):
                check_timing(entry.model_copy(update={"dtstart": dtstart}), entry.label or item_id)
        row.item_id = item_id
        row.target_kind, row.target_id = entry.target_kind, entry.target_id
        row.more_targets, row.times = more_targets_value(entry), times
        row.level, row.priority = entry.level, _priority(entry.level, entry.priority)
        row.rrule, row.dtstart, row.until = entry.rrule, entry.dtstart, entry.until
        row.exdates, row.tz = list(entry.exdates), entry.tz
        row.clip_sha256, row.stream_url = entry.clip_sha256, entry.stream_url
        row.stream_duration_s, row.station_id = entry.stream_duration_s, entry.station_id
        if entry.station_id is not None:
            if entry.clip_sha256 is not None or entry.stream_url is not None:
                raise Invalid(
                    "bad_source",
                    "Chọn đúng một nguồn: tệp âm thanh hoặc đài tiếp sóng",
                    "Give exactly one source: a clip or a station",
                )
            row.stream_url = station_stream(
                session,
                entry.station_id,
                entry.stream_duration_s or 0,
                self.clip_base_url,
                self.streams,
                commune=row.commune,
            ).url
        row.label, row.gain_db, row.lang = entry.label, entry.gain_db, entry.lang
        row.enabled, row.updated_ms = entry.enabled, now
        items = self._items(session, row)  # the wire schema's checks
        try:
            wire = {"version": 1, "tz": row.tz, "items": msgspec.to_builtins(items)}
            doc = convert(wire, ScheduleSet)
        except Faults as exc:
            raise _invalid(exc) from None
        topic = entry.target.topic(self.fleet.topics, "schedule")
        # an entry whose times are past may still be renamed or disabled, not moved there
        if entry.enabled and retimed and Schedule.build([(topic, doc)]).next_after(now) is None:
            raise Invalid(
                "never_plays",
                "Lịch phát này sẽ không bao giờ phát nữa (đã qua hoặc hết số lần)",
                "This entry would never play again (its times are past or used up)",
            )

    @staticmethod
    def _check_sources(session: Session, entry: EntryInput, commune: str | None) -> None:
        """A commune's entry plays only clips its commune may: its own and the province's
        (another commune's is not found, as in the library; stations: ``station_stream``)."""
        if commune is None:
            return
        if entry.clip_sha256 is not None:
            clip = session.get(ClipRow, entry.clip_sha256)
            if clip is not None and not tenancy.reads(commune, clip.commune):
                holders = ClipLibrary.holders(session, entry.clip_sha256)
                if not tenancy.reads_any(commune, holders):
                    raise clip_not_found(entry.clip_sha256)

    def _items(self, session: Session, row: ScheduleRow) -> list[ScheduleItem]:
        """The entry's items on the wire: one per time of day (schedule_entries.item_times)."""
        clip = None
        if row.clip_sha256 is not None:
            found = session.get(ClipRow, row.clip_sha256)
            if found is None:
                raise Invalid(
                    "unknown_clip",
                    f"Không có tệp âm thanh {row.clip_sha256[:12]} trong thư viện",
                    f"No clip {row.clip_sha256[:12]} in the library",
                )
            clip = msgspec.to_builtins(
                ClipRef(
                    sha256=found.sha256,
                    url=clip_url(self.clip_base_url, found.sha256),
                    bytes=found.size_bytes,
                    duration_ms=found.duration_ms,
                )
            )
        stream = None
        if row.station_id is not None:  # the station's stream as it is now
            duration = row.stream_duration_s or 0
            ref = station_stream(
                session, row.station_id, duration, self.clip_base_url, self.streams
            )
            stream = msgspec.to_builtins(ref)
        elif row.stream_url is not None or row.stream_duration_s is not None:
            stream = {"url": row.stream_url, "duration_s": row.stream_duration_s}
        try:
            return [
                convert(
                    {
                        "id": wire_id,
                        "label": row.label,
                        "clip": clip,
                        "stream": stream,
                        "priority": row.priority,
                        "gain_db": row.gain_db,
                        "rrule": row.rrule,
                        "dtstart": dtstart,
                        "until": row.until,
                        "exdates": row.exdates,
                        "lang": row.lang,
                    },
                    ScheduleItem,
                )
                for wire_id, dtstart in item_times(row.item_id, row.dtstart, list(row.times))
            ]
        except Faults as exc:
            raise _invalid(exc) from None

    # documents

    def document(
        self,
        session: Session,
        target: Target,
        version: int = 1,
        rows: Sequence[ScheduleRow] | None = None,
    ) -> ScheduleSet:
        """The whole schedule of one target, as its retained document carries it;
        ``rows``: every entry, read once for many targets, in order of id."""
        if rows is None:
            rows = session.scalars(
                select(ScheduleRow)
                .where(ScheduleRow.enabled.is_(True), ScheduleRow.approval == "approved")
                .order_by(ScheduleRow.id)
            ).all()
        rows = [
            row
            for row in rows
            if row.enabled and row.approval == "approved" and target in targets_of(row)
        ]
        zones = {row.tz for row in rows}
        if len(zones) > 1:
            raise Invalid(
                "mixed_tz",
                f"Các mục lịch của {target.id} phải cùng một múi giờ (đang có {sorted(zones)})",
                f"The entries of {target.id} must share one time zone (found {sorted(zones)})",
            )
        items = sorted((i for row in rows for i in self._items(session, row)), key=lambda i: i.id)
        try:
            tz = zones.pop() if zones else DEFAULT_TZ
            wire = {"version": version, "tz": tz, "items": msgspec.to_builtins(items)}
            return convert(wire, ScheduleSet)  # built from dicts: __init__ would raise unlisted
        except Faults as exc:
            raise _invalid(exc) from None

    def _check_target(self, session: Session, target: Target) -> None:
        """Before a change is kept: its document must be valid and fit in one message."""
        payload = seal(
            "schedule.set",
            self.document(session, target),
            self.site.signing_key(),
            self.clock(),
            to=target.topic(self.fleet.topics, "schedule"),
        )
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise Invalid(
                "document_too_large",
                f"Lịch của {target.id} quá lớn ({len(payload)} byte, tối đa {MAX_PAYLOAD_BYTES})",
                f"The schedule of {target.id} is too large ({len(payload)} bytes, "
                f"at most {MAX_PAYLOAD_BYTES})",
            )

    def publish(self, target: Target) -> Published:
        """Sign the target's document at a new version, keep it, publish it retained."""
        if self.publisher is None:
            raise ServiceError(
                "no_broker", "Chưa kết nối máy chủ MQTT", "The controller has no MQTT connection"
            )
        topic = target.topic(self.fleet.topics, "schedule")
        built: list[ScheduleSet] = []

        def build(version: int, _last: object) -> ScheduleSet:
            built.append(self.document(session, target, version))
            return built[-1]

        with self.sessions.begin() as session:
            signed = sign_next(
                session,
                topic,
                "schedule.set",
                build=build,
                key=self.site.signing_key(),
                now_ms=self.clock(),
            )
            items = len(built[-1].items)
        self.publisher.publish(topic, signed.payload, qos=1, retain=True)
        with self.sessions.begin() as session:
            mark_delivered(session, signed, self.clock())
        return Published(topic, signed.version, signed.envelope_id, items)

    def republish_station(self, station_id: int) -> None:
        """Send again the documents of every target with an entry relaying ``station_id``."""
        with self.sessions() as session:
            rows = session.scalars(select(ScheduleRow).where(ScheduleRow.station_id == station_id))
            targets = dict.fromkeys(Target(r.target_kind, r.target_id) for r in rows)  # type: ignore[arg-type]
        self._publish_targets(targets)

    def _publish_targets(self, targets: Iterable[Target]) -> None:
        if self.publisher is not None:
            for target in targets:
                self.publish(target)
