"""Bookings ahead, kept in the database and sent to each office's kiosk as a signed document.

The database is the truth; the kiosk holds the last ``bookings.set`` it accepted (retained on
its ``bookings`` topic, kept in its store), so it redeems codes with no network. Each change
publishes the office's document again; one that could not be sent (no broker) goes out with
the next change or the next ``resend_due`` pass.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from controller.db.broadcast_tables import PublishedDocumentRow
from controller.db.queue_tables import BookingAttempt, BookingRow
from controller.queue.booking_rules import (
    BookableService,
    BookingRefused,
    BookingRules,
    check_booking,
    day_slots,
    local_day,
    new_code,
    normal_code,
    normal_phone,
)
from controller.settings import BookingOffice, BookingSection, BookingService
from controller.site.documents import Publisher, mark_delivered, sign_next
from plumbing.repeating import repeating
from protocol.commands import Booking, BookingsSet
from protocol.signing import SigningKey
from protocol.topics import Topics

log = logging.getLogger(__name__)
CODE_TRIES = 8  # a clash in a billion codes is rare; eight in a row is a broken generator


def bookable(service: BookingService) -> BookableService:
    return BookableService(
        service.code,
        service.name_vi,
        service.name_en,
        tuple(service.hours),
        frozenset(service.weekdays),
    )


def rules_of(office: BookingOffice, section: BookingSection) -> BookingRules:
    return BookingRules(
        slot_min=office.slot_min,
        capacity=office.capacity,
        days_ahead=section.days_ahead,
        per_phone_per_day=section.per_phone_per_day,
        tz=office.tz,
    )


@dataclass(frozen=True)
class Booked:
    code: str
    office: BookingOffice
    service: str
    slot_ms: int
    slot_label: str
    day: date


def _alone(kiosk: str) -> list[str]:
    return [kiosk]


@dataclass(frozen=True)
class Wire:
    """How a document reaches the kiosks: the site's key and root, and the bus.

    ``peers`` gives the kiosks of a kiosk's office queue (itself among them): each
    gets the office's bookings, so a code is typed at whichever touchscreen is free,
    and the office's shared log uses it once (docs/kiosk.md)."""

    key: Callable[[], SigningKey]
    topics: Callable[[], Topics]
    publisher: Publisher
    peers: Callable[[str], list[str]] = _alone


class Bookings:
    def __init__(
        self,
        section: BookingSection,
        sessions: sessionmaker[Session],
        now_ms: Callable[[], int],
        wire: Wire | None = None,
        randbelow: Callable[[int], int] = secrets.randbelow,
    ) -> None:
        self.section = section
        self.sessions = sessions
        self.now_ms = now_ms
        self.wire = wire
        self._randbelow = randbelow

    def office(self, kiosk: str) -> BookingOffice:
        office = self.section.office(kiosk)
        if office is None:
            raise BookingRefused("booking.no_office")
        return office

    def attempt(self, ip: str) -> None:
        """Count one attempt of ``ip``; refused once it has made too many in the window."""
        now, section = self.now_ms(), self.section
        since = now - int(section.attempt_window_min * 60_000)
        with self.sessions.begin() as db:
            db.execute(delete(BookingAttempt).where(BookingAttempt.at_ms < since))
            made = db.scalar(
                select(func.count()).where(BookingAttempt.ip == ip, BookingAttempt.at_ms >= since)
            )
            if (made or 0) >= section.attempts_per_ip:
                raise BookingRefused("booking.too_many", minutes=int(section.attempt_window_min))
            db.add(BookingAttempt(ip=ip, at_ms=now))

    def taken(self, office: BookingOffice, service: str, day: date) -> dict[int, int]:
        """Live bookings per slot start of one service on one day."""
        with self.sessions() as db:
            rows = db.execute(
                select(BookingRow.slot_ms, func.count())
                .where(
                    BookingRow.kiosk == office.kiosk,
                    BookingRow.service == service,
                    BookingRow.day == day.isoformat(),
                    BookingRow.cancelled_ms.is_(None),
                )
                .group_by(BookingRow.slot_ms)
            )
            return {slot_ms: count for slot_ms, count in rows}

    def book(self, kiosk: str, service: str, day: date, slot: str, phone: str) -> Booked:
        office = self.office(kiosk)
        offered = office.service(service)
        if offered is None:
            raise BookingRefused("booking.bad_service")
        phone = normal_phone(phone)
        now = self.now_ms()
        for _ in range(CODE_TRIES):
            try:
                with self.sessions.begin() as db:
                    booked = self._book_in(
                        db, office, bookable(offered), day=day, slot=slot, phone=phone, now=now
                    )
                break
            except IntegrityError:  # the code was taken meanwhile: draw another
                continue
        else:
            raise RuntimeError("no free booking code after several draws")
        self.publish(office)
        return booked

    def _book_in(
        self,
        db: Session,
        office: BookingOffice,
        service: BookableService,
        *,
        day: date,
        slot: str,
        phone: str,
        now: int,
    ) -> Booked:
        """Place numbers make the limits hold across replicas: a slot's live bookings hold
        places 1..capacity and a phone's of a day 1..per_phone_per_day, each pair unique in
        the table, so two replicas taking the last place at once clash and one draws again."""
        rules = rules_of(office, self.section)
        phone_places = set(
            db.scalars(
                select(BookingRow.phone_place).where(
                    BookingRow.phone == phone,
                    BookingRow.day == day.isoformat(),
                    BookingRow.phone_place.is_not(None),
                )
            )
        )
        chosen = next((s for s in day_slots(service, day, rules) if s.label == slot), None)
        places: set[int | None] = set()
        if chosen is not None:
            places = set(
                db.scalars(
                    select(BookingRow.place).where(
                        BookingRow.kiosk == office.kiosk,
                        BookingRow.service == service.code,
                        BookingRow.slot_ms == chosen.start_ms,
                        BookingRow.place.is_not(None),
                    )
                )
            )
        held = check_booking(
            service,
            rules,
            day,
            slot,
            now,
            taken=len(places),
            phone_that_day=len(phone_places),
        )
        code = new_code(self._randbelow)
        db.add(
            BookingRow(
                code=code,
                kiosk=office.kiosk,
                service=service.code,
                day=day.isoformat(),
                slot_ms=held.start_ms,
                slot_min=rules.slot_min,
                phone=phone,
                created_ms=now,
                place=_first_free(places, rules.capacity),
                phone_place=_first_free(phone_places, rules.per_phone_per_day),
            )
        )
        db.flush()
        return Booked(code, office, service.code, held.start_ms, held.label, day)

    def find(self, code: str, phone: str) -> BookingRow:
        """A live booking by its code, only for the phone that made it."""
        code, phone = normal_code(code), normal_phone(phone)
        with self.sessions() as db:
            row = db.get(BookingRow, code)
            if row is None or row.phone != phone or row.cancelled_ms is not None:
                raise BookingRefused("booking.not_found")
            db.expunge(row)
            return row

    def cancel(self, code: str, phone: str) -> BookingRow:
        row = self.find(code, phone)
        if row.slot_ms <= self.now_ms():
            raise BookingRefused("booking.cancel_past")
        with self.sessions.begin() as db:
            live = db.get(BookingRow, row.code)
            assert live is not None
            live.cancelled_ms, live.place, live.phone_place = self.now_ms(), None, None
        self.publish(self.office(row.kiosk))
        return row

    # the kiosk's document

    def _kiosks(self, office: BookingOffice) -> list[str]:
        """Every kiosk of the office's queue, the office's own first."""
        peers = self.wire.peers(office.kiosk) if self.wire is not None else []
        return list(dict.fromkeys([office.kiosk, *peers]))

    def document(self, db: Session, office: BookingOffice, version: int) -> BookingsSet:
        today = local_day(self.now_ms(), office.tz).isoformat()
        rows = db.scalars(
            select(BookingRow)
            .where(
                BookingRow.kiosk == office.kiosk,
                BookingRow.day >= today,
                BookingRow.cancelled_ms.is_(None),
            )
            .order_by(BookingRow.slot_ms, BookingRow.code)
        )
        return BookingsSet(
            version=version,
            bookings=[
                Booking(code=r.code, service=r.service, slot_ms=r.slot_ms, slot_min=r.slot_min)
                for r in rows
            ],
        )

    def publish(self, office: BookingOffice) -> bool:
        """Sign the office's bookings at a new version and send them to each kiosk of its
        queue; False if one was not sent now."""
        if self.wire is None:
            return False
        wire = self.wire
        sent = True
        for kiosk in self._kiosks(office):
            try:
                key, topic = wire.key(), wire.topics().dev(kiosk, "bookings")
                with self.sessions.begin() as db:
                    signed = sign_next(
                        db,
                        topic,
                        "bookings.set",
                        build=lambda version, _last: self.document(db, office, version),
                        key=key,
                        now_ms=self.now_ms(),
                    )
                wire.publisher.publish(signed.topic, signed.payload, qos=1, retain=True)
            except Exception as exc:  # no site or no broker yet: the database keeps the truth
                log.warning("bookings of %s not sent now (%s); sent again later", kiosk, exc)
                sent = False
                continue
            with self.sessions.begin() as db:
                mark_delivered(db, signed, self.now_ms())
        return sent

    def resend_due(self) -> int:
        """Send each office's document again when the last was not delivered or is of an
        earlier day (past bookings dropped); returns how many were sent."""
        if self.wire is None or not self.section.offices:
            return 0
        try:
            topics = self.wire.topics()
        except Exception as exc:  # the site is not set up yet
            log.debug("bookings not sent: %s", exc)
            return 0
        sent = 0
        for office in self.section.offices:
            with self.sessions() as db:
                stale = any(
                    self._stale(db.get(PublishedDocumentRow, topics.dev(kiosk, "bookings")), office)
                    for kiosk in self._kiosks(office)
                )
            if stale and self.publish(office):
                sent += 1
        return sent

    def _stale(self, row: PublishedDocumentRow | None, office: BookingOffice) -> bool:
        """Never delivered, or signed on an earlier day (its past bookings are dropped)."""
        if row is None or row.delivered_ms is None:
            return True
        return local_day(row.signed_ms, office.tz) != local_day(self.now_ms(), office.tz)

    def running(self, every_s: float) -> AbstractContextManager[None]:
        return repeating("booking-documents", self.resend_due, every_s)


def _first_free(used: set[int | None], count: int) -> int:
    return min(set(range(1, count + 1)) - used)
