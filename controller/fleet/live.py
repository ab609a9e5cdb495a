"""The live pages' feed: one poll of the database per process, fanned out to every page.

Why a poll of the database and not ingest's own events: a province runs
several replicas, and a page open on one must see what another one ingested.
Why one loop: a page per technician polling every second would cost a query
per client per second; here five or six statements a second serve any number
of pages, and none while no page is open. Each pass reads:

1. the devices' state (the dashboard's online/offline rule, in SQL): every
   device's on every tenth pass, else only those whose status changed, that
   are new or that went quiet past the limit since the last pass;
2. the open alerts;
3. the play records stored since the last pass (with an overlap, so a slow
   transaction of another replica is not missed; repeats are harmless), and
   the latest one of each speaker that has just come back online;
4. the commands (broadcasts, the console's) sent in the last minutes, and
5. their acks.

The pass compares with the previous one (controller/fleet/live_rules.py) and
hands what changed to each subscriber. A subscriber keeps only the latest
value of each item, so a slow page skips states, never piles them up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controller.db.broadcast_tables import BroadcastAckRow, BroadcastRow
from controller.db.fleet_tables import Alert, Device, DeviceState, EventRecord
from controller.fleet.live_rules import (
    PLAY_TYPES,
    OnAir,
    PlayMark,
    changes,
    fold_plays,
    on_air,
)
from controller.fleet.queries import _state_expr as state_expr  # the dashboard's own rule

log = logging.getLogger(__name__)

POLL_S = 1.0
OVERLAP_MS = 10_000  # how late another replica's transaction may become visible
FIRST_LOOK_MS = 24 * 3600_000  # a play older than a day is not on air any more
RECENT_MS = 3600_000  # a new record told by a device's clock up to an hour behind ours
FULL_EVERY = 10  # passes: every device's state read again (time-outs, removed devices)
COMMAND_WINDOW_MS = 15 * 60_000  # acks shown live for commands this recent


@dataclass(frozen=True)
class DeviceLive:
    state: str  # online | offline | unknown
    alerts: tuple[str, ...]  # kinds of its open alerts


@dataclass(frozen=True)
class AckLive:
    device: str
    ok: bool | None
    error: str | None


@dataclass(frozen=True)
class CommandLive:
    kind: str
    status: str
    acks: tuple[AckLive, ...]


@dataclass
class Snapshot:
    devices: dict[str, DeviceLive] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    on_air: dict[str, OnAir] = field(default_factory=dict)
    commands: dict[str, CommandLive] = field(default_factory=dict)

    def items(self) -> dict[tuple[str, str], Any]:
        """Every item by (topic, key): what subscribers are told about."""
        found: dict[tuple[str, str], Any] = {("counts", ""): self.counts}
        found.update({("device", k): v for k, v in self.devices.items()})
        found.update({("onair", k): v for k, v in self.on_air.items()})
        found.update({("command", k): v for k, v in self.commands.items()})
        return found


class Subscription:
    """One page's stream: the latest value of each item it has not been sent yet."""

    def __init__(self, loop: asyncio.AbstractEventLoop, devices: frozenset[str] | None) -> None:
        self.loop = loop
        self.devices = devices  # None: every device
        self.pending: dict[tuple[str, str], Any] = {}
        self.ready = asyncio.Event()
        self.closed = False

    def wants(self, topic: str, key: str) -> bool:
        return topic != "device" or self.devices is None or key in self.devices

    def offer(self, changed: dict[tuple[str, str], Any]) -> None:
        """From the poll thread: hand over to the page's event loop."""
        mine = {k: v for k, v in changed.items() if self.wants(*k)}
        if mine:
            self.loop.call_soon_threadsafe(self._merge, mine)

    def _merge(self, changed: dict[tuple[str, str], Any]) -> None:
        self.pending.update(changed)
        self.ready.set()

    def wake(self) -> None:
        self.loop.call_soon_threadsafe(self.ready.set)

    def take(self) -> dict[tuple[str, str], Any]:
        taken, self.pending = self.pending, {}
        self.ready.clear()
        return taken


class LiveFeed:
    """The poll loop (a thread, while any page listens) and its subscribers."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        offline_after_ms: int,
        clock_ms: Any,
        poll_s: float = POLL_S,
    ) -> None:
        self.sessions = sessions
        self.offline_after_ms = offline_after_ms
        self.clock_ms = clock_ms
        self.poll_s = poll_s
        self.passes = 0  # polls made: a test can tell the loop idles
        self._lock = threading.Lock()
        self._subscribers: set[Subscription] = set()
        self._wanted = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._snapshot = Snapshot()
        self._fresh = False  # the snapshot is current (the loop has been running)
        self._plays: dict[str, PlayMark] = {}
        self._states: dict[str, str] = {}
        self._cursor_ms: int | None = None  # received_ms read up to

    # subscribers

    def subscribe(
        self, loop: asyncio.AbstractEventLoop, devices: frozenset[str] | None = None
    ) -> Subscription:
        sub = Subscription(loop, devices)
        with self._lock:
            self._subscribers.add(sub)
            if self._fresh:  # a page that joins gets the whole current state at once
                sub.offer(self._snapshot.items())
            self._wanted.notify_all()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # the loop

    @contextmanager
    def running(self) -> Iterator[None]:
        thread = threading.Thread(target=self._run, name="live-feed", daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            with self._lock:
                self._wanted.notify_all()
                for sub in self._subscribers:
                    sub.closed = True
                    sub.wake()
            thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while not self._subscribers and not self._stop.is_set():
                    self._fresh = False  # nobody listens: forget, start afresh later
                    self._snapshot, self._plays, self._cursor_ms = Snapshot(), {}, None
                    self._states = {}
                    self._wanted.wait()
            if self._stop.is_set():
                return
            try:
                self.poll()
            except Exception:
                log.exception("live feed: a pass failed; trying again")
            self._stop.wait(self.poll_s)

    def poll(self) -> Snapshot:
        """One pass: read, compare, hand each subscriber what changed."""
        now = int(self.clock_ms())
        with self.sessions() as session:
            snapshot = self._read(session, now)
        with self._lock:
            before = self._snapshot.items() if self._fresh else {}
            changed = changes(before, snapshot.items())
            self._snapshot, self._fresh = snapshot, True
            self.passes += 1
            for sub in self._subscribers:
                sub.offer(changed)
        return snapshot

    def _read(self, session: Session, now: int) -> Snapshot:
        before = dict(self._states)
        self._states = self._read_states(session, now)
        alerts: dict[str, list[str]] = {}
        for device, kind in session.execute(
            select(Alert.device_id, Alert.kind)
            .where(Alert.cleared_ms.is_(None))
            .order_by(Alert.device_id, Alert.kind)
        ):
            alerts.setdefault(device, []).append(kind)
        devices = {d: DeviceLive(s, tuple(alerts.get(d, ()))) for d, s in self._states.items()}
        counts = {"online": 0, "offline": 0, "unknown": 0}
        for live in devices.values():
            counts[live.state] += 1
        counts["alerting"] = len(alerts)
        online = {d for d, s in self._states.items() if s == "online"}
        back = sorted(d for d in online if before.get(d) != "online")
        self._plays = fold_plays(self._plays, self._new_plays(session, now, back))
        self._cursor_ms = now
        return Snapshot(devices, counts, on_air(self._plays, online), _commands(session, now))

    def _read_states(self, session: Session, now: int) -> dict[str, str]:
        """Every device's state on a full pass; else those whose status changed, that are
        new, or that went quiet past the limit since the last pass. A device heard from
        again after such a silence, or one removed, waits for the next full pass."""
        stmt = select(Device.id, state_expr(now, self.offline_after_ms)).outerjoin(
            DeviceState, DeviceState.device_id == Device.id
        )
        if self._cursor_ms is None or self.passes % FULL_EVERY == 0:
            return dict(session.execute(stmt).all())
        since = self._cursor_ms - OVERLAP_MS
        quiet = Device.last_seen_ms + self.offline_after_ms  # offline by time from then on
        changed = stmt.where(
            (DeviceState.changed_ms >= since)
            | (Device.first_seen_ms >= since)
            | ((quiet >= since) & (quiet < now))
        )
        return {**self._states, **dict(session.execute(changed).all())}

    def _new_plays(self, session: Session, now: int, back: list[str]) -> list[PlayMark]:
        """The play records stored since the last pass; for the first pass, and for the
        speakers that came back online (their outbox brings records of any age), each
        one's latest of the day."""
        columns = (
            EventRecord.device_id,
            EventRecord.ts_ms,
            EventRecord.id,
            EventRecord.type,
            EventRecord.body,
        )
        marks: list[PlayMark] = []
        if self._cursor_ms is not None:
            recent = select(*columns).where(
                EventRecord.type.in_(PLAY_TYPES),
                EventRecord.ts_ms >= now - RECENT_MS,  # on the index (type, ts_ms)
                EventRecord.received_ms >= self._cursor_ms - OVERLAP_MS,
            )
            marks += [PlayMark.of(*row) for row in session.execute(recent)]
            if not back:
                return marks
        latest = select(EventRecord.device_id, func.max(EventRecord.ts_ms).label("ts")).where(
            EventRecord.type.in_(PLAY_TYPES), EventRecord.ts_ms >= now - FIRST_LOOK_MS
        )
        if self._cursor_ms is not None:
            latest = latest.where(EventRecord.device_id.in_(back))
        sub = latest.group_by(EventRecord.device_id).subquery()
        stmt = (
            select(*columns)
            .join(sub, (EventRecord.device_id == sub.c.device_id) & (EventRecord.ts_ms == sub.c.ts))
            .where(EventRecord.type.in_(PLAY_TYPES))
        )
        return marks + [PlayMark.of(*row) for row in session.execute(stmt)]


def _commands(session: Session, now: int) -> dict[str, CommandLive]:
    recent = session.execute(
        select(BroadcastRow.id, BroadcastRow.kind, BroadcastRow.status, BroadcastRow.devices).where(
            BroadcastRow.created_ms >= now - COMMAND_WINDOW_MS
        )
    ).all()
    if not recent:
        return {}
    acks: dict[str, list[AckLive]] = {}
    for b_id, device, ok, error in session.execute(
        select(
            BroadcastAckRow.broadcast_id, BroadcastAckRow.device, BroadcastAckRow.ok,
            BroadcastAckRow.error,
        )
        .where(BroadcastAckRow.broadcast_id.in_([r.id for r in recent]))
        .order_by(BroadcastAckRow.broadcast_id, BroadcastAckRow.device)
    ):  # fmt: skip
        acks.setdefault(b_id, []).append(AckLive(device, ok, error))
    return {r.id: CommandLive(r.kind, r.status, _every_device(r.devices, acks.get(r.id, [])))
            for r in recent}  # fmt: skip


def _every_device(reached: list[str] | None, answered: list[AckLive]) -> tuple[AckLive, ...]:
    """One entry per speaker reached: its answer, or none yet (a row is made at its ack)."""
    by_device = {a.device: a for a in answered}
    waiting = [AckLive(d, None, None) for d in reached or () if d not in by_device]
    return tuple(sorted([*answered, *waiting], key=lambda a: a.device))
