"""Signed retained documents (`schedule.set`, `config.set`): version, seal, keep, send.

A document topic holds one retained message; the agent refuses a version
that is not above the last it accepted (rollback protection). So each new
document takes `max(last + 1, now_ms)`: versions keep growing across
controller replicas and even after the database is rebuilt. The last signed
payload is kept per topic, to resend it byte for byte; one kept from before
the envelope named its target (no ``to``, refused by upgraded agents) is
signed again instead (``to_resend``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from sqlalchemy.orm import Session

from controller.db.broadcast_tables import PublishedDocumentRow
from protocol.commands import Strict, body_model
from protocol.envelope import seal
from protocol.signing import SigningKey


class Publisher(Protocol):
    """What the services need of controller.bus.Bus: publish and wait for the PUBACK."""

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 10,
    ) -> None: ...


@dataclass(frozen=True)
class Signed:
    topic: str
    version: int
    envelope_id: str
    payload: bytes


def sign_next(
    session: Session,
    topic: str,
    doc_type: str,
    *,
    build: Callable[[int, dict[str, Any] | None], Strict],
    key: SigningKey,
    now_ms: int,
) -> Signed:
    """Build the next version of ``topic``'s document, sign it and keep it in ``session``.

    ``build(version, last_body)`` gets the body last sent (None the first time),
    so a document can change one field and keep the others.
    """
    last = session.get(PublishedDocumentRow, topic, with_for_update=True)
    version = max(last.version + 1 if last else 1, now_ms)
    previous = json.loads(last.payload).get("body") if last is not None else None
    doc = build(version, previous)
    envelope_id = uuid.uuid4().hex
    payload = seal(doc_type, doc, key, now_ms, to=topic, cmd_id=envelope_id)
    if last is None:
        last = PublishedDocumentRow(topic=topic, doc_type=doc_type)
        session.add(last)
    last.version, last.envelope_id, last.payload = version, envelope_id, payload.decode()
    last.signed_ms, last.delivered_ms = now_ms, None
    return Signed(topic, version, envelope_id, payload)


def to_resend(session: Session, topic: str, *, key: SigningKey, now_ms: int) -> Signed | None:
    """The stored document of ``topic``, to publish again (None: none was ever sent).

    Byte for byte, unless it was signed before the envelope carried ``to``: the
    upgraded agents refuse that, so the same body is signed again for ``topic``
    at the next version and kept in ``session`` in its place.
    """
    row = session.get(PublishedDocumentRow, topic, with_for_update=True)
    if row is None:
        return None
    if "to" in json.loads(row.payload):
        return Signed(topic, row.version, row.envelope_id, row.payload.encode())
    model = body_model(row.doc_type)
    if model is None:
        raise ValueError(f"a stored document of unknown type {row.doc_type!r} on {topic}")

    def same_body(version: int, last: dict[str, Any] | None) -> Strict:
        return msgspec.convert({**(last or {}), "version": version}, model)

    return sign_next(session, topic, row.doc_type, build=same_body, key=key, now_ms=now_ms)


def mark_delivered(session: Session, signed: Signed, now_ms: int) -> None:
    """The broker acknowledged it: unless a newer document replaced it meanwhile."""
    row = session.get(PublishedDocumentRow, signed.topic)
    if row is not None and row.envelope_id == signed.envelope_id:
        row.delivered_ms = now_ms
