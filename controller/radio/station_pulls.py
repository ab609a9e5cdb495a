"""One pull per station: the controller relays each station once, into its mount.

While a relay of a station is on air (a relay now, or a schedule entry's
occurrence) the controller runs one ffmpeg that pulls the station's own URL
and encodes it once to Opus/Ogg (controller/radio/streams.py, as live voice
does) into the site's mount of it (``relay_stations.station_mount``), paced
by the wall clock and stamped with the instant the speakers play it
(controller/radio/stream_source.py), so that they play it in step. The
speakers pull that mount with their own credentials, so a province's speakers
open one connection to VOV, not one each. The pull starts ``PULL_LEAD_MS``
before the occurrence (the speakers connect ahead of it) and is restarted,
with backoff, for as long as the relay lasts.

Down at a relay's time (no controller, or the station refused it), the
speakers still air: each one falls back to the station's own URL
(``direct_url``, broadcast/audio/relay.py). Two replicas pulling one station
cannot both feed Icecast: it refuses a second source on a mount, so the
second waits its backoff and takes over if the first goes.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from broadcast.schedule import Schedule
from controller.db.broadcast_tables import RelayStationRow, ScheduleRow
from controller.radio.relay_stations import MAX_RELAY_MIN, mount_station, station_mount
from controller.radio.schedule_entries import targets_of
from controller.radio.scheduling import Scheduling
from controller.radio.stream_source import (
    PLAYOUT_DELAY_MS,
    IcecastSource,
    Pacer,
    StreamSourceError,
    TooLate,
)
from controller.radio.streams import StreamServer, opus_ogg_args
from controller.radio.targets import Clock
from plumbing.backoff import Backoff
from plumbing.clock import wall_ms
from plumbing.repeating import repeating
from protocol.commands import ScheduleSet, StreamRef
from protocol.ogg import OggError

log = logging.getLogger(__name__)
Documents = Callable[[Session], list[tuple[str, ScheduleSet]]]

PULL_LEAD_MS = 20_000  # the pull is on air before the speakers connect to the mount
CHECK_EVERY_S = 2.0
READY_TIMEOUT_S = 8.0  # a relay now waits this long for its mount before it is sent
RAN_WELL_S = 10.0  # a pull that lasted this long starts its backoff again from the base
_STOP_TIMEOUT_S = 5


@dataclass(frozen=True)
class Window:
    """A station on air from ``start_ms`` to ``end_ms`` (a relay's occurrence); a relay
    now's also names its speakers and priority, so that a stop can end it early."""

    station_id: int
    start_ms: int
    end_ms: int
    devices: frozenset[str] = frozenset()
    priority: int = 0


def released(held: Iterable[Window], devices: frozenset[str], priority_max: int) -> list[Window]:
    """The relays now still on air after a stop of ``devices`` up to ``priority_max``: a
    relay it cut on every speaker it reached is gone, one it cut on some keeps the rest."""
    kept = []
    for window in held:
        if not window.devices or window.priority > priority_max:
            kept.append(window)
        elif left := window.devices - devices:
            kept.append(replace(window, devices=left))
    return kept


def due(windows: Iterable[Window], now_ms: int, lead_ms: int = PULL_LEAD_MS) -> set[int]:
    """The stations to pull now: a window starts within ``lead_ms`` or is under way."""
    return {w.station_id for w in windows if w.start_ms - lead_ms <= now_ms < w.end_ms}


def schedule_windows(
    docs: Iterable[tuple[str, ScheduleSet]], start_ms: int, end_ms: int
) -> list[Window]:
    """The relays of the site's stations in the schedule documents (topic, document),
    starting in the range; each document on its own, as its speakers read it."""
    found = []
    for topic, doc in docs:
        for occ in Schedule.build([(topic, doc)]).occurrences(start_ms, end_ms):
            station = mount_station(occ.stream.url) if occ.stream is not None else None
            if station is not None:
                found.append(Window(station, occ.start_ms, occ.end_ms))
    return found


def pull_argv(ffmpeg: str, station_url: str) -> list[str]:
    """Pull a station, whatever it sends (MP3, AAC, Ogg), and encode it once, Opus/Ogg on
    stdout: the pull paces it and sends it to the mount (controller/radio/stream_source)."""
    argv = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
    argv += ["-rw_timeout", "10000000", "-i", station_url, "-map", "0:a:0", "-vn"]
    return [*argv, *opus_ogg_args("audio"), "-f", "ogg", "pipe:1"]


class StationPull:
    """One station pulled into its mount until ``stop``, restarted with backoff."""

    def __init__(
        self,
        station_id: int,
        url: str,
        streams: StreamServer,
        *,
        ffmpeg: str = "ffmpeg",
        retry_base_s: float = 0.5,
        retry_cap_s: float = 5.0,
    ) -> None:
        self.station_id = station_id
        self.url = url
        self.mount = station_mount(station_id)
        self.streams = streams
        self._argv = pull_argv(ffmpeg, url)
        self._backoff = Backoff(retry_base_s, retry_cap_s)
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.attempts = 0
        self.on_air = threading.Event()  # audio is going out to the mount
        self._thread = threading.Thread(target=self._run, name=f"pull-{station_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    self._proc = proc = subprocess.Popen(
                        self._argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                    )
                except OSError as exc:  # no ffmpeg: said, and tried again later
                    log.error("station %d pull: cannot run ffmpeg: %s", self.station_id, exc)
                    self._proc = None
                self.attempts += 1
            if self._proc is None:
                self._stop.wait(self._backoff.next_delay())
                continue
            began = time.monotonic()
            cut = self._relay(proc)
            assert proc.stderr is not None
            err = proc.stderr.read()
            proc.wait()
            self.on_air.clear()
            if self._stop.is_set():
                return
            if time.monotonic() - began > RAN_WELL_S:
                self._backoff.reset()
            delay = self._backoff.next_delay()
            why = cut or err.decode(errors="replace").strip()[-300:] or "the station's stream ended"
            log.warning("station %d pull: %s; again in %.1f s", self.station_id, why, delay)
            self._stop.wait(delay)

    def _relay(self, proc: subprocess.Popen[bytes]) -> str:
        """The encode, paced and stamped, to the mount until it ends; why it was cut, if."""
        source = IcecastSource(self.streams, self.mount)

        def send(data: bytes) -> None:
            source.send(data)
            self.on_air.set()

        pacer = Pacer(send, late_ms=PLAYOUT_DELAY_MS)
        assert proc.stdout is not None
        try:
            while chunk := os.read(proc.stdout.fileno(), 4096):
                pacer.feed(chunk)
        except (TooLate, StreamSourceError, OggError) as exc:
            proc.kill()
            return str(exc)
        finally:
            source.close()
        return ""

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._thread.join(_STOP_TIMEOUT_S + 1)


class StationPulls:
    """Which stations are on air, from the schedules and the relays sent now; their pulls."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        streams: StreamServer,
        documents: Documents,
        *,
        clock: Clock = wall_ms,
        lead_ms: int = PULL_LEAD_MS,
        ffmpeg: str = "ffmpeg",
    ) -> None:
        self.sessions = sessions
        self.streams = streams
        self.documents = documents
        self.clock = clock
        self.lead_ms = lead_ms
        self.ffmpeg = ffmpeg
        self.retry_cap_s = 5.0
        self.pulls: dict[int, StationPull] = {}
        self._held: list[Window] = []  # relays sent now, from this replica
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def hold(self, stream: StreamRef, at_ms: int, devices: frozenset[str], priority: int) -> None:
        """A relay now of a station's mount to ``devices``: pull it for its length, and
        wait (a little) until the mount is served, so the speakers find it when they
        connect."""
        station = mount_station(stream.url)
        if station is None or not stream.url.startswith(self.streams.url.rstrip("/") + "/"):
            return
        end_ms = at_ms + stream.duration_s * 1000
        with self._lock:
            self._held.append(Window(station, at_ms, end_ms, devices, priority))
        self.tick()
        self.wait_mounted(station, READY_TIMEOUT_S)

    def release(self, devices: frozenset[str], priority_max: int) -> None:
        """A stop sent to ``devices``: a relay now it ended everywhere is pulled no more
        (a stop sent by another replica does not reach this one's: its pull lasts the
        relay's length)."""
        with self._lock:
            before = len(self._held)
            self._held = released(self._held, devices, priority_max)
            gone = len(self._held) < before
        if gone:
            self.tick()

    def windows(self, now_ms: int) -> list[Window]:
        with self._lock:
            self._held = [w for w in self._held if w.end_ms > now_ms]
            held = list(self._held)
        with self.sessions() as session:
            docs = self.documents(session)
        reach = MAX_RELAY_MIN * 60_000
        return held + schedule_windows(docs, now_ms - reach, now_ms + self.lead_ms + 1)

    def tick(self) -> None:
        """Start the pulls now due, stop those no longer due (or whose URL changed)."""
        wanted = due(self.windows(self.clock()), self.clock(), self.lead_ms)
        with self.sessions() as session:
            urls = {
                row.id: row.url
                for row in session.scalars(
                    select(RelayStationRow).where(RelayStationRow.id.in_(wanted))
                )
            }
        with self._lock:
            for station_id, pull in list(self.pulls.items()):
                if urls.get(station_id) != pull.url:
                    del self.pulls[station_id]
                    pull.stop()
            for station_id, url in urls.items():
                if station_id not in self.pulls:
                    log.info("station %d: pulling %s into its mount", station_id, url)
                    self.pulls[station_id] = StationPull(
                        station_id, url, self.streams, ffmpeg=self.ffmpeg,
                        retry_cap_s=self.retry_cap_s,
                    )  # fmt: skip

    def mounted(self, station_id: int) -> bool:
        """Whether the station's pull is sending audio to its mount now."""
        with self._lock:
            pull = self.pulls.get(station_id)
        return pull is not None and pull.on_air.is_set()

    def wait_mounted(self, station_id: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.mounted(station_id):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def close(self) -> None:
        with self._lock:
            pulls, self.pulls = list(self.pulls.values()), {}
        for pull in pulls:
            pull.stop()

    @contextmanager
    def running(self, every_s: float = CHECK_EVERY_S) -> Iterator[None]:
        """The pulls' loop for the app's life; leaving it stops every pull."""
        try:
            with repeating("station-pulls", self.tick, every_s, wake=self._wake):
                yield
        finally:
            self.close()


def relay_documents(scheduling: Scheduling) -> Documents:
    """The schedule documents of every target that an entry relaying a station reaches."""

    def documents(session: Session) -> list[tuple[str, ScheduleSet]]:
        rows = session.scalars(select(ScheduleRow).where(ScheduleRow.station_id.is_not(None)))
        targets = sorted({t for row in rows for t in targets_of(row)}, key=lambda t: (t.kind, t.id))
        topics = scheduling.fleet.topics
        return [(t.topic(topics, "schedule"), scheduling.document(session, t)) for t in targets]

    return documents
