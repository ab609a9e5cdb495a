"""What the kiosks of one office say to each other on their ``office`` topics.

Each kiosk publishes only on ``{root}/dev/{its id}/office`` (the broker's ACL
holds it to its own id, and lets only the kiosks of its office read it), and
only its own entries of the office's queue log (kiosk/office_log.py):

- ``office.entries``: some of the sender's entries, in its own seq order;
- ``office.sync``: what the sender holds (``have``: per kiosk, the highest seq
  up to which it has every entry); each peer answers with the entries of its
  own that the sender lacks. A kiosk sends it on every (re)connection.

``read_office`` checks a payload against the topic it came on: a message,
or an entry, that names another kiosk than the topic's is refused.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from plumbing.validation import problems
from protocol.commands import EpochMs
from protocol.errors import Refusal, RefusalReason
from protocol.topics import ID_PATTERN

OFFICE_VERSION = 1
MAX_ENTRIES = 200  # per message; a sync after a long cut is sent in batches
MAX_OFFICE_BYTES = 128 * 1024
KioskId = Annotated[str, Meta(pattern=rf"^{ID_PATTERN}\Z")]
OfficeId = Annotated[str, Meta(pattern=rf"^{ID_PATTERN}\Z")]
Seq = Annotated[int, Meta(ge=1, le=2**53)]
Short = Annotated[str, Meta(max_length=64)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class OfficeEntry(_Strict, frozen=True, omit_defaults=True):
    """One act of the office's queue log, as the kiosk that did it wrote it; the fields
    left at their defaults are not written, so a walk-in's entry reads the same to an
    older kiosk."""

    seq: Seq
    at_ms: EpochMs
    kind: Literal["issue", "call", "skip", "serve", "transfer"]
    ticket: Annotated[str, Meta(min_length=1, max_length=64)]
    day: Annotated[str, Meta(pattern=r"^(\d{4}-\d{2}-\d{2})?\Z")] = ""
    service: Annotated[str, Meta(max_length=40)] = ""
    n: Annotated[int, Meta(ge=0, le=999_999)] = 0
    number: Annotated[str, Meta(max_length=16)] = ""
    priority: bool = False
    counter: Annotated[int, Meta(ge=0, le=99)] = 0
    queue: Annotated[str, Meta(max_length=40)] = ""
    officer: Short = ""
    # a booked citizen's issue: the booking's code and its slot's start (kiosk/booked.py);
    # sent only when set, so a walk-in's entry reads the same to an older kiosk
    booking: Annotated[str, Meta(max_length=16)] = ""
    slot_ms: Annotated[int, Meta(ge=0, le=2**53)] = 0

    def __post_init__(self) -> None:
        if self.kind == "issue" and not (self.day and self.service and self.n and self.number):
            raise ValueError("an issue names its day, service, n and number")
        if self.kind in ("call", "skip", "serve") and not self.counter:
            raise ValueError(f"a {self.kind} names its counter (1-99)")
        if self.kind == "transfer" and not self.queue:
            raise ValueError("a transfer names the queue it moves the ticket to")


class OfficeEntries(_Strict, frozen=True):
    v: Literal[1]
    type: Literal["office.entries"]
    office: OfficeId
    kiosk: KioskId
    entries: Annotated[list[OfficeEntry], Meta(min_length=1, max_length=MAX_ENTRIES)]


class OfficeSync(_Strict, frozen=True):
    v: Literal[1]
    type: Literal["office.sync"]
    office: OfficeId
    kiosk: KioskId
    have: Annotated[dict[KioskId, Annotated[int, Meta(ge=0, le=2**53)]], Meta(max_length=64)]


OfficeMessage = OfficeEntries | OfficeSync


def office_entries(office: str, kiosk: str, entries: list[OfficeEntry]) -> bytes:
    msg = OfficeEntries(v=1, type="office.entries", office=office, kiosk=kiosk, entries=entries)
    return msgspec.json.encode(msg)


def office_sync(office: str, kiosk: str, have: dict[str, int]) -> bytes:
    return msgspec.json.encode(
        OfficeSync(v=1, type="office.sync", office=office, kiosk=kiosk, have=have)
    )


def read_office(payload: bytes, topic_kiosk: str, office: str) -> OfficeMessage:
    """The message of ``payload``, from the kiosk whose topic it came on; raises Refusal."""
    if len(payload) > MAX_OFFICE_BYTES:
        raise Refusal(RefusalReason.TOO_LARGE, f"{len(payload)} bytes, over {MAX_OFFICE_BYTES}")
    try:
        doc: Any = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refusal(RefusalReason.NOT_JSON, f"not JSON: {exc}") from None
    kind = doc.get("type") if isinstance(doc, dict) else None
    model: type[OfficeEntries | OfficeSync]
    if kind == "office.entries":
        model = OfficeEntries
    elif kind == "office.sync":
        model = OfficeSync
    else:
        raise Refusal(RefusalReason.UNKNOWN_TYPE, f"type {kind!r} is not an office message")
    try:
        msg = msgspec.convert(doc, model)
    except msgspec.ValidationError:
        first = problems(doc, model)[0]
        where = ".".join(str(p) for p in first.loc) or "(the message)"
        raise Refusal(RefusalReason.BAD_BODY, f"{kind}: {where}: {first.msg}") from None
    if msg.kiosk != topic_kiosk:
        raise Refusal(
            RefusalReason.WRONG_TOPIC, f"kiosk {msg.kiosk!r} wrote on {topic_kiosk!r}'s topic"
        )
    if msg.office != office:
        raise Refusal(RefusalReason.WRONG_TARGET, f"for office {msg.office!r}, not {office!r}")
    return msg
