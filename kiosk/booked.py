"""Booked citizens among the walk-ins: who is called when (the rule, pure: no I/O, no clock).

A booked citizen types their code at the kiosk and gets an ordinary number, issued then.
What differs is when it is called, against the slot they booked (``slot_ms``):

- **early** (before the slot starts): not called yet; walk-ins go on being called;
- **due** (from the slot's start to ``grace_ms`` after it): called first among the normal
  tickets of the counter's queues, by slot then number; priority citizens keep their place
  by the queue's own policy;
- **late** (past the grace): an ordinary ticket, in the order it was issued.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, TypeVar

from kiosk.numbering import Waiting

T = TypeVar("T", bound=Waiting)
Standing = Literal["early", "due", "late"]
DEFAULT_GRACE_MS = 15 * 60_000


def standing(slot_ms: int, now_ms: int, grace_ms: int = DEFAULT_GRACE_MS) -> Standing:
    if now_ms < slot_ms:
        return "early"
    return "due" if now_ms < slot_ms + grace_ms else "late"


def with_bookings(
    order: Sequence[T],
    slots: Mapping[str, int],
    now_ms: int,
    grace_ms: int = DEFAULT_GRACE_MS,
) -> list[T]:
    """``order`` (the queue policy's, numbering.call_order) with the booked tickets moved.

    ``slots`` maps a booked ticket's number to its slot's start. Early ones leave the order,
    due ones go before the first normal ticket, late ones stay where the policy put them.
    """
    if grace_ms < 0:
        raise ValueError(f"grace_ms must be >= 0, not {grace_ms}")

    def of(t: T) -> Standing | None:
        slot = slots.get(t.number)
        return None if slot is None else standing(slot, now_ms, grace_ms)

    due = sorted(
        (t for t in order if of(t) == "due" and not t.priority),
        key=lambda t: (slots[t.number], t.number),
    )
    rest = [t for t in order if of(t) not in ("early", "due") or (t.priority and of(t) == "due")]
    first_normal = next((i for i, t in enumerate(rest) if not t.priority), len(rest))
    return rest[:first_normal] + due + rest[first_normal:]
