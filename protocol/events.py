"""Bodies of the events an edge reports (PROTOCOL.md, "Events"; docs/protocol.md).

One Struct per event type, registered in ``EVENT_BODIES``: the edge builds
its records with them (``new_event``), so a misspelt field fails in mypy, and
the controller reads a stored or received event's body with ``read_body``.

The wire is what it always was: ``Body.wire()`` gives exactly the fields the
emitter set (a ``null`` it set included, a field it left out absent), in the
Structs' field order, so old agents, stored rows and new agents agree byte for
byte; a body read keeps what came, unknown fields included: a newer agent may
report more. Types are strict (JSON has no ambiguity to coerce),
and text is bounded so one record stays well under the payload limit.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from plumbing.validation import problems
from protocol.commands import EpochMs, Priority
from protocol.errors import Refusal, RefusalReason
from protocol.uplink import Event

DETAIL_MAX = 2000
MAX_GAPS = 100  # a relay's gaps in one record; a relay keeps the first ones
Detail = Annotated[str, Meta(max_length=DETAIL_MAX)]  # a sentence for people: an error, why
Reason = Annotated[str, Meta(min_length=1, max_length=64)]  # a machine word; the list grows
Label = Annotated[str, Meta(max_length=200)]
PlayKey = Annotated[str, Meta(min_length=1, max_length=200)]
Origin = Literal["command", "schedule", "call"]
Outcome = Literal["completed", "preempted", "stopped", "failed"]
DurationMs = Annotated[int, Meta(ge=0, le=2**53)]
# a difference of two wall clocks: negative when the device's clock stepped back
ElapsedMs = Annotated[int, Meta(ge=-(2**53), le=2**53)]
TicketNumber = Annotated[str, Meta(min_length=1, max_length=16)]
ServiceCode = Annotated[str, Meta(min_length=1, max_length=40)]
Counter = Annotated[int, Meta(ge=1, le=99)]
LocalDay = Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}\Z")]
Officer = Annotated[str, Meta(min_length=1, max_length=64)]  # the officer signed in, by id


class _Remembers(msgspec.StructMeta):
    """Builds a body remembering which fields its emitter set, for ``Body.wire``."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        body = super().__call__(*args, **kwargs)
        body.__dict__["_set"] = tuple(kwargs)
        return body


class Body(msgspec.Struct, metaclass=_Remembers, dict=True, kw_only=True):
    """The body of one event type, named by ``TYPE``.

    Every field is keyword-only (``kw_only`` in each class: msgspec does not inherit
    it), so that a required field may follow an optional one and a subclass's
    narrowing of a field keeps the field's place on the wire."""

    TYPE: ClassVar[str]

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name not in self.__struct_fields__:
            return
        read = self.__dict__.get("_read")
        if read is not None:  # a body read, then changed
            self.__dict__["_read"] = {**read, name: msgspec.to_builtins(value)}
        else:  # set after building: set all the same
            self.__dict__["_set"] = (*self.__dict__.get("_set", ()), name)

    def wire(self) -> dict[str, Any]:
        """The body as ``Event.body`` carries it: the fields set (or read), nothing more."""
        read = self.__dict__.get("_read")
        if read is not None:
            return dict(read)
        chosen = self.__dict__.get("_set", ())
        wire: dict[str, Any] = msgspec.to_builtins(self)
        return {k: v for k, v in wire.items() if k in chosen}

    @property
    def extra(self) -> dict[str, Any]:
        """The fields of a body read that this side does not know (a newer agent's)."""
        return {k: v for k, v in self.wire().items() if k not in self.__struct_fields__}


# the device's life


class AgentStarted(Body, kw_only=True):
    TYPE = "agent.started"
    agent: Annotated[str, Meta(max_length=64)]
    boot: EpochMs


# proof of play


class PlayRecord(Body, kw_only=True):
    """What every play record says: which request (``key``), and from where."""

    key: PlayKey  # the command id, or "<item id>@<local ISO>" of an occurrence
    origin: Origin | None = None
    item_id: Annotated[str, Meta(max_length=64)] | None = None
    occurrence: Annotated[str, Meta(max_length=64)] | None = None  # local ISO start
    priority: Priority | None = None
    label: Label = ""
    planned_ms: EpochMs | None = None  # its ``at``, the occurrence's start, or when it came
    resumed_from_ms: DurationMs = 0  # a preempted remainder: where it resumed
    skipped_ms: DurationMs = 0  # joined late: how much of its beginning was not played


class _Taken(PlayRecord, kw_only=True):
    """A request the player took: all of it is known."""

    origin: Origin
    priority: Priority
    planned_ms: EpochMs


class PlayStarted(_Taken, kw_only=True):
    TYPE = "play.started"
    actual_ms: EpochMs  # when the first sample went to the sound device


class RelayGap(msgspec.Struct):
    """A stretch of a stream relay that did not air the stream (filled with silence, or
    with the fallback clip): from ``offset_ms`` after the play's first sample."""

    offset_ms: DurationMs
    length_ms: DurationMs
    reason: Reason  # dropped (the connection ended or ran dry), dead_air (connected, silent)


class PlayFinished(_Taken, kw_only=True):
    TYPE = "play.finished"
    actual_ms: EpochMs | None
    outcome: Outcome
    played_ms: DurationMs
    error: Detail = ""
    resumes: bool = False  # preempted, and the rest plays once what cut in has ended
    # a stream relay only: how much of the stream itself aired, and where it did not
    relayed_ms: DurationMs | None = None
    gaps: Annotated[list[RelayGap], Meta(max_length=MAX_GAPS)] = []


class PlayInterrupted(_Taken, kw_only=True):
    """A play the agent stopped running under (a power cut, a crash), told at its next
    start from the mark it kept on disk; the player's own ends are ``play.finished``."""

    TYPE = "play.interrupted"
    actual_ms: EpochMs | None  # null: a preempted remainder, still waiting to resume
    played_ms: DurationMs  # aired by the last checkpoint: at least this much
    checkpoint_ms: EpochMs  # when it was last known to be playing (or waiting)
    reason: Reason  # power_loss (the device rebooted), crash (the agent alone), agent_down


class PlayMissed(PlayRecord, kw_only=True):
    """Missed in the player, or before it: a clip that could not be fetched is
    reported with its key and planned start only."""

    TYPE = "play.missed"
    # quiet_hours, late, device_down, clip_unavailable, clip_unreadable, expired, superseded, ...
    reason: Reason
    error: Detail = ""  # the player's account of a failure
    detail: Detail = ""  # the clip cache's account of a failed fetch


class AmpState(Body, kw_only=True):
    TYPE = "amp.state"
    on: bool
    reason: Reason  # preroll, idle, shutdown


class AudioFault(Body, kw_only=True):
    TYPE = "audio.fault"
    clip: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")] | None = None
    reason: Reason  # corrupt, hash_mismatch, device_busy, stream_dropped, ...
    detail: Detail = ""
    key: PlayKey | None = None  # the play it hit


# the queue


class TicketRecord(Body, kw_only=True):
    """What every ``ticket.*`` record says about its ticket."""

    ticket_id: Annotated[str, Meta(min_length=1, max_length=64)]
    number: TicketNumber
    service: ServiceCode  # the service that issued it
    queue: ServiceCode  # the service it waits for now
    day: LocalDay
    priority: bool


class TicketIssued(TicketRecord, kw_only=True):
    TYPE = "ticket.issued"
    issued_ms: EpochMs
    people_ahead: Annotated[int, Meta(ge=0)]
    wait_s: Annotated[float, Meta(ge=0)] | None  # null without history
    # a booked citizen's ticket: the booked slot's start; absent for a walk-in, and from
    # older agents
    booked_slot_ms: EpochMs | None = None


class TicketCalled(TicketRecord, kw_only=True):
    TYPE = "ticket.called"
    counter: Counter
    recall: Annotated[int, Meta(ge=0)]  # 0 for a first call, then 1, 2, ...
    waited_ms: ElapsedMs
    officer: Officer | None = None  # absent from older agents


class TicketServed(TicketRecord, kw_only=True):
    TYPE = "ticket.served"
    counter: Counter
    service_ms: ElapsedMs  # from the call to done
    officer: Officer | None = None  # absent from older agents


class TicketSkipped(TicketRecord, kw_only=True):
    TYPE = "ticket.skipped"
    counter: Counter
    reason: Reason  # no_show
    officer: Officer | None = None  # absent from older agents


class TicketTransferred(TicketRecord, kw_only=True):
    TYPE = "ticket.transferred"
    counter: Counter
    from_queue: ServiceCode
    to_queue: ServiceCode
    officer: Officer | None = None  # absent from older agents
    note: Label | None = None  # the officer's word to the next counter


class TicketRated(TicketRecord, kw_only=True):
    TYPE = "ticket.rated"
    counter: Counter
    level: Annotated[int, Meta(ge=1, le=5)]  # 5 = Rất hài lòng
    label_vi: Label
    label_en: Label
    officer: Officer | None = None  # who served the citizen


class CounterState(Body, kw_only=True):
    TYPE = "counter.state"
    counter: Counter
    paused: bool
    officer: Officer | None = None  # absent from older agents


class PrinterStatus(Body, kw_only=True):
    TYPE = "printer.status"
    online: bool
    # "unknown" when the printer does not answer: never read as paper "ok"
    paper: Literal["ok", "near_end", "out", "unknown"]
    cover: Literal["open", "closed", "unknown"]
    # numbers issued and kept for printing
    pending: Annotated[list[TicketNumber], Meta(max_length=10_000)] = []
    # one word for all of it (kiosk.printer.PrinterStatus.state); absent from older agents
    state: Literal["ready", "near_end", "paper_out", "cover_open", "error", "offline"] | None = None
    fault: Literal["unplugged", "silent", "garbled"] | None = None  # why it did not answer
    # numbers whose ticket could not be rendered: the citizen has the number on screen only
    unprintable: Annotated[list[TicketNumber], Meta(max_length=1000)] = []


EVENT_BODIES: dict[str, type[Body]] = {
    model.TYPE: model
    for model in (
        AgentStarted,
        PlayStarted,
        PlayFinished,
        PlayInterrupted,
        PlayMissed,
        AmpState,
        AudioFault,
        TicketIssued,
        TicketCalled,
        TicketServed,
        TicketSkipped,
        TicketTransferred,
        TicketRated,
        CounterState,
        PrinterStatus,
    )
}
EVENT_TYPES = frozenset(EVENT_BODIES)


def new_event(body: Body, ts_ms: int) -> Event:
    """An event of ``body``'s type with a fresh id; ids are what the controller dedupes on."""
    return Event(id=uuid.uuid4().hex, type=body.TYPE, ts=ts_ms, body=body.wire())


def read_body(event_type: str, body: object) -> Body | None:
    """An event's body (received, or stored) as its type's model; None for a type this
    side does not know, which is kept as it came (a newer agent's).

    Raises ``Refusal`` (``bad_body``) for a body that does not fit, saying where.
    """
    model = EVENT_BODIES.get(event_type)
    if model is None:
        return None
    try:
        read = msgspec.convert(body, model)
    except msgspec.ValidationError:
        raise Refusal(RefusalReason.BAD_BODY, _explain(event_type, body, model)) from None
    read.__dict__["_read"] = body  # a dict: it converted to a Struct
    return read


def detail_text(text: str) -> str:
    """Free text (an exception's message, ffmpeg's last lines) cut to what a body carries."""
    return text if len(text) <= DETAIL_MAX else text[: DETAIL_MAX - 1] + "…"


def _explain(event_type: str, body: object, model: type[Body]) -> str:
    found = problems(body, model)
    first = found[0]
    where = ".".join(str(p) for p in first.loc) or "(the body)"
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{event_type} body: {where}: {first.msg}{more}"
