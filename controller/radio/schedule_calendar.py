"""The calendar and the conflict preview: what each speaker will play, and what collides.

They ask broadcast.schedule the questions the edge asks: each speaker's own
document and its groups' documents merged (``Schedule.build``) and played out
on one loudspeaker (``Schedule.plan``, which starts late items by
broadcast.audio.lateness, the rule the player follows). The documents are the ones
controller.radio.scheduling would publish, so the answer is what the speakers do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from broadcast.collisions import Slot
from broadcast.local_rules import BroadcastRules
from broadcast.schedule import Schedule
from controller.db.broadcast_tables import ClipRow, ScheduleRow
from controller.radio.clip_library import Invalid
from controller.radio.schedule_entries import EntryInput, targets_of
from controller.radio.scheduling import Scheduling
from controller.radio.targets import Target
from protocol.commands import DEFAULT_TZ, QuietHours, ScheduleSet

MAX_CALENDAR_MS = 31 * 86_400_000
QuietLookup = Callable[[str], tuple[Sequence[QuietHours], str]]  # device -> (hours, tz)


@dataclass(frozen=True)
class CalendarRow:
    """One occurrence on one speaker, with what the speaker will do with it."""

    device: str
    key: str
    item_id: str
    label: str
    source: str  # the topic of the document it comes from
    level: str
    priority: int
    planned_start_ms: int
    planned_end_ms: int
    outcome: str  # completed | preempted | missed
    start_ms: int | None
    end_ms: int | None
    reason: str | None
    preempted_by: str | None
    clip_sha256: str | None
    offset_ms: int  # joined late: how much of its beginning is skipped, so it ends on time
    rests: tuple[tuple[int, int], ...] = ()  # a cut item's rest, played after what cut in

    @classmethod
    def of(cls, device: str, slot: Slot) -> CalendarRow:
        o = slot.occurrence
        return cls(
            device,
            o.key,
            o.item_id,
            o.label,
            o.source,
            o.level.name.lower(),
            o.priority,
            o.start_ms,
            o.end_ms,
            slot.outcome,
            slot.start_ms,
            slot.end_ms,
            slot.reason,
            slot.preempted_by,
            o.clip.sha256 if o.clip else None,
            slot.offset_ms,
            slot.rests,
        )

    @property
    def conflicted(self) -> bool:
        """Not played in full at its planned time: cut, missed, delayed or joined late."""
        return self.outcome != "completed" or self.start_ms != self.planned_start_ms


@dataclass(frozen=True)
class DevicePlan:
    device: str
    rows: list[CalendarRow]
    violations: list[str]  # local rules broken (BroadcastRules)


def only_conflicts(plans: Sequence[DevicePlan]) -> list[DevicePlan]:
    """Per speaker, only what is cut, missed or delayed, and the local rules broken."""
    found = []
    for plan in plans:
        rows = [row for row in plan.rows if row.conflicted]
        if rows or plan.violations:
            found.append(DevicePlan(plan.device, rows, plan.violations))
    return found


class ScheduleCalendar:
    """The calendar and conflict preview over ``scheduling``'s entries; it writes nothing.

    Quiet hours come from ``quiet_hours`` since ``config.set`` is not the
    scheduling's; without it none are assumed. ``rules`` are the local limits
    (DOMAIN.md) the preview reports as broken.
    """

    def __init__(
        self,
        scheduling: Scheduling,
        *,
        quiet_hours: QuietLookup | None = None,
        rules: BroadcastRules | None = None,
    ) -> None:
        self.scheduling = scheduling
        self.quiet_hours = quiet_hours
        self.rules = rules

    def plans(
        self,
        start_ms: int,
        end_ms: int,
        *,
        devices: Sequence[str] | None = None,
        proposed: EntryInput | None = None,
        commune: str | None = None,
    ) -> list[DevicePlan]:
        """What each speaker plays in [start_ms, end_ms), collisions resolved as it will.

        ``proposed``: an entry not yet saved, included as if it were (the
        preview before saving); it is checked as saving would check it, as
        ``commune``'s. ``commune``: only that commune's speakers, so a commune sees
        its own entries and the province's that reach it (tenancy.shows_in_calendar),
        and no other commune's speaker or entry.
        """
        if not 0 < end_ms - start_ms <= MAX_CALENDAR_MS:
            raise Invalid(
                "bad_period",
                "Khoảng thời gian phải dài hơn 0 và không quá 31 ngày",
                "The period must be longer than 0 and at most 31 days",
            )
        fleet = self.scheduling.fleet
        speakers = fleet.speakers(commune)
        if devices is not None:
            asked = set(devices)  # a page of 50 among a province's 20,000: a set, not a list
            speakers = [d for d in speakers if d.id in asked]
            unknown = sorted(asked - {d.id for d in speakers})
            if unknown:
                raise Invalid(
                    "unknown_target",
                    f"Không có cụm loa {', '.join(unknown)}",
                    f"No speaker {', '.join(unknown)} at this site",
                )
        wanted = {Target("device", d.id) for d in speakers}
        wanted |= {Target("group", g) for d in speakers for g in d.groups}
        docs = self._documents(proposed, commune, wanted)
        plans = []
        for device in speakers:
            mine = [Target("device", device.id)] + [Target("group", g) for g in device.groups]
            pairs = [(t.topic(fleet.topics, "schedule"), docs[t]) for t in mine if t in docs]
            hours, tz = self.quiet_hours(device.id) if self.quiet_hours else ((), DEFAULT_TZ)
            slots = Schedule.build(pairs, hours, tz).plan(start_ms, end_ms)
            violations = self.rules.violations(slots) if self.rules else []
            plans.append(
                DevicePlan(device.id, [CalendarRow.of(device.id, s) for s in slots], violations)
            )
        return plans

    def conflicts(
        self,
        start_ms: int,
        end_ms: int,
        *,
        devices: Sequence[str] | None = None,
        proposed: EntryInput | None = None,
        commune: str | None = None,
    ) -> list[DevicePlan]:
        """The conflict preview: per speaker, only what is cut, missed or delayed, and
        the local rules broken; speakers with nothing to show are left out."""
        return only_conflicts(
            self.plans(start_ms, end_ms, devices=devices, proposed=proposed, commune=commune)
        )

    def _documents(
        self, proposed: EntryInput | None, commune: str | None, wanted: set[Target]
    ) -> dict[Target, ScheduleSet]:
        """The documents of the ``wanted`` targets (the shown speakers' own and their
        groups'), with ``proposed`` added; nothing is written. The entries are read once
        for all of them: a province has hundreds of targets."""
        scheduling = self.scheduling
        with scheduling.sessions() as session:
            if proposed is not None:
                row = ScheduleRow(created_by="", created_ms=0, version=1, commune=commune)
                scheduling.fill(session, row, proposed, scheduling.clock())
                session.add(row)
                session.flush()  # its id, its defaults: ordered and read as if saved
            rows = session.scalars(select(ScheduleRow).order_by(ScheduleRow.id)).all()
            # each wanted target's entries, in one pass (not every entry for each target:
            # a province's page is 255 targets of 301 entries)
            of: dict[Target, list[ScheduleRow]] = {}
            for r in rows:
                for t in set(targets_of(r)) & wanted:
                    of.setdefault(t, []).append(r)
            # their clips in one read, held (the identity map is weak) so that the
            # documents' session.get finds them loaded
            shas = {r.clip_sha256 for mine in of.values() for r in mine if r.clip_sha256}
            held = session.scalars(select(ClipRow).where(ClipRow.sha256.in_(shas))).all()
            docs = {t: scheduling.document(session, t, rows=mine) for t, mine in of.items()}
            del held
            session.rollback()
        return docs
