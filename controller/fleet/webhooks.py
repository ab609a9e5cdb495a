"""Alert webhooks: a durable queue, one sender per delivery at a time, retries with backoff.

`enqueue` adds a row to `webhook_deliveries` in the session that raises or
clears the alert, so a delivery exists exactly when its change committed.
`WebhookSender` runs on a thread of its own, never the one that evaluates
alerts, so a slow or hung receiver delays only other webhooks:

- It claims one due row at a time with a lease (a token and an expiry, set in
  one UPDATE; on PostgreSQL the row is picked `FOR UPDATE SKIP LOCKED`), so
  two replicas never post the same delivery while the lease holds. A sender
  that dies mid-POST loses the lease when it expires, and another takes over.
- It POSTs with a timeout and the delivery's key as `Idempotency-Key`: a
  receiver can drop the one repeat a lease can still let through (a sender
  that outlived its lease).
- A failure is retried after a full-jitter backoff (`plumbing.backoff`), up to
  `max_attempts` counted at each claim; then the row is marked failed and an
  error logged. A clear waits until its raise is sent or given up.

`undelivered` and `retry` are what the alerts page shows a technician: what
has not reached the receiver, why in words, and a way to send a failed one
again once the receiver is fixed.

Receivers are keyed by commune (controller/auth/tenancy.py): the province's
webhook (``commune`` None) gets every alert, a commune's only its devices'
alerts. Each receiver has its own delivery, in its own order, and a commune's
technician sees only theirs undelivered.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from controller.auth import tenancy
from controller.db.fleet_tables import Alert, Device, WebhookDelivery
from plumbing.backoff import Backoff
from plumbing.repeating import repeating

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often an idle sender looks for due rows (a local change wakes it at once)


def alert_json(alert: Alert, commune: str | None = None) -> dict[str, Any]:
    """What the webhook says about an alert (Vietnamese first); ``commune``: its device's."""
    return {
        "id": alert.id,
        "kind": alert.kind,
        "device_id": alert.device_id,
        "commune": commune,
        "severity": alert.severity,
        "raised_ms": alert.raised_ms,
        "cleared_ms": alert.cleared_ms,
        "message_vi": alert.message_vi,
        "message_en": alert.message_en,
        "details": alert.details,
    }


def enqueue(
    session: Session,
    alert: Alert,
    action: str,
    now_ms: int,
    receivers: Iterable[str | None] = (None,),
) -> list[WebhookDelivery]:
    """Queue the webhook of `alert`'s `action` (raised | cleared) in the caller's transaction,
    one delivery per receiver whose commune sees the alert (None: the province's)."""
    device = session.get(Device, alert.device_id)
    commune = device.commune if device is not None else None
    payload = {"action": action, "alert": alert_json(alert, commune)}
    deliveries = [
        WebhookDelivery(
            key=str(uuid.uuid4()),
            alert_id=alert.id,
            action=action,
            payload=payload,
            status="pending",
            attempts=0,
            due_ms=now_ms,
            created_ms=now_ms,
            commune=receiver,
        )
        for receiver in receivers
        if tenancy.sees(receiver, commune)
    ]
    session.add_all(deliveries)
    return deliveries


@dataclass(frozen=True)
class Claim:
    """A delivery this sender holds, by `lease`, until its lease expires."""

    id: int
    key: str
    payload: dict[str, Any]
    attempts: int
    lease: str
    commune: str | None  # whose receiver: None, the province's


class WebhookSender:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        url: str,
        clock_ms: Callable[[], int],
        *,
        commune_urls: Mapping[str, str] | None = None,
        timeout_s: float = 5.0,
        max_attempts: int = 10,
        retry_s: float = 10.0,
        retry_max_s: float = 1800.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if max_attempts < 1 or timeout_s <= 0:
            raise ValueError("need max_attempts >= 1 and timeout_s > 0")
        Backoff(retry_s, retry_max_s)  # refuses a bad pair now, not at the first failure
        self.sessions = sessions
        self.urls: dict[str | None, str] = {c: u for c, u in (commune_urls or {}).items() if u}
        if url:
            self.urls[None] = url  # the province's receiver
        self.clock_ms = clock_ms
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.rand = rand
        # httpx's timeout bounds each phase, not the whole POST: leave room for several
        self.lease_ms = int((4 * timeout_s + 30) * 1000)
        self._wake = threading.Event()

    def wake(self) -> None:
        """Look for due rows now (the alert engine queued some)."""
        self._wake.set()

    def send_due(self) -> int:
        """Post every delivery due now, one claim at a time; returns how many were sent."""
        claim = self.claim(self.clock_ms())
        if claim is None:
            return 0  # the usual case: no client built (its TLS context costs a Pi's CPU)
        sent = 0
        with httpx.Client(timeout=self.timeout_s) as http:
            while claim is not None:
                sent += self._post(http, claim)
                claim = self.claim(self.clock_ms())
        return sent

    def claim(self, now_ms: int) -> Claim | None:
        """Lease the oldest due delivery, to a receiver configured here, whose alert has
        nothing older still owed to the same receiver."""
        token = uuid.uuid4().hex
        row = aliased(WebhookDelivery)
        earlier = aliased(WebhookDelivery)
        waits = exists().where(
            earlier.alert_id == row.alert_id,
            earlier.id < row.id,
            earlier.status == "pending",
            earlier.commune.is_not_distinct_from(row.commune),
        )
        communes = [c for c in self.urls if c is not None]
        ours: Any = row.commune.in_(communes)
        if None in self.urls:
            ours = or_(ours, row.commune.is_(None))
        with self.sessions.begin() as session:
            pick = select(row.id).where(_due(row, now_ms), ours, ~waits).order_by(row.id).limit(1)
            if session.get_bind().dialect.name == "postgresql":
                pick = pick.with_for_update(skip_locked=True, of=row)
            d = WebhookDelivery
            got = session.execute(
                update(d)
                .where(d.id == pick.scalar_subquery(), _due(d, now_ms))
                .values(
                    lease=token,
                    leased_until_ms=now_ms + self.lease_ms,
                    attempts=d.attempts + 1,
                )
                .returning(d.id, d.key, d.payload, d.attempts, d.commune)
                .execution_options(synchronize_session=False)
            ).first()
        if got is None:
            return None
        return Claim(got.id, got.key, got.payload, got.attempts, token, got.commune)

    def _post(self, http: httpx.Client, claim: Claim) -> int:
        error = None
        try:
            response = http.post(
                self.urls[claim.commune], json=claim.payload, headers={"Idempotency-Key": claim.key}
            )
            if not response.is_success:
                error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        self.finish(claim, self.clock_ms(), error)
        return int(error is None)

    def finish(self, claim: Claim, now_ms: int, error: str | None) -> None:
        """Record the POST's outcome, unless the lease was lost to another sender."""
        values: dict[str, Any] = {"lease": None, "leased_until_ms": None, "last_error": error}
        if error is None:
            values |= {"status": "sent", "done_ms": now_ms}
        elif claim.attempts >= self.max_attempts:
            values |= {"status": "failed", "done_ms": now_ms}
        else:
            backoff = Backoff(self.retry_s, self.retry_max_s, self.rand)
            backoff.attempt = claim.attempts - 1  # the first retry waits up to retry_s
            values["due_ms"] = now_ms + int(backoff.next_delay() * 1000)
        d = WebhookDelivery
        with self.sessions.begin() as session:
            result = session.execute(
                update(d)
                .where(d.id == claim.id, d.lease == claim.lease)
                .values(values)
                .execution_options(synchronize_session=False)
            )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            log.warning("webhook delivery %s: lease lost before its outcome was kept", claim.key)
        elif values.get("status") == "failed":
            log.error(
                "webhook %s for alert %s given up after %d attempts: %s",
                claim.payload["action"],
                claim.payload["alert"]["id"],
                claim.attempts,
                error,
            )
        elif error is not None:
            log.warning(
                "webhook delivery %s failed (attempt %d): %s", claim.key, claim.attempts, error
            )

    def running(self) -> AbstractContextManager[None]:
        """The sender's loop on its own thread, for as long as the block runs."""
        return repeating(
            "webhook-sender", self.send_due, POLL_S, wake=self._wake, join_s=self.timeout_s * 4 + 10
        )


@dataclass(frozen=True)
class Undelivered:
    """A delivery that has not reached the receiver: still retrying, or given up."""

    id: int
    alert_id: int
    action: str
    alert_kind: str
    device_id: str
    commune: str | None  # whose receiver it is owed to (None: the province's)
    status: str  # pending | failed
    attempts: int
    created_ms: int
    due_ms: int  # the next attempt, for a pending one
    last_error: str


def undelivered(
    session: Session, limit: int = 200, commune: str | None = None
) -> list[Undelivered]:
    """Failed deliveries and pending ones that have failed at least once, newest first;
    ``commune``: only those owed to its receiver (None: the province sees all)."""
    d = WebhookDelivery
    query = (
        select(d.id, d.alert_id, d.action, d.payload, d.status, d.attempts, d.created_ms)
        .add_columns(d.due_ms, d.last_error, d.commune)
        .where((d.status == "failed") | ((d.status == "pending") & (d.last_error.is_not(None))))
        .order_by(d.id.desc())
        .limit(limit)
    )
    if commune is not None:
        query = query.where(d.commune == commune)
    rows = session.execute(query)
    return [
        Undelivered(
            r.id,
            r.alert_id,
            r.action,
            str(r.payload.get("alert", {}).get("kind", "")),
            str(r.payload.get("alert", {}).get("device_id", "")),
            r.commune,
            r.status,
            r.attempts,
            r.created_ms,
            r.due_ms,
            r.last_error or "",
        )
        for r in rows
    ]


def owed_to(session: Session, delivery_id: int) -> tuple[bool, str | None]:
    """Whether a delivery exists, and the commune of its receiver (None: the province's)."""
    commune = session.execute(
        select(WebhookDelivery.commune).where(WebhookDelivery.id == delivery_id)
    ).first()
    return (commune is not None, commune[0] if commune is not None else None)


def retry(session: Session, delivery_id: int, now_ms: int) -> bool:
    """Send a given-up delivery again from its first attempt; False unless it had failed."""
    d = WebhookDelivery
    result = session.execute(
        update(d)
        .where(d.id == delivery_id, d.status == "failed")
        .values(status="pending", attempts=0, due_ms=now_ms, done_ms=None, lease=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def error_words(last_error: str) -> tuple[str, str]:
    """What went wrong, for the page: the receiver refused, did not answer, or was unreachable.

    `_post` keeps ``HTTP <code>`` or httpx's exception name first; the detail is in the log."""
    if last_error.startswith("HTTP "):
        code = last_error[5:].strip()
        return (
            f"Máy nhận từ chối (mã {code}): kiểm tra địa chỉ và quyền của webhook",
            f"The receiver refused it (code {code}): check the webhook's address and access",
        )
    if "Timeout" in last_error.split(":", 1)[0]:
        return (
            "Máy nhận không trả lời kịp: kiểm tra máy nhận có đang chạy không",
            "The receiver did not answer in time: check that it is running",
        )
    return (
        "Không kết nối được tới máy nhận: kiểm tra địa chỉ và mạng",
        "Could not reach the receiver: check its address and the network",
    )


def _due(d: Any, now_ms: int) -> Any:
    return (
        (d.status == "pending")
        & (d.due_ms <= now_ms)
        & or_(d.leased_until_ms.is_(None), d.leased_until_ms < now_ms)
    )
