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

import logging
from dataclasses import dataclass, field

from sqlalchemy import select, text, update
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
    ) -> None:
        self.sessions = sessions
        self.thresholds = thresholds or Thresholds()
        self.webhooks = webhooks  # queue a delivery with each raise and clear

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
            open_alerts = {
                (a.kind, a.device_id): a
                for a in session.scalars(select(Alert).where(Alert.cleared_ms.is_(None)))
            }
            for key, spec in wanted.items():
                current = open_alerts.get(key)
                if current is None:
                    raised = self._raise(session, spec, now_ms)
                    if raised is not None:
                        changes.raised.append(raised)
                elif current.details != spec.details:
                    current.details = spec.details
                    current.message_vi, current.message_en = spec.message_vi, spec.message_en
            for key, alert in open_alerts.items():
                if key not in wanted and self._clear(session, alert, now_ms):
                    changes.cleared.append(alert)
        for alert in changes.raised:
            log.warning("alert raised: %s", alert.message_en)
        for alert in changes.cleared:
            log.info("alert cleared: %s", alert.message_en)
        return changes

    def _snapshots(self, session: Session) -> list[DeviceSnapshot]:
        """Plain rows of the columns the rules read: no ORM objects, and the whole
        latest sample (JSON) left undecoded, since this runs every few seconds."""
        s = DeviceState
        rows = session.execute(
            select(
                Device.id,
                s.state,
                s.changed_ms,
                Device.last_seen_ms,
                s.cpu_temp_c,
                s.disk_free_mb,
                s.disk_free_pct,
                s.clock_synced,
                s.printer,
            ).join(s, s.device_id == Device.id)
        )
        return [DeviceSnapshot(*row) for row in rows]

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
        rows = session.scalars(
            select(EventRecord).where(
                EventRecord.type.in_(
                    ("play.missed", "play.finished", "play.interrupted", "audio.fault")
                ),
                EventRecord.received_ms > since,
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
            enqueue(session, alert, "raised", now_ms)
        return alert

    def _clear(self, session: Session, alert: Alert, now_ms: int) -> bool:
        result = session.execute(
            update(Alert)
            .where(Alert.id == alert.id, Alert.cleared_ms.is_(None))
            .values(cleared_ms=now_ms)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False  # another replica cleared it first
        session.refresh(alert)
        if self.webhooks:
            enqueue(session, alert, "cleared", now_ms)
        return True
