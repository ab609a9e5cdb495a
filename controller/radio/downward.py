"""Bulletins and schedules from above, pulled from the province's system into the inbox.

The downward half of docs/upward.md: every ``[upward] bulletins_every_s`` one
replica (a lease, as the upward sender's) asks ``{url}`` for the bulletins of
this site's communes listed since its cursor, downloads each one's audio into
the clip library, and hands it to ``BulletinInbox.receive`` with its level
(Circular 39: a normal one waits for the operator, priority and emergency air
at once) or its proposed times (a schedule from above, LichPhat, waits).

- **Durable cursor.** ``upward_cursors["bulletins"]`` is the province's time
  (ThoiDiemTao) up to which every bulletin is settled: received, or refused.
  Each poll asks again from a few minutes before it (``OVERLAP_MS``), so one
  the province lists late is still seen; receive is idempotent and what was
  refused is remembered, so asking again costs a lookup, not a download.
- **Nothing lost, nothing looped on.** A failure that may pass (the network,
  the audio server) leaves the bulletin ``retry`` in ``downward_bulletins``,
  counted, and holds the cursor at it; the rest of the list goes on. The
  controller's own unreadiness (no broker for a bulletin that must air now, no
  site yet) holds the cursor too, uncounted: an emergency waits for the broker.
  A bulletin refused for its content (a field, audio that is not audio or too
  big, an unknown commune or cluster) is ``refused`` there with the reason,
  logged, and never asked for again; so is one that failed ``max_attempts``
  times.
- **Never in the way.** It runs on a thread of its own; every request has
  ``timeout_s``, every download ``download_timeout_s`` in all and the library's
  size limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from broadcast.audio.clips import ClipError
from controller import i18n
from controller.bus import BusError
from controller.db.broadcast_tables import BulletinRow, DownwardBulletinRow
from controller.fleet import upward_fields as fields
from controller.fleet.upward import Lease, advance, position
from controller.radio.bulletins import BulletinInbox
from controller.radio.clip_library import ClipLibrary, ServiceError
from controller.radio.targets import Target
from controller.settings import UpwardSection
from controller.site.directory import Site
from plumbing.backoff import Backoff
from plumbing.repeating import repeating

log = logging.getLogger(__name__)

SOURCE = "thông tin nguồn tỉnh"  # the inbox's source of every bulletin pulled
CURSOR, LEASE = "bulletins", "bulletins_lease"
PAGE = 100  # SoLuong asked for; a full page is followed by the next
MAX_PAGES = 20
OVERLAP_MS = 5 * 60_000
FIRST_LOOKBACK_MS = 3_600_000  # the very first poll asks for the last hour
POLL_S = 1.0
CHUNK = 1 << 16
PASSING_CLIP_ERRORS = {"timeout", "tool_missing"}


class Passing(Exception):
    """A failure that may pass: the bulletin is asked for again."""


class Waiting(Passing):
    """The controller itself is not ready (no broker for what must air now, no site yet):
    asked for again, and not counted against the bulletin."""


class Refused(Exception):
    """A bulletin that cannot be taken as it is; ``str()``: Vietnamese / English."""

    def __init__(self, code: str, message_vi: str, message_en: str) -> None:
        super().__init__(f"{message_vi} / {message_en}")
        self.code = code
        self.reason = f"{message_vi}\n{message_en}"  # as downward_bulletins keeps it


@dataclass
class Pulled:
    """What one poll did."""

    received: int = 0  # new in the inbox
    known: int = 0  # in the inbox or refused already
    refused: int = 0
    retrying: int = 0


@dataclass
class Seen:
    """One item of the list as far as it was read."""

    key: str  # its id in the inbox, or the hash of a bad one
    item: Any  # as the province sent it
    bulletin: fields.Incoming | None = None  # None: it did not parse
    commune: str | None = None  # its commune, once known


class Downward:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: UpwardSection,
        library: ClipLibrary,
        inbox: Callable[[], BulletinInbox],
        site: Site,
        *,
        can_send: Callable[[], bool],
        clock_ms: Callable[[], int],
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.library = library
        self.inbox = inbox  # made once the site exists (controller/radio/station.py)
        self.site = site
        self.can_send = can_send  # the broker is there, for what airs at once
        self.clock_ms = clock_ms
        self._lease = Lease(sessions, LEASE)
        self._backoff = Backoff(settings.retry_s, settings.retry_max_s, rand)
        self._due_ms = 0

    def step(self) -> None:
        now = self.clock_ms()
        if now < self._due_ms:
            return
        try:
            self.poll(now)
        except Passing as exc:
            delay = self._backoff.next_delay()
            self._due_ms = now + int(delay * 1000)
            log.warning("bulletins from above: %s; asking again in %.0f s", exc, delay)
            return
        self._backoff.reset()
        self._due_ms = now + int(self.settings.bulletins_every_s * 1000)

    @contextmanager
    def running(self) -> Iterator[None]:
        with repeating("downward", self.step, POLL_S):
            yield

    def poll(self, now_ms: int) -> Pulled | None:
        """One round, if this replica holds the lease (else None): every page listed since
        the cursor, then the cursor moved to what is settled. Passing: the list itself
        could not be had, and nothing moved."""
        if not self._lease.take(now_ms):
            return None
        with self.sessions.begin() as session:
            cursor = position(session, CURSOR)
            if cursor == 0:
                cursor = now_ms - FIRST_LOOKBACK_MS
                advance(session, CURSOR, cursor, 0)
        pulled = Pulled()
        since, settled, held = cursor - OVERLAP_MS, cursor, None
        headers = {"Authorization": f"Bearer {self.settings.token}"}
        try:
            with httpx.Client(timeout=self.settings.timeout_s, headers=headers) as http:
                for _ in range(MAX_PAGES):
                    items = self._list(http, since)
                    for at, item in items:
                        done = self._take(http, item, pulled)
                        if at is None:
                            continue  # no time of its own: refused, no mark for the cursor
                        if not done and held is None:
                            held = at  # asked for again from here
                        elif held is None:
                            settled = max(settled, at)
                    last = max((at for at, _ in items if at is not None), default=since)
                    if len(items) < PAGE or last <= since:
                        break  # the last page (or one instant fills a page: the next poll)
                    since = last
        finally:  # what was settled stays settled, even if a later page failed
            with self.sessions.begin() as session:
                advance(session, CURSOR, held if held is not None else settled)
        if pulled.received or pulled.refused or pulled.retrying:
            log.info("bulletins from above: %s", pulled)
        return pulled

    def _list(self, http: httpx.Client, since_ms: int) -> list[tuple[int | None, Any]]:
        """One page, in the province's order of time (ThoiDiemTao; an item without one first)."""
        codes = [self.settings.commune]
        codes += [self._code(c.id) for c in self.site.communes()]
        params = {
            fields.CODES: ",".join(dict.fromkeys(codes)),
            fields.FROM: fields.query_time(since_ms),
            fields.PAGE: str(PAGE),
        }
        try:
            response = http.get(self.settings.url + fields.BULLETINS_PATH, params=params)
            response.raise_for_status()
            items = fields.list_body(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise Passing(f"the list at {fields.BULLETINS_PATH}: {_said(exc)}") from None
        timed = [(_time_of(item), item) for item in items]
        return sorted(timed, key=lambda t: -1 if t[0] is None else t[0])

    def _code(self, commune: str) -> str:
        return self.settings.commune_codes.get(commune, commune)

    def _take(self, http: httpx.Client, item: Any, pulled: Pulled) -> bool:
        """One item into the inbox; False if it failed for a reason that may pass."""
        bulletin: fields.Incoming | None = None
        bad: fields.BadBulletin | None = None
        try:
            bulletin = fields.incoming(item)
        except fields.BadBulletin as exc:
            bad = exc
        seen = Seen(bulletin.external_id if bulletin else _raw_key(item), item, bulletin)
        if self._settled(seen.key):
            pulled.known += 1
            return True
        try:
            if bulletin is None:
                assert bad is not None
                raise Refused("bad_field", bad.message_vi, bad.message_en)
            seen.commune = self._commune(bulletin.commune_code)
            self._receive(http, bulletin, seen.commune)
        except Refused as exc:
            self._refuse(seen, exc)
            pulled.refused += 1
            return True
        except Waiting as exc:
            log.warning("bulletin from above %r waits: %s", seen.key, exc)
            pulled.retrying += 1
            return False
        except Exception as exc:  # Passing, or what nobody foresaw: tried again, counted
            if not isinstance(exc, Passing):
                log.exception("bulletin from above %r: unexpected failure", seen.key)
            if self._failed(seen, str(exc) or type(exc).__name__):
                pulled.refused += 1
                return True
            pulled.retrying += 1
            return False
        with self.sessions.begin() as session:
            session.execute(delete(DownwardBulletinRow).where(DownwardBulletinRow.key == seen.key))
        pulled.received += 1
        return True

    def _settled(self, key: str) -> bool:
        """In the inbox (and not an airing that failed), or refused for good."""
        with self.sessions() as session:
            refused = session.scalar(
                select(DownwardBulletinRow.id).where(
                    DownwardBulletinRow.key == key, DownwardBulletinRow.status == "refused"
                )
            )
            row = session.scalar(
                select(BulletinRow).where(
                    BulletinRow.source == SOURCE, BulletinRow.external_id == key
                )
            )
        return refused is not None or (row is not None and not _unaired(row))

    def _commune(self, code: str) -> str | None:
        """MaXa back to a commune: its code in ``commune_codes``, the site's own code (the
        province's, or the one commune's on a site without communes: None), or its id."""
        by_code = {v: k for k, v in self.settings.commune_codes.items()}
        if code in by_code:
            return by_code[code]
        if code == self.settings.commune:
            return None
        if code in {c.id for c in self.site.communes()}:
            return code
        raise Refused(
            "unknown_commune",
            f"MaXa {code!r} không phải xã nào của hệ thống: thêm mã vào [upward] commune_codes",
            f"MaXa {code!r} is no commune of this site: add its code to [upward] commune_codes",
        )

    def _receive(self, http: httpx.Client, b: fields.Incoming, commune: str | None) -> None:
        on_air_now = b.level != "normal" and b.plan is None
        if on_air_now and not self.can_send():
            raise Waiting("not connected to the MQTT broker, and it must air at once")
        clusters = [Target("device", c) for c in b.clusters]
        targets = clusters or [Target("group", commune or "all")]
        sha = self._audio(http, b, commune) if b.audio_url is not None else None
        try:
            got = self.inbox().receive(
                source=SOURCE,
                external_id=b.external_id,
                title=b.title,
                level=b.level,  # type: ignore[arg-type]
                targets=targets,
                clip_sha256=sha,
                stream_url=b.stream_url,
                stream_duration_s=b.duration_s if b.stream_url else None,
                lang=b.lang,
                commune=commune,
                proposed=_proposed(b.plan) if b.plan is not None else None,
            )
        except ServiceError as exc:
            if exc.code == "no_broker":
                raise Waiting(str(exc)) from None
            raise Refused(exc.code, exc.message_vi, exc.message_en) from None
        except (i18n.Refusal, BusError) as exc:  # the broker went away mid-way, or no site
            raise Waiting(f"{type(exc).__name__}: {exc}") from None
        if on_air_now and got.state == "pending":
            raise Waiting("it is in the inbox but did not air: it is aired on a later try")

    def _audio(self, http: httpx.Client, b: fields.Incoming, commune: str | None) -> str:
        """The bulletin's file, fetched with the token (at most the library's size limit
        and ``download_timeout_s`` in all), prepared into ``commune``'s library."""
        assert b.audio_url is not None
        url = b.audio_url if "://" in b.audio_url else self.settings.url + b.audio_url
        cap = self.library.settings.max_input_bytes
        self.library.clip_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".downward-", dir=self.library.clip_dir) as tmp:
            path = Path(tmp) / "bulletin"
            self._fetch(http, url, path, cap + 1)  # one byte past: the library says too large
            try:
                clip = self.library.upload(
                    path, title=b.title, created_by=SOURCE[:64], filename=b.title, commune=commune
                )
            except ClipError as exc:
                if exc.code in PASSING_CLIP_ERRORS:
                    raise Passing(str(exc)) from None
                raise Refused(exc.code, exc.message_vi, exc.message_en) from None
        return clip.sha256

    def _fetch(self, http: httpx.Client, url: str, path: Path, limit: int) -> None:
        deadline = time.monotonic() + self.settings.download_timeout_s
        try:
            with http.stream("GET", url) as response, path.open("wb") as out:
                if response.status_code in (404, 410):
                    raise Refused(
                        "audio_missing",
                        f"Máy chủ cấp tỉnh không có tệp âm thanh ({response.status_code})",
                        f"The province's server has no such audio file ({response.status_code})",
                    )
                response.raise_for_status()
                got = 0
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk[: limit - got])
                    got += len(chunk)
                    if got >= limit:
                        return
                    if time.monotonic() > deadline:
                        raise Passing(f"the audio took over {self.settings.download_timeout_s} s")
        except httpx.HTTPError as exc:
            raise Passing(f"the audio: {_said(exc)}") from None

    def _refuse(self, seen: Seen, refused: Refused) -> None:
        log.error("bulletin from above %r refused: %s", seen.key, refused)
        self._record(seen, status="refused", code=refused.code, reason=refused.reason)

    def _failed(self, seen: Seen, reason: str) -> bool:
        """Count a failure that may pass; True once it is one too many (then refused)."""
        attempts = self._record(seen, status="retry", code="retry", reason=reason)
        if attempts < self.settings.max_attempts:
            log.warning("bulletin from above %r: %s; tried %d times", seen.key, reason, attempts)
            return False
        vi = f"Đã thử {attempts} lần không nhận được: báo cấp tỉnh kiểm tra rồi gửi lại"
        self._refuse(seen, Refused("gave_up", vi, f"Failed {attempts} times: {reason}"))
        return True

    def _record(self, seen: Seen, *, status: str, code: str, reason: str) -> int:
        now = self.clock_ms()
        with self.sessions.begin() as session:
            row = session.scalar(
                select(DownwardBulletinRow)
                .where(DownwardBulletinRow.key == seen.key)
                .with_for_update()
            )
            if row is None:
                row = DownwardBulletinRow(key=seen.key, attempts=0, first_ms=now)
                session.add(row)
            row.commune = seen.commune
            row.title = seen.bulletin.title if seen.bulletin is not None else ""
            row.status, row.code, row.reason, row.updated_ms = status, code, reason, now
            small = len(json.dumps(seen.item, default=str)) <= 10_000
            row.item = seen.item if small else None
            if status == "retry":
                row.attempts += 1
            return row.attempts


def refusals(
    sessions: sessionmaker[Session], commune: str | None = None, limit: int = 50
) -> list[DownwardBulletinRow]:
    """The latest bulletins from above not taken, for the inbox page: a commune's own
    (``commune``), or every one (the province's view)."""
    with sessions() as session:
        query = select(DownwardBulletinRow).order_by(DownwardBulletinRow.updated_ms.desc())
        if commune is not None:
            query = query.where(DownwardBulletinRow.commune == commune)
        return list(session.scalars(query.limit(limit)))


def _proposed(plan: fields.Plan) -> dict[str, Any]:
    """A schedule from above as the inbox keeps it: EntryInput's timing fields."""
    return {
        "dtstart": plan.dtstart,
        "times": list(plan.times),
        "rrule": "FREQ=DAILY" if plan.last_day else "FREQ=DAILY;COUNT=1",
        "until": f"{plan.last_day}T23:59:59" if plan.last_day else None,
        "schedule_id": plan.schedule_id,
    }


def _unaired(row: BulletinRow) -> bool:
    """One that should have aired on arrival and did not (the broker went away)."""
    return row.state == "pending" and row.level != "normal" and row.proposed is None


def _time_of(item: Any) -> int | None:
    try:
        return fields.incoming(item).created_ms
    except fields.BadBulletin:
        return None


def _raw_key(item: Any) -> str:
    """A bad item's key: its ids if it has them, else its content's hash."""
    if isinstance(item, dict):
        for name, prefix in (("LichPhatID", "LichPhat:"), ("BanTinID", "")):
            value = item.get(name)
            if isinstance(value, str) and value.strip():
                return f"{prefix}{' '.join(value.split())}"[: fields.MAX_ID]
    canonical = json.dumps(item, sort_keys=True, default=str, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _said(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"
