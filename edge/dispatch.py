"""From a payload on an inbound topic to a handled command and its ack.

Stateless checks live in ``protocol.envelope``; here are the ones that need
memory (replay, rollback) and the routing to the handler for each type. A
refusal never raises out of ``handle``: it becomes an ack and a counter.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.store import LocalStore, StoredDocument
from protocol.commands import DOCUMENT_TOPIC_LEAF, is_document
from protocol.envelope import Opened, open_envelope
from protocol.errors import ProtocolError, Refusal, RefusalReason
from protocol.signing import Keyring
from protocol.topics import Topics
from protocol.uplink import Ack

if TYPE_CHECKING:
    from protocol.host import CommandHandler, DocumentHandler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What ``handle`` decided: an ack to send (None: stay silent)."""

    ack: Ack | None
    refused: RefusalReason | None = None


class Dispatcher:
    def __init__(
        self,
        *,
        device_id: str,
        topics: Topics,
        keyring: Keyring,
        store: LocalStore,
        now_ms: Callable[[], int],
    ) -> None:
        self._device_id = device_id
        self._topics = topics
        self._keyring = keyring
        self._store = store
        self._now_ms = now_ms
        self._commands: dict[str, CommandHandler] = {}
        self._documents: dict[str, DocumentHandler] = {}
        self.refused: Counter[str] = Counter()

    def on_command(self, msg_type: str, handler: CommandHandler) -> None:
        self._commands[msg_type] = handler

    def on_document(self, msg_type: str, handler: DocumentHandler) -> None:
        self._documents[msg_type] = handler

    def handle(self, topic: str, payload: bytes) -> Outcome:
        now = self._now_ms()
        try:
            opened = open_envelope(payload, self._keyring, now)
            self._check_topic(topic, opened)
            if is_document(opened.envelope.type):
                return self._apply_document(topic, opened, payload, now)
            return self._run_command(opened, now)
        except Refusal as refusal:
            self.refused[refusal.reason.value] += 1
            log.warning("refused a message on %s: %s", topic, refusal)
            ack = Ack(
                cmd=refusal.cmd_id,
                ok=False,
                error=refusal.reason.value,
                # never a lone surrogate in an ack: it could not be sent as UTF-8
                detail=refusal.detail.encode("utf-8", "backslashreplace").decode("utf-8"),
                ts=now,
            )
            return Outcome(ack, refusal.reason)

    def _check_topic(self, topic: str, opened: Opened) -> None:
        env = opened.envelope
        try:
            ref = self._topics.parse(topic)
        except ProtocolError as exc:
            raise Refusal(RefusalReason.WRONG_TOPIC, str(exc), env.id) from None
        if ref.scope == "dev" and ref.id != self._device_id:
            raise Refusal(RefusalReason.WRONG_TOPIC, f"addressed to {ref.id!r}", env.id)
        expected = DOCUMENT_TOPIC_LEAF.get(env.type, "cmd")
        if ref.leaf != expected or (env.type == "config.set" and ref.scope != "dev"):
            raise Refusal(RefusalReason.WRONG_TOPIC, f"{env.type} does not go on {topic}", env.id)
        if not env.to.matches(ref):
            # signed for another device, group or leaf, and re-published here
            raise Refusal(
                RefusalReason.WRONG_TARGET,
                f"signed for {env.to}, arrived on {ref.scope}/{ref.id}/{ref.leaf}",
                env.id,
            )

    def _run_command(self, opened: Opened, now: int) -> Outcome:
        env = opened.envelope
        handler = self._commands.get(env.type)
        if handler is None:
            raise Refusal(RefusalReason.UNSUPPORTED, f"this device does not do {env.type}", env.id)
        assert env.exp is not None  # open_envelope requires it of commands
        if not self._store.remember_command(env.id, env.exp):
            raise Refusal(RefusalReason.REPLAY, f"command {env.id} was already received", env.id)
        try:
            result = handler(opened)
        except Refusal:
            raise  # the handler declined, with its own reason (e.g. quiet hours)
        except Exception as exc:
            log.exception("handler for %s failed", env.type)
            raise Refusal(
                RefusalReason.HANDLER_FAILED, f"{type(exc).__name__}: {exc}", env.id
            ) from None
        return Outcome(Ack(cmd=env.id, ok=True, ts=self._now_ms(), result=result))

    def _apply_document(self, topic: str, opened: Opened, payload: bytes, now: int) -> Outcome:
        env = opened.envelope
        held = self._store.document(topic)
        if held is not None and held.cmd_id == env.id:
            return Outcome(None)  # the retained copy again, after a reconnect: nothing new
        if held is not None and env.version <= held.version:
            raise Refusal(
                RefusalReason.ROLLBACK,
                f"version {env.version} is not newer than the held {held.version}",
                env.id,
            )
        handler = self._documents.get(env.type)
        if handler is None:
            raise Refusal(
                RefusalReason.UNSUPPORTED, f"this device does not take {env.type}", env.id
            )
        # durable before acted on: a power cut after this line re-applies it at start
        self._store.save_document(
            StoredDocument(topic, env.type, env.version, env.id, payload), now
        )
        try:
            handler(topic, opened.body)
        except Exception as exc:
            log.exception("applying %s failed", env.type)
            raise Refusal(
                RefusalReason.HANDLER_FAILED, f"{type(exc).__name__}: {exc}", env.id
            ) from None
        return Outcome(Ack(cmd=env.id, ok=True, ts=self._now_ms(), result={"version": env.version}))

    def restore_documents(self) -> int:
        """At start, before any network: apply what was accepted before.

        The stored copies are verified again (the key may have been revoked since).
        A copy stored before the envelope carried ``to`` was verified on arrival on
        the topic it is stored under: it is taken as addressed there (``legacy_to``),
        so that an upgrade does not silence a speaker with no network.
        """
        applied = 0
        for doc in self._store.documents():
            handler = self._documents.get(doc.type)
            if handler is None:
                continue
            try:
                opened = open_envelope(
                    doc.payload,
                    self._keyring,
                    self._now_ms(),
                    legacy_to=self._topics.parse(doc.topic),
                )
                self._check_topic(doc.topic, opened)
                handler(doc.topic, opened.body)
                applied += 1
            except Exception:
                log.exception("the stored %s for %s could not be applied", doc.type, doc.topic)
        return applied
