"""Reporting upward: status pings and play logs to the province, through a durable queue.

The producer queues, the sender posts; neither runs on a thread anything else
waits for, so an unreachable province never holds up ingest, alerts or pages.

- **Communes.** Each body's ``MaXa`` is its cluster's commune's code
  (``upward_fields.commune_code``): a province's communes report as
  themselves; the province's own clusters, and a site without communes, as
  ``[upward] commune``.
- **Pings.** Every ``ping_every_s`` each speaker's state, as the controller
  knows it, is queued (``upward_fields.ping``). The interval's number is in
  the record's key, so replicas queue each ping once.
- **Play logs.** Each record that ends a play (``play.finished`` without a
  rest to come, ``play.missed``, ``play.interrupted``) is queued once, read
  from ``event_records`` after a cursor that moves compare-and-set. Rows are
  read a few seconds behind their arrival (``LAG_MS``): ingest on another
  replica may commit a lower id a moment after a higher one.
- **Sending.** In queue order, one replica at a time (a lease in
  ``upward_cursors``), each body with its key as ``Idempotency-Key``. A
  failure stops the round and it is retried after a full-jitter backoff, so
  an outage loses nothing and keeps the order; a record the province keeps
  refusing is set aside (``failed``) after ``max_attempts`` so it does not
  hold the rest back. Sent records are kept ``keep_days``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from controller.db.fleet_tables import (
    Device,
    DeviceState,
    EventRecord,
    UpwardCursor,
    UpwardRecord,
    dialect_insert,
)
from controller.fleet import upward_fields as fields
from controller.settings import UpwardSection
from plumbing.backoff import Backoff
from plumbing.repeating import repeating
from protocol.errors import Refusal
from protocol.events import PlayFinished, PlayInterrupted, PlayMissed, read_body

log = logging.getLogger(__name__)

LAG_MS = 5_000
LEASE_MS = 60_000
BATCH = 200
POLL_S = 1.0
ENDS = ("play.finished", "play.missed", "play.interrupted")


class Upward:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: UpwardSection,
        clock_ms: Callable[[], int],
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock_ms = clock_ms
        self._backoff = Backoff(settings.retry_s, settings.retry_max_s, rand)
        self._retry_at_ms = 0
        self._lease = Lease(sessions, "lease")
        self._wake = threading.Event()

    # the producer

    def produce(self, now_ms: int) -> int:
        """Queue what is due: this interval's pings and the plays that ended; how many."""
        return self._pings(now_ms) + self._plays(now_ms)

    def _code(self, commune: str | None) -> str:
        return fields.commune_code(commune, self.settings.commune, self.settings.commune_codes)

    def _pings(self, now_ms: int) -> int:
        slot = now_ms // int(self.settings.ping_every_s * 1000)
        with self.sessions.begin() as session:
            if not advance(session, "pings", slot):
                return 0
            rows = [
                {
                    "kind": "ping",
                    "dedupe": f"ping:{c.device_id}:{slot}",
                    "payload": fields.ping(c, self._code(c.commune), now_ms),
                    "created_ms": now_ms,
                }
                for c in _clusters(session)
            ]
            _queue(session, rows)
        return len(rows)

    def _plays(self, now_ms: int) -> int:
        with self.sessions.begin() as session:
            start = position(session, "events")
            found = session.execute(
                select(EventRecord)
                .where(
                    EventRecord.id > start,
                    EventRecord.received_ms <= now_ms - LAG_MS,
                    EventRecord.type.in_(ENDS),
                )
                .order_by(EventRecord.id)
                .limit(BATCH * 5)
            ).scalars()
            events = list(found)
            if not events or not advance(session, "events", events[-1].id, start):
                return 0
            volumes = _volumes(session)
            communes = dict(session.execute(select(Device.id, Device.commune)).tuples().all())
            rows = []
            for e in events:
                record = _play(session, e, volumes.get(e.device_id))
                if record is not None:
                    payload = fields.play(record, self._code(communes.get(e.device_id)))
                    rows.append(
                        {
                            "kind": "play",
                            "dedupe": f"play:{e.device_id}:{e.event_id}",
                            "payload": payload,
                            "created_ms": now_ms,
                        }
                    )
            _queue(session, rows)
        return len(rows)

    # the sender

    def send_due(self, now_ms: int) -> int:
        """Post what is owed, in order, until a failure; how many were accepted."""
        if now_ms < self._retry_at_ms or not self._lease.take(now_ms):
            return 0
        sent = 0
        with self.sessions() as session:
            owed = session.execute(
                select(UpwardRecord.id, UpwardRecord.kind, UpwardRecord.dedupe)
                .add_columns(UpwardRecord.payload, UpwardRecord.attempts)
                .where(UpwardRecord.status == "pending")
                .order_by(UpwardRecord.id)
                .limit(BATCH)
            ).all()
        if not owed:
            return 0
        headers = {"Authorization": f"Bearer {self.settings.token}"}
        with httpx.Client(timeout=self.settings.timeout_s, headers=headers) as http:
            for row in owed:
                error = _post(http, self.settings.url + fields.PATHS[row.kind], row)
                self._settle(row.id, row.attempts + 1, error)
                if error is not None:
                    delay = self._backoff.next_delay()
                    self._retry_at_ms = self.clock_ms() + int(delay * 1000)
                    log.warning("upward: %s; again in %.0f s", error, delay)
                    break
                self._backoff.reset()
                sent += 1
        return sent

    def _settle(self, record_id: int, attempts: int, error: str | None) -> None:
        now = self.clock_ms()
        values: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if error is None:
            values |= {"status": "sent", "done_ms": now}
        elif attempts >= self.settings.max_attempts:
            values |= {"status": "failed", "done_ms": now}
            log.error(
                "upward record %s set aside after %d attempts: %s", record_id, attempts, error
            )
        with self.sessions.begin() as session:
            session.execute(update(UpwardRecord).where(UpwardRecord.id == record_id).values(values))

    def prune(self, now_ms: int) -> int:
        """Sent records older than keep_days go."""
        cutoff = now_ms - self.settings.keep_days * 86_400_000
        with self.sessions.begin() as session:
            gone = session.execute(
                delete(UpwardRecord).where(
                    UpwardRecord.status == "sent", UpwardRecord.done_ms < cutoff
                )
            )
            return int(gone.rowcount)  # type: ignore[attr-defined]

    def step(self) -> None:
        now = self.clock_ms()
        self.produce(now)
        self.send_due(now)

    @contextmanager
    def running(self) -> Iterator[None]:
        with repeating("upward", self.step, POLL_S, wake=self._wake):
            yield


class Lease:
    """One replica at a time does a job (sending upward, polling for bulletins), for
    LEASE_MS after each take. The cursor named ``name`` holds when the lease ends;
    renewing compares it with the holder's own end, so two replicas never both hold it."""

    def __init__(self, sessions: sessionmaker[Session], name: str) -> None:
        self.sessions = sessions
        self.name = name
        self._until_ms = 0  # this replica holds it until then

    def take(self, now_ms: int) -> bool:
        """Take or renew it; False while another replica holds it."""
        with self.sessions.begin() as session:
            position(session, self.name)  # the row exists
            c = UpwardCursor
            mine = (c.position == self._until_ms) & (self._until_ms > now_ms)
            got = session.execute(
                update(c)
                .where(c.name == self.name, (c.position <= now_ms) | mine)
                .values(position=now_ms + LEASE_MS)
                .execution_options(synchronize_session=False)
            )
        if got.rowcount != 1:  # type: ignore[attr-defined]
            return False
        self._until_ms = now_ms + LEASE_MS
        return True


def _post(http: httpx.Client, url: str, row: Any) -> str | None:
    try:
        response = http.post(url, json=row.payload, headers={"Idempotency-Key": row.dedupe})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if response.is_success else f"HTTP {response.status_code}: {response.text[:200]}"


def position(session: Session, name: str) -> int:
    """A cursor's position, made 0 the first time it is asked for."""
    session.execute(
        dialect_insert(session, UpwardCursor)
        .values(name=name, position=0)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    return int(
        session.scalars(select(UpwardCursor.position).where(UpwardCursor.name == name)).one()
    )


def advance(session: Session, name: str, to: int, was: int | None = None) -> bool:
    """Move a cursor forward, unless another replica did first."""
    if was is None:
        was = position(session, name)
    if to <= was:
        return False
    moved = session.execute(
        update(UpwardCursor)
        .where(UpwardCursor.name == name, UpwardCursor.position == was)
        .values(position=to)
        .execution_options(synchronize_session=False)
    )
    return bool(moved.rowcount == 1)  # type: ignore[attr-defined]


def _queue(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(
            dialect_insert(session, UpwardRecord).on_conflict_do_nothing(index_elements=["dedupe"]),
            [{**r, "status": "pending", "attempts": 0} for r in rows],
        )


def _clusters(session: Session) -> list[fields.Cluster]:
    found = session.execute(
        select(Device, DeviceState)
        .outerjoin(DeviceState, DeviceState.device_id == Device.id)
        .where(Device.registered.is_(True))
        .order_by(Device.id)
    ).all()
    clusters = []
    for device, state in found:
        if "speaker" not in (device.roles or []):
            continue
        t: dict[str, Any] = (state.telemetry if state is not None else None) or {}
        net = t.get("network") or {}
        playing = (t.get("audio") or {}).get("playing") or {}
        link = ",".join(p for p in (net.get("iface") or "", _dbm(net.get("signal_dbm"))) if p)
        clusters.append(
            fields.Cluster(
                device_id=device.id,
                name=device.name,
                online=state is not None and state.state == "online",
                volume_pct=t.get("volume_pct"),
                link=link,
                temp_c=state.cpu_temp_c if state is not None else None,
                disk_free_pct=state.disk_free_pct if state is not None else None,
                agent=state.agent if state is not None else "",
                playing_label=playing.get("label") or None,
                playing_since_ms=playing.get("actual_ms"),
                commune=device.commune,
            )
        )
    return clusters


def _dbm(value: Any) -> str:
    return "" if value is None else f"{round(value)}dBm"


def _volumes(session: Session) -> dict[str, int | None]:
    rows = session.execute(select(DeviceState.device_id, DeviceState.telemetry)).all()
    return {d: (t or {}).get("volume_pct") for d, t in rows}


def _play(session: Session, e: EventRecord, volume: int | None) -> fields.Play | None:
    """The play a record ends, or None: a cut part whose rest is still to come, or a body
    that is not a play's (ingest keeps what it cannot read)."""
    try:
        body = read_body(e.type, e.body)
    except Refusal:
        return None
    result: str
    if isinstance(body, PlayFinished):
        if body.resumes:
            return None
        started = body.actual_ms
        if body.resumed_from_ms:
            started = _first_start(session, e, body.key) or started
        aired = body.played_ms + max(0, body.resumed_from_ms - body.skipped_ms)
        result, reason = body.outcome, body.error
        relay = body.label if body.relayed_ms is not None else None
    elif isinstance(body, PlayInterrupted):
        started, aired = body.actual_ms, body.played_ms
        result, reason, relay = "interrupted", body.reason, None
    elif isinstance(body, PlayMissed):
        started, aired, result, reason, relay = None, 0, "missed", body.reason, None
    else:
        return None
    return fields.Play(
        device_id=e.device_id,
        key=body.key,
        item_id=body.item_id,
        origin=body.origin,
        priority=body.priority,
        label=body.label,
        started_ms=started,
        aired_ms=aired,
        result=result,
        reason=reason,
        relay=relay,
        volume_pct=volume,
    )


def _first_start(session: Session, end: EventRecord, key: str) -> int | None:
    """When a resumed play's first part started: its first ``play.started`` (a day back)."""
    for started in session.scalars(
        select(EventRecord)
        .where(
            EventRecord.device_id == end.device_id,
            EventRecord.type == "play.started",
            EventRecord.ts_ms >= end.ts_ms - 86_400_000,
            EventRecord.id < end.id,
        )
        .order_by(EventRecord.id)
    ):
        if (started.body or {}).get("key") == key:
            return int(started.body["actual_ms"])
    return None
