"""Citizens who booked ahead, at the kiosk: the controller's list, codes redeemed, their calls.

The list is the last ``bookings.set`` the agent accepted: it keeps it in its store and hands
it over again at start, so codes are redeemed with no network. A redeemed code is a
``booked`` action on the ticket it gave (kiosk.office.Office.issue; a peer kiosk's, mirrored
from the office's shared log), so it is used once, and its slot is known to "next" after a
restart and at every kiosk of the office. Who is called when is kiosk.booked's rule.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from zoneinfo import ZoneInfo

from kiosk.booked import with_bookings
from kiosk.numbering import call_order, local_day
from kiosk.office import KioskError, Office
from kiosk.ticket_store import Ticket
from protocol.commands import BOOKING_CODE, Booking, BookingsSet, Strict

_CODE = re.compile(BOOKING_CODE)


class KioskBookings:
    def __init__(self, office: Office, grace_ms: int) -> None:
        self.office = office
        self.grace_ms = grace_ms
        self._by_code: dict[str, Booking] = {}
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self._by_code)

    def apply(self, _topic: str, body: Strict) -> None:
        """The agent's handler for a verified ``bookings.set``: it replaces the list."""
        assert isinstance(body, BookingsSet)
        with self._lock:
            self._by_code = {b.code: b for b in body.bookings}

    def find(self, raw: object, now_ms: int) -> Booking:
        """The booking a typed or scanned code names, if it may be redeemed now."""
        code = re.sub(r"[\s\-]", "", raw if isinstance(raw, str) else "").upper()[:16]
        if not _CODE.fullmatch(code):
            raise KioskError(
                "bad_code",
                "Mã đặt lịch gồm 6 chữ và số, ví dụ K7M2QX. Vui lòng nhập lại.",
                "A booking code is 6 letters and digits, e.g. K7M2QX. Please type it again.",
                422,
            )
        with self._lock:
            booking = self._by_code.get(code)
        if booking is None:
            raise KioskError(
                "unknown_booking",
                "Không tìm thấy lịch hẹn với mã này. Vui lòng kiểm tra lại mã, hoặc lấy số thường.",
                "No booking has this code. Please check the code, or take a normal number.",
                404,
            )
        tz = self.office.settings.tz
        if local_day(booking.slot_ms, tz) != local_day(now_ms, tz):
            at = datetime.fromtimestamp(booking.slot_ms / 1000, ZoneInfo(tz))
            raise KioskError(
                "other_day",
                f"Lịch hẹn của bạn là {at:%H:%M} ngày {at:%d/%m/%Y}. "
                "Vui lòng quay lại đúng ngày hẹn, hoặc lấy số thường.",
                f"Your booking is at {at:%H:%M} on {at:%d/%m/%Y}. "
                "Please come back that day, or take a normal number.",
            )
        used = next((t for t, code_ in self._redeemed(now_ms) if code_ == code), None)
        if used is not None:
            raise KioskError(
                "booking_used",
                f"Mã này đã được dùng để lấy số {used.number}.",
                f"This code was already used for number {used.number}.",
            )
        return booking

    def _redeemed(self, now_ms: int) -> list[tuple[Ticket, str]]:
        day = local_day(now_ms, self.office.settings.tz)
        found = []
        for ticket, note in self.office.store.notes_of_day("booked", day):
            code = json.loads(note or "{}").get("code")
            if isinstance(code, str):
                found.append((ticket, code))
        return found

    def slots_today(self, now_ms: int) -> dict[str, int]:
        """Today's booked numbers and their slots' starts."""
        day = local_day(now_ms, self.office.settings.tz)
        slots = {}
        for ticket, note in self.office.store.notes_of_day("booked", day):
            slot = json.loads(note or "{}").get("slot_ms")
            if isinstance(slot, int):
                slots[ticket.number] = slot
        return slots

    def next_for(self, counter: int, now_ms: int) -> Ticket | None:
        """Whom "next" calls at ``counter`` with the booked tickets in their places
        (None: nobody may be called now, though early bookings may wait)."""
        office = self.office
        day = local_day(now_ms, office.settings.tz)
        services = office.services_of(counter)
        waiting = [t for s in services for t in office.store.waiting(s, day)]
        since = office.store.normal_since_priority(services, day)
        order = call_order(waiting, office.settings.policy, since)
        moved = with_bookings(order, self.slots_today(now_ms), now_ms, self.grace_ms)
        return moved[0] if moved else None
