"""The one-stop office's queue operations: issue, call, recall, skip, transfer, serve, rate.

Rules on top of kiosk.ticket_store, with every instant passed in: the
kiosk's buttons, its pages and the tests drive the same code. Counters are
numbered 1..N; a counter calls the services configured for it (all by
default). Every refusal is a ``KioskError`` with a Vietnamese and an English
sentence, shown as is on the pages. Every change is reported through
``on_event`` as the contract's event (``ticket.*``, ``counter.state``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypedDict
from zoneinfo import ZoneInfo

from kiosk.numbering import (
    DEFAULT_TZ,
    RATINGS,
    QueuePolicy,
    Service,
    local_day,
    people_ahead,
)
from kiosk.ticket_store import IssueRefused, Ticket, TicketError, TicketStore, booked_note

if TYPE_CHECKING:
    from kiosk.replica import Replica
    from kiosk.shared_queue import SharedQueue
from protocol.events import (
    Body,
    CounterState,
    TicketCalled,
    TicketIssued,
    TicketRated,
    TicketServed,
    TicketSkipped,
    TicketTransferred,
)
from protocol.queue_wait import Wait, estimate_wait_s, recent_service_times_s, ticket_wait

OnEvent = Callable[[Body], None]
LAST_CALLS = 8


class KioskError(Exception):
    """A refusal to show a citizen or an officer, in Vietnamese and English."""

    def __init__(self, code: str, vi: str, en: str, status: int = 409) -> None:
        super().__init__(f"{vi} / {en}")
        self.code, self.vi, self.en, self.status = code, vi, en, status

    def body(self) -> dict[str, str]:
        return {"error": self.code, "vi": self.vi, "en": self.en, "message": str(self)}


@dataclass(frozen=True)
class OfficeSettings:
    services: tuple[Service, ...]
    counters: int
    counter_services: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    policy: QueuePolicy = field(default_factory=QueuePolicy)
    tz: str = DEFAULT_TZ


@dataclass(frozen=True)
class Issued:
    ticket: Ticket
    people_ahead: int
    wait_s: float | None


class TicketFields(TypedDict):
    """What every ``ticket.*`` event says about its ticket."""

    ticket_id: str
    number: str
    service: str
    queue: str
    day: str
    priority: bool


def _by(officer: str | None) -> dict[str, str]:
    """The officer field of an event, left out when nobody is signed in (older records)."""
    return {} if officer is None else {"officer": officer}


NOTE_MAX = 200


def ticket_fields(t: Ticket) -> TicketFields:
    return {
        "ticket_id": t.id,
        "number": t.number,
        "service": t.service,
        "queue": t.queue,
        "day": t.day.isoformat(),
        "priority": t.priority,
    }


class Office:
    """Thread-safe as far as the store is: each operation is one or two transactions."""

    def __init__(
        self,
        store: TicketStore,
        settings: OfficeSettings,
        on_event: OnEvent | None = None,
        replica: Replica | None = None,
    ) -> None:
        """``replica``: the office's queue shared with its other kiosks (docs/kiosk.md)."""
        self.store = store
        self.settings = settings
        self._services = {s.code: s for s in settings.services}
        self._on_event = on_event or (lambda _body: None)
        self.replica = replica

    @contextmanager
    def _shared(self) -> Iterator[SharedQueue | None]:
        """The shared queue, decided on before the ticket file, or None for a lone kiosk; a
        ticket that another kiosk's counter took first is refused as such."""
        if self.replica is None:
            yield None
            return
        from kiosk.shared_queue import Taken

        try:
            with self.replica.acting() as shared:
                yield shared
        except Taken:
            raise KioskError(
                "taken",
                "Số này vừa được một quầy khác gọi: xin gọi số tiếp theo",
                "Another counter has just called this number: call the next one",
            ) from None

    # lookups and checks

    def service(self, code: object) -> Service:
        if not isinstance(code, str) or code not in self._services:
            raise KioskError(
                "unknown_service",
                f"Không có dịch vụ {str(code)[:40]!r}",
                f"There is no service {str(code)[:40]!r}",
                422,
            )
        return self._services[code]

    def check_counter(self, counter: object) -> int:
        n = self.settings.counters
        if isinstance(counter, bool) or not isinstance(counter, int) or not 1 <= counter <= n:
            raise KioskError(
                "unknown_counter",
                f"Không có quầy số {str(counter)[:12]}: các quầy được đánh số từ 1 đến {n}",
                f"There is no counter {str(counter)[:12]}: counters are numbered 1 to {n}",
                422,
            )
        return counter

    def services_of(self, counter: int) -> tuple[str, ...]:
        return self.settings.counter_services.get(counter) or tuple(self._services)

    def _day(self, now_ms: int) -> Any:
        return local_day(now_ms, self.settings.tz)

    def local_time(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, ZoneInfo(self.settings.tz)).strftime(
            "%d/%m/%Y %H:%M"
        )

    def ticket(self, ticket_id: str) -> Ticket:
        try:
            return self.store.ticket(ticket_id)
        except TicketError:
            raise KioskError(
                "unknown_ticket", "Không tìm thấy vé này", "No such ticket", 404
            ) from None

    # the citizen's side

    def issue(
        self,
        code: str,
        now_ms: int,
        *,
        priority: bool = False,
        booking: tuple[str, int] | None = None,
    ) -> Issued:
        """A new number, durable before this returns (printing comes after). ``booking``:
        a booked citizen's code and slot start, kept as the ticket's ``booked`` action
        (and in the office's shared log) so that "next" calls it at its slot."""
        service = self.service(code)
        try:
            with self._shared() as shared:
                if shared is None:
                    t = self.store.issue(service, now_ms, self.settings.tz, priority=priority)
                else:
                    tz = self.settings.tz
                    ticket_id = shared.issue(service, now_ms, tz, priority, booking).id
                if booking is not None:
                    ticket_id = t.id if shared is None else ticket_id
                    note = booked_note(*booking)
                    self.store.record_action(ticket_id, "booked", now_ms, note=note)
            if shared is not None:
                t = self.store.ticket(ticket_id)
        except IssueRefused as exc:
            vi, en = exc.refusal.message.split(" / ", 1)
            raise KioskError(exc.refusal.reason, vi, en, 409) from None
        ahead = self.people_ahead(t)
        wait = self.wait_s(t, ahead, now_ms)
        booked = {} if booking is None else {"booked_slot_ms": booking[1]}  # a walk-in: absent
        self._on_event(
            TicketIssued(
                **ticket_fields(t), issued_ms=t.issued_ms, people_ahead=ahead, wait_s=wait, **booked
            )
        )
        return Issued(t, ahead, wait)

    def people_ahead(self, t: Ticket) -> int:
        """How many will be called before ``t`` in its queue (0 once it is called)."""
        if t.state != "waiting":
            return 0
        waiting = self.store.waiting(t.queue, t.day)
        if not any(w.id == t.id for w in waiting):
            return 0
        since = self.store.normal_since_priority((t.queue,), t.day)
        return people_ahead(t, waiting, self.settings.policy, since)

    def wait_s(self, t: Ticket, ahead: int, now_ms: int) -> float | None:
        """What the ticket prints and ``ticket.issued`` carries: None without history."""
        return estimate_wait_s(ahead, self._recent(t, now_ms), self._open_for(t.queue))

    def wait(self, t: Ticket, now_ms: int) -> Wait:
        """What the ticket's status page says (the default pace without history)."""
        return ticket_wait(self.people_ahead(t), self._recent(t, now_ms), self._open_for(t.queue))

    def _recent(self, t: Ticket, now_ms: int) -> list[float]:
        return recent_service_times_s(self.store.service_times(t.queue, t.day), now_ms)

    def _open_for(self, queue: str) -> int:
        paused = self.store.paused_counters()
        return sum(
            1
            for c in range(1, self.settings.counters + 1)
            if c not in paused and queue in self.services_of(c)
        )

    def to_rate(self, counter: int, now_ms: int) -> Ticket | None:
        """The ticket a counter's rating device rates: the one served last there, if unrated."""
        return _to_rate(self.store.tickets(self._day(now_ms)), counter)

    def rate(
        self, counter: int, level: object, now_ms: int, ticket_id: str | None = None
    ) -> Ticket:
        """The citizen's rating of the service just received at ``counter``: once, and only
        for the ticket served last there (an earlier citizen's service is not theirs)."""
        self.check_counter(counter)
        if isinstance(level, bool) or not isinstance(level, int) or level not in RATINGS:
            raise KioskError(
                "bad_rating",
                "Mức đánh giá là từ 1 (Rất không hài lòng) đến 5 (Rất hài lòng)",
                "A rating is 1 (very dissatisfied) to 5 (very satisfied)",
                422,
            )
        if ticket_id is not None:
            asked = self.ticket(ticket_id)
            if asked.rating is not None:
                raise KioskError(
                    "already_rated",
                    f"Lượt phục vụ số {asked.number} đã được đánh giá rồi: mỗi lượt chỉ được"
                    " đánh giá một lần. Cảm ơn quý khách",
                    f"Number {asked.number} has already been rated: each service is rated"
                    " once. Thank you",
                )
        target = self.to_rate(counter, now_ms)
        if ticket_id is not None and (target is None or target.id != ticket_id):
            raise KioskError(
                "not_to_rate",
                f"Số này không phải lượt vừa phục vụ ở quầy {counter}: xin chờ cán bộ bấm Đã xong",
                f"This number is not the one just served at counter {counter}: wait for the"
                " officer to press Served",
            )
        if target is None:
            raise KioskError(
                "nothing_to_rate",
                f"Quầy {counter} chưa có lượt phục vụ nào để đánh giá",
                f"Counter {counter} has no finished service to rate",
            )
        try:
            t = self.store.rate(target.id, level)
        except TicketError:  # rated by another tap in between
            raise KioskError(
                "already_rated",
                f"Lượt phục vụ số {target.number} đã được đánh giá rồi",
                f"Number {target.number} has already been rated",
            ) from None
        served_by = [a.officer for a in self.store.actions(t.id) if a.action == "served"]
        officer = served_by[-1] if served_by else None
        self.store.record_action(t.id, "rated", now_ms, counter=counter, officer=officer)
        vi, en = RATINGS[level]
        self._on_event(
            TicketRated(
                **ticket_fields(t),
                counter=counter,
                level=level,
                label_vi=vi,
                label_en=en,
                **_by(officer),
            )
        )
        return t

    # the officer's side

    def current(self, counter: int, now_ms: int) -> Ticket | None:
        """The ticket being served at ``counter``: the last one called there, still called."""
        called = [
            t
            for t in self.store.tickets(self._day(now_ms))
            if t.counter == counter and t.state == "called"
        ]
        return max(called, key=lambda t: t.called_ms or 0) if called else None

    def _current_or_refuse(self, counter: int, now_ms: int) -> Ticket:
        t = self.current(self.check_counter(counter), now_ms)
        if t is None:
            raise KioskError(
                "no_ticket",
                f"Quầy {counter} không có số nào đang phục vụ",
                f"Counter {counter} is not serving any number",
            )
        return t

    def _refuse_paused(self, counter: int) -> None:
        if counter in self.store.paused_counters():
            raise KioskError(
                "paused",
                f"Quầy {counter} đang tạm dừng: bấm Tiếp tục trước",
                f"Counter {counter} is paused: resume it first",
            )

    def _called(self, t: Ticket, counter: int, now_ms: int, officer: str | None) -> Ticket:
        self.store.record_action(t.id, "called", now_ms, counter=counter, officer=officer)
        self._on_event(
            TicketCalled(
                **ticket_fields(t),
                counter=counter,
                recall=t.recalls,
                waited_ms=now_ms - t.issued_ms,
                **_by(officer),
            )
        )
        return t

    def call_next(self, counter: int, now_ms: int, officer: str | None = None) -> Ticket | None:
        """The next number for ``counter`` by the priority policy; None if nobody waits.

        A number still called at this counter counts as served: "next" means done.
        """
        self.check_counter(counter)
        self._refuse_paused(counter)
        with self._shared() as shared:
            if self.current(counter, now_ms) is not None:
                self.served(counter, now_ms, officer)
            if shared is None:
                t = self.store.call_next(
                    counter, self.services_of(counter), self.settings.policy, now_ms,
                    self.settings.tz,
                )  # fmt: skip
            else:
                q = shared.call_next(
                    counter, self.services_of(counter), self.settings.policy, now_ms,
                    tz=self.settings.tz, officer=officer or "",
                )  # fmt: skip
        if shared is not None:
            t = None if q is None else self.store.ticket(q.id)
        return None if t is None else self._called(t, counter, now_ms, officer)

    def call_number(
        self, counter: int, number: str, now_ms: int, officer: str | None = None
    ) -> Ticket:
        """Call one number out of turn: a waiting one, or a no-show who came back.

        As with "next", the number still called at this counter counts as served.
        """
        self.check_counter(counter)
        self._refuse_paused(counter)
        wanted = number.strip().upper()[:16]
        t = self.store.by_number(self._day(now_ms), wanted)
        if t is None:
            raise KioskError(
                "unknown_number",
                f"Hôm nay không có số {wanted}: xin kiểm tra lại số trên vé",
                f"There is no number {wanted} today: check the number on the ticket",
                404,
            )
        if t.state not in ("waiting", "skipped"):
            where = {
                "called": (f"đang được gọi ở quầy {t.counter}", f"called at counter {t.counter}"),
                "served": ("đã được phục vụ xong", "already served"),
            }.get(t.state, (t.state, t.state))
            raise KioskError(
                "cannot_call",
                f"Không gọi được số {t.number}: số này {where[0]}",
                f"Cannot call {t.number}: it is {where[1]}",
            )
        with self._shared() as shared:
            current = self.current(counter, now_ms)
            if current is not None:
                self.served(counter, now_ms, officer)
            was = t.state
            if shared is not None:
                shared.record("call", t.id, now_ms, counter=counter, officer=officer or "")
            t = self.store.call_ticket(t.id, counter, now_ms)
        if was == "skipped":
            self.store.record_action(t.id, "brought_back", now_ms, counter=counter, officer=officer)
        return self._called(t, counter, now_ms, officer)

    def recall(self, counter: int, now_ms: int, officer: str | None = None) -> Ticket:
        t = self.store.recall(self._current_or_refuse(counter, now_ms).id)
        return self._called(t, counter, now_ms, officer)

    def skip(self, counter: int, now_ms: int, officer: str | None = None) -> Ticket:
        """A no-show: the citizen did not come after the calls (``call_number`` brings back)."""
        with self._shared() as shared:
            t = self._current_or_refuse(counter, now_ms)
            if shared is not None:
                shared.record("skip", t.id, now_ms, counter=counter, officer=officer or "")
            t = self.store.skip(t.id)
        self.store.record_action(t.id, "skipped", now_ms, counter=counter, officer=officer)
        self._on_event(
            TicketSkipped(**ticket_fields(t), counter=counter, reason="no_show", **_by(officer))
        )
        return t

    def served(self, counter: int, now_ms: int, officer: str | None = None) -> Ticket:
        with self._shared() as shared:
            t = self._current_or_refuse(counter, now_ms)
            if shared is not None:
                shared.record("serve", t.id, now_ms, counter=counter, officer=officer or "")
            t = self.store.serve_done(t.id, now_ms)
        self.store.record_action(t.id, "served", now_ms, counter=counter, officer=officer)
        self._on_event(
            TicketServed(
                **ticket_fields(t),
                counter=counter,
                service_ms=now_ms - (t.called_ms or now_ms),
                **_by(officer),
            )
        )
        return t

    def transfer(
        self,
        counter: int,
        to_service: str,
        now_ms: int,
        officer: str | None = None,
        note: str | None = None,
    ) -> Ticket:
        """Send the citizen at ``counter`` to another service's queue, keeping the number;
        the note (what the next counter should know) goes with the record."""
        target = self.service(to_service)
        note = (note or "").strip() or None
        if note is not None and len(note) > NOTE_MAX:
            raise KioskError(
                "note_too_long",
                f"Ghi chú dài tối đa {NOTE_MAX} ký tự",
                f"A note is at most {NOTE_MAX} characters",
                422,
            )
        current = self._current_or_refuse(counter, now_ms)
        if target.code == current.queue:
            raise KioskError(
                "same_service",
                "Số này đã ở hàng của dịch vụ đó",
                "This number already waits for that service",
            )
        with self._shared() as shared:
            if shared is not None:
                shared.record("transfer", current.id, now_ms, queue=target.code)
            t = self.store.transfer(current.id, target.code)
        self.store.record_action(
            t.id, "transferred", now_ms, counter=counter, officer=officer, note=note
        )
        self._on_event(
            TicketTransferred(
                **ticket_fields(t),
                counter=counter,
                from_queue=current.queue,
                to_queue=target.code,
                **_by(officer),
                **({} if note is None else {"note": note}),
            )
        )
        return t

    def handover_note(self, ticket_id: str) -> str | None:
        """The note of the last transfer of this ticket, for the counter that takes it over
        (shown on the counter's page only: a note about a citizen is not for the hall)."""
        notes = [a.note for a in self.store.actions(ticket_id) if a.action == "transferred"]
        return notes[-1] if notes else None

    def set_paused(self, counter: int, paused: bool, officer: str | None = None) -> None:
        self.check_counter(counter)
        self.store.set_paused(counter, paused)
        self._on_event(CounterState(counter=counter, paused=paused, **_by(officer)))

    # what the pages show

    def board(self, now_ms: int) -> dict[str, Any]:
        """The hall display's content: each counter's number and the last calls."""
        day = self._day(now_ms)
        tickets = self.store.tickets(day)
        paused = self.store.paused_counters()
        counters = []
        for c in range(1, self.settings.counters + 1):
            cur = [t for t in tickets if t.counter == c and t.state == "called"]
            now = max(cur, key=lambda t: t.called_ms or 0) if cur else None
            rate = _to_rate(tickets, c)
            counters.append(
                {
                    "counter": c,
                    "number": now.number if now else None,
                    "ticket_id": now.id if now else None,
                    "paused": c in paused,
                    "services": list(self.services_of(c)),
                    "to_rate": None
                    if rate is None
                    else {"ticket_id": rate.id, "number": rate.number},
                }
            )
        called = sorted(
            (t for t in tickets if t.called_ms is not None and t.counter is not None),
            key=lambda t: t.called_ms or 0,
            reverse=True,
        )
        waiting = {s.code: 0 for s in self.settings.services}
        for t in tickets:
            if t.state == "waiting" and t.queue in waiting:
                waiting[t.queue] += 1
        return {
            "counters": counters,
            "last_calls": [
                {"number": t.number, "counter": t.counter, "called_ms": t.called_ms}
                for t in called[:LAST_CALLS]
            ],
            "waiting": waiting,
            "no_shows": [
                {"number": t.number, "counter": t.counter} for t in tickets if t.state == "skipped"
            ],
        }


def _to_rate(tickets: Sequence[Ticket], counter: int) -> Ticket | None:
    served = [t for t in tickets if t.counter == counter and t.state == "served"]
    last = max(served, key=lambda t: t.served_ms or 0) if served else None
    return last if last is not None and last.rating is None else None


def counter_services(raw: Mapping[str, Sequence[str]]) -> dict[int, tuple[str, ...]]:
    """``[kiosk] counter_services`` (TOML keys are strings) keyed by counter number."""
    return {int(k): tuple(v) for k, v in raw.items()}
