"""Tables of the queue: bookings ahead and the public page's attempts (for its rate limit).

Times are epoch milliseconds (UTC). A phone number is kept only to count a person's
bookings of a day and to check a cancel; it is never shown back nor sent to a kiosk.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base


class BookingRow(Base):
    __tablename__ = "bookings"
    __table_args__ = (
        Index("ix_bookings_kiosk_slot", "kiosk", "slot_ms"),
        Index("ix_bookings_phone_day", "phone", "day"),
        # a live booking's place in its slot and in its phone's day (NULL once cancelled):
        # unique, so the limits hold when several replicas book at once
        UniqueConstraint("kiosk", "service", "slot_ms", "place", name="uq_bookings_place"),
        UniqueConstraint("phone", "day", "phone_place", name="uq_bookings_phone_place"),
    )

    code: Mapped[str] = mapped_column(String(8), primary_key=True)
    kiosk: Mapped[str] = mapped_column(String(48))
    service: Mapped[str] = mapped_column(String(40))
    day: Mapped[str] = mapped_column(String(10))  # the office's local day, yyyy-mm-dd
    slot_ms: Mapped[int] = mapped_column(BigInteger)
    slot_min: Mapped[int] = mapped_column(Integer)
    phone: Mapped[str] = mapped_column(String(16))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    cancelled_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    place: Mapped[int | None] = mapped_column(Integer, nullable=True)
    phone_place: Mapped[int | None] = mapped_column(Integer, nullable=True)


class BookingAttempt(Base):
    """One booking or cancel asked of the public page, by address: the rate limit's count."""

    __tablename__ = "booking_attempts"
    __table_args__ = (Index("ix_booking_attempts_ip_at", "ip", "at_ms"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ip: Mapped[str] = mapped_column(String(45))
    at_ms: Mapped[int] = mapped_column(BigInteger)
