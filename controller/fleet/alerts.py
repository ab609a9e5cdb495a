"""The alert engine: applies alert_rules to the database and queues the webhooks.

Each run reads the latest device states and recent play events, asks the
pure rules which alerts should be open, raises the new ones and clears the
resolved ones. A partial unique index (one open alert per kind and device)
makes a raise idempotent even when two replicas run at the same instant.

With webhooks on, each raise and clear queues its delivery in the same
transaction (controller/fleet/webhooks.py); the POST happens on the sender's
thread, so a slow receiver never holds up this evaluation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Text, cast, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from controller.db.fleet_tables import Alert, Device, DeviceState, EventRecord, dialect_insert
from controller.fleet.alert_rules import (
    MINUTE_MS,
    AlertSpec,
    DeviceSnapshot,
    PlayEvent,
    Thresholds,
    active_alerts,
)
from controller.fleet.identity_rules import Sighting, duplicate_identity
from controller.fleet.webhooks import enqueue
from protocol.errors import Refusal
from protocol.events import AudioFault, PlayFinished, PlayInterrupted, PlayMissed, read_body

log = logging.getLogger(__name__)

OPEN = text("cleared_ms IS NULL")


@dataclass
class Changes:
    raised: list[Alert] = field(default_factory=list)
    cleared: list[Alert] = field(default_factory=list)


class AlertEngine:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        thresholds: Thresholds | None = None,
        *,
        webhooks: bool = False,
        commune_webhooks: Collection[str] = (),
    ) -> None:
        self.sessions = sessions
        self.thresholds = thresholds or Thresholds()
        # the receivers each raise and clear is queued for: the province's, the communes'
        self.receivers: list[str | None] = ([None] if webhooks else []) + sorted(commune_webhooks)
        self.webhooks = bool(self.receivers)
        self._last_rows: dict[str, tuple[tuple[Any, ...], DeviceSnapshot]] = {}  # by device id

    def run(self, now_ms: int) -> Changes:
        """Raise and clear what the rules say at `now_ms`; the controller calls it periodically."""
        changes = Changes()
        with self.sessions.begin() as session:
            wanted = active_alerts(
                self._snapshots(session),
                self._play_events(session, now_ms),
                self.thresholds,
                now_ms,
            )
            wanted.update((a.key, a) for a in self._duplicates(session, now_ms))
            a = Alert.__table__.c
            conn = session.connection()
            open_alerts = {
                (r.kind, r.device_id): r
                for r in conn.execute(
                    select(a.id, a.kind, a.device_id, a.details).where(a.cleared_ms.is_(None))
                )
            }
            for key, spec in wanted.items():
                current = open_alerts.get(key)
                if current is None:
                    raised = self._raise(session, spec, now_ms)
                    if raised is not None:
                        changes.raised.append(raised)
                elif current.details != spec.details:
                    conn.execute(
                        update(Alert)
                        .where(Alert.id == current.id)
                        .values(
                            details=spec.details,
                            message_vi=spec.message_vi,
                            message_en=spec.message_en,
                        )
                    )
            for key, row in open_alerts.items():
                if key not in wanted:
                    cleared = self._clear(session, row.id, now_ms)
                    if cleared is not None:
                        changes.cleared.append(cleared)
        for alert in changes.raised:
            log.warning("alert raised: %s", alert.message_en)
        for alert in changes.cleared:
            log.info("alert cleared: %s", alert.message_en)
        return changes

    def _snapshots(self, session: Session) -> list[DeviceSnapshot]:
        """Plain DBAPI rows of the columns the rules read, through Core (no ORM loading).

        This reads every device every few seconds, so what a row costs counts: at
        10,000 devices the ORM path took ~300 ms of GIL, and building the snapshots
        (the printer's JSON decoded) about as much as the fetch. A row equal to the
        one read last run keeps last run's snapshot; only changed rows are built.
        """
        d, s = Device.__table__.c, DeviceState.__table__.c
        stmt = select(
            d.id,
            s.state,
            s.changed_ms,
            d.last_seen_ms,
            s.cpu_temp_c,
            s.disk_free_mb,
            s.disk_free_pct,
            s.clock_synced,
            cast(s.printer, Text),
        ).join_from(Device.__table__, DeviceState.__table__, s.device_id == d.id)
        before, now = self._last_rows, {}
        for row in map(tuple, session.connection().execute(stmt).all()):  # Row == is slow
            kept = before.get(row[0])
            if kept is None or kept[0] != row:
                device, state, changed, seen, temp, mb, pct, synced, printer = row
                snap = DeviceSnapshot(
                    device, state, changed, seen, temp, mb, pct, synced, _printer(printer)
                )
                kept = (row, snap)
            now[row[0]] = kept
        self._last_rows = now  # a device gone from the table goes from here too
        return [snap for _, snap in now.values()]

    def _duplicates(self, session: Session, now_ms: int) -> list[AlertSpec]:
        rows = session.execute(
            select(DeviceState.device_id, DeviceState.sightings).where(
                DeviceState.sightings.is_not(None)
            )
        )
        found = []
        for device_id, kept in rows:
            spec = duplicate_identity(device_id, [Sighting.of(s) for s in kept], now_ms)
            if spec is not None:
                found.append(spec)
        return found

    def _play_events(self, session: Session, now_ms: int) -> list[PlayEvent]:
        since = now_ms - int(self.thresholds.play_window_min * MINUTE_MS)
        c = EventRecord.__table__.c
        rows = session.connection().execute(
            select(c.event_id, c.device_id, c.type, c.received_ms, c.body).where(
                c.type.in_(("play.missed", "play.finished", "play.interrupted", "audio.fault")),
                c.received_ms > since,
            )
        )
        events = []
        for e in rows:
            try:
                body = read_body(e.type, e.body)
            except Refusal as exc:  # stored before ingest checked bodies
                log.warning("event %s of %s not read for alerts: %s", e.event_id, e.device_id, exc)
                continue
            # those selected
            assert isinstance(body, PlayMissed | PlayFinished | PlayInterrupted | AudioFault)
            events.append(PlayEvent(e.device_id, e.event_id, e.type, e.received_ms, body))
        return events

    def _raise(self, session: Session, spec: AlertSpec, now_ms: int) -> Alert | None:
        stmt = (
            dialect_insert(session, Alert)
            .values(
                kind=spec.kind,
                device_id=spec.device_id,
                severity=spec.severity,
                raised_ms=now_ms,
                message_vi=spec.message_vi,
                message_en=spec.message_en,
                details=spec.details,
            )
            .on_conflict_do_nothing(index_elements=["kind", "device_id"], index_where=OPEN)
            .returning(Alert.id)
        )
        alert_id = session.execute(stmt).scalar()
        if alert_id is None:
            return None  # another replica raised it first
        alert = session.get(Alert, alert_id)
        assert alert is not None  # inserted above, in this transaction
        if self.webhooks:
            enqueue(session, alert, "raised", now_ms, self.receivers)
        return alert

    def _clear(self, session: Session, alert_id: int, now_ms: int) -> Alert | None:
        result = session.execute(
            update(Alert)
            .where(Alert.id == alert_id, Alert.cleared_ms.is_(None))
            .values(cleared_ms=now_ms)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None  # another replica cleared it first
        alert = session.get(Alert, alert_id)
        assert alert is not None  # updated above, in this transaction
        if self.webhooks:
            enqueue(session, alert, "cleared", now_ms, self.receivers)
        return alert


def _printer(text: str | None) -> dict[str, Any] | None:
    """The latest printer.status body from its JSON text; None for a device with none."""
    body = json.loads(text) if text and text != "null" else None  # a speaker's: JSON null
    return body if isinstance(body, dict) else None
