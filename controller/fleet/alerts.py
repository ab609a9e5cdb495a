"""The alert engine: applies alert_rules to the database and tells a webhook.

Each run reads the latest device states and recent play events, asks the
pure rules which alerts should be open, raises the new ones and clears the
resolved ones. A partial unique index (one open alert per kind and device)
makes a raise idempotent even when two replicas run at the same instant.

Webhook deliveries are claimed row by row (pending -> sending) before the
POST, so two replicas never send the same notification, and a failed POST is
retried on the next run. The raise of an alert is always sent before its clear.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import or_, select, text, update
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
from protocol.errors import Refusal
from protocol.events import PlayFinished, PlayInterrupted, PlayMissed, read_body

log = logging.getLogger(__name__)

CLAIM_EXPIRY_MS = 60_000  # a replica that claimed a delivery and died: retry after this
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
        webhook_url: str | None = None,
        *,
        timeout_s: float = 5.0,
    ) -> None:
        self.sessions = sessions
        self.thresholds = thresholds or Thresholds()
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s

    def run(self, now_ms: int) -> Changes:
        """Evaluate, then deliver what is pending; what the controller calls periodically."""
        changes = self.evaluate(now_ms)
        self.deliver(now_ms)
        return changes

    def evaluate(self, now_ms: int) -> Changes:
        changes = Changes()
        with self.sessions.begin() as session:
            wanted = active_alerts(
                self._snapshots(session),
                self._play_events(session, now_ms),
                self.thresholds,
                now_ms,
            )
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
        rows = session.execute(
            select(Device.id, Device.last_seen_ms, DeviceState).join(
                DeviceState, DeviceState.device_id == Device.id
            )
        )
        return [
            DeviceSnapshot(
                device_id=device_id,
                state=s.state,
                changed_ms=s.changed_ms,
                last_seen_ms=last_seen,
                cpu_temp_c=s.cpu_temp_c,
                disk_free_mb=s.disk_free_mb,
                disk_free_pct=s.disk_free_pct,
                clock_synced=s.clock_synced,
                printer=s.printer,
            )
            for device_id, last_seen, s in rows
        ]

    def _play_events(self, session: Session, now_ms: int) -> list[PlayEvent]:
        since = now_ms - int(self.thresholds.play_window_min * MINUTE_MS)
        rows = session.scalars(
            select(EventRecord).where(
                EventRecord.type.in_(("play.missed", "play.finished", "play.interrupted")),
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
            assert isinstance(body, PlayMissed | PlayFinished | PlayInterrupted)  # those selected
            events.append(PlayEvent(e.device_id, e.event_id, e.type, e.received_ms, body))
        return events

    def _raise(self, session: Session, spec: AlertSpec, now_ms: int) -> Alert | None:
        delivery = "pending" if self.webhook_url else "none"
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
                raise_delivery=delivery,
                clear_delivery="none",
                delivery_attempts=0,
            )
            .on_conflict_do_nothing(index_elements=["kind", "device_id"], index_where=OPEN)
            .returning(Alert.id)
        )
        alert_id = session.execute(stmt).scalar()
        return None if alert_id is None else session.get(Alert, alert_id)

    def _clear(self, session: Session, alert: Alert, now_ms: int) -> bool:
        result = session.execute(
            update(Alert)
            .where(Alert.id == alert.id, Alert.cleared_ms.is_(None))
            .values(cleared_ms=now_ms, clear_delivery="pending" if self.webhook_url else "none")
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False  # another replica cleared it first
        session.refresh(alert)
        return True

    # webhook

    def deliver(self, now_ms: int) -> int:
        """POST every pending raise, then every pending clear; returns how many were sent."""
        if not self.webhook_url:
            return 0
        sent = 0
        with httpx.Client(timeout=self.timeout_s) as http:
            for action, column in (
                ("raised", Alert.raise_delivery),
                ("cleared", Alert.clear_delivery),
            ):
                for alert_id in self._due(column, now_ms):
                    if action == "cleared" and not self._raise_sent(alert_id):
                        continue  # its raise goes first
                    if self._claim(alert_id, column, now_ms):
                        sent += self._post(http, alert_id, action, column)
        return sent

    def _due(self, column: Any, now_ms: int) -> list[int]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Alert.id).where(_claimable(column, now_ms)).order_by(Alert.id)
                )
            )

    def _raise_sent(self, alert_id: int) -> bool:
        with self.sessions() as session:
            return session.scalar(select(Alert.raise_delivery).where(Alert.id == alert_id)) in (
                "sent",
                "none",
            )

    def _claim(self, alert_id: int, column: Any, now_ms: int) -> bool:
        with self.sessions.begin() as session:
            result = session.execute(
                update(Alert)
                .where(Alert.id == alert_id, _claimable(column, now_ms))
                .values({column.key: "sending", "delivery_claimed_ms": now_ms})
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def _post(self, http: httpx.Client, alert_id: int, action: str, column: Any) -> int:
        with self.sessions() as session:
            alert = session.get(Alert, alert_id)
            assert alert is not None
            payload = {"action": action, "alert": alert_json(alert)}
        error = None
        try:
            response = http.post(self.webhook_url or "", json=payload)
            if response.status_code >= 300:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self.sessions.begin() as session:
            alert = session.get(Alert, alert_id)
            assert alert is not None
            setattr(alert, column.key, "sent" if error is None else "pending")
            alert.delivery_attempts += 1
            alert.delivery_error = error
        if error is not None:
            log.warning("webhook for alert %d (%s) failed: %s", alert_id, action, error)
        return int(error is None)


def _claimable(column: Any, now_ms: int) -> Any:
    return or_(
        column == "pending",
        (column == "sending") & (Alert.delivery_claimed_ms < now_ms - CLAIM_EXPIRY_MS),
    )


def alert_json(alert: Alert) -> dict[str, Any]:
    """What the webhook and the API say about an alert (Vietnamese first)."""
    return {
        "id": alert.id,
        "kind": alert.kind,
        "device_id": alert.device_id,
        "severity": alert.severity,
        "raised_ms": alert.raised_ms,
        "cleared_ms": alert.cleared_ms,
        "message_vi": alert.message_vi,
        "message_en": alert.message_en,
        "details": alert.details,
    }
