"""The stations a commune relays ("Đài tiếp sóng"): VOV1 at 05:00, the province's radio.

A station is a name, an http(s) stream URL, the level it plays at (normal or
priority: a relay is never an emergency) and what airs when its stream cannot
be reached or goes silent: a clip of the library, or nothing (the relay stops
cleanly). Relays now (controller.radio.broadcasting) and schedule entries
(controller.radio.scheduling) take their stream from ``stream_for``, and the
stream a device pulls from ``relay_stream_for``: with a stream server, the
site's mount of the station (``station_mount``), which the controller pulls
once and fans out (controller/radio/station_pulls.py), with the station's own
URL as ``direct_url`` for when the mount cannot be had; without one, the
station's own URL.

A station belongs to a commune (``commune``; None: the province's). The
province's (VOV, defined once) are every commune's to relay and the province's
to change; a commune's are its own (controller/auth/tenancy.py: ``reads``,
``sees``). Names stay unique across the site.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from controller.auth import tenancy
from controller.db.broadcast_tables import ClipRow, RelayStationRow, ScheduleRow
from controller.radio.clip_library import (
    ClipLibrary,
    Conflict,
    Invalid,
    NotFound,
    OutOfScope,
    clip_url,
)
from controller.radio.streams import StreamServer
from controller.radio.targets import Clock
from plumbing.clock import wall_ms
from protocol.commands import ClipRef, StreamRef

RELAY_LEVELS = ("normal", "priority")
MAX_RELAY_MIN = 24 * 60  # what broadcast.stream's duration_s allows
MAX_URL = 2048


class StationInput(BaseModel):
    """A station as a broadcaster writes it; ``check_station`` refuses what cannot work."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    url: str
    level: Literal["normal", "priority"] = "normal"
    on_failure: Literal["fallback", "stop"] = "stop"
    fallback_sha256: str | None = None


@dataclass(frozen=True)
class RadioStation:
    id: int
    name: str
    url: str
    level: str
    on_failure: str
    fallback_sha256: str | None
    created_by: str
    updated_ms: int
    commune: str | None = None  # whose it is (None: the province's, every commune's)

    @classmethod
    def of(cls, row: RelayStationRow) -> RadioStation:
        return cls(
            row.id,
            row.name,
            row.url,
            row.level,
            row.on_failure,
            row.fallback_sha256,
            row.created_by,
            row.updated_ms,
            row.commune,
        )


def check_url(url: str) -> str:
    """The stream URL, trimmed, or a refusal that says what a good one looks like."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise Invalid(
            "bad_stream_url",
            "Địa chỉ luồng phát phải bắt đầu bằng http:// hoặc https:// và có tên máy chủ, "
            "ví dụ https://str.vov.gov.vn/vov1",
            "The stream address must start with http:// or https:// and name a server, "
            "e.g. https://str.vov.gov.vn/vov1",
        )
    if len(url) > MAX_URL or any(not "!" <= c <= "~" for c in url):
        raise Invalid(
            "bad_stream_url",
            f"Địa chỉ luồng phát có dấu cách hoặc ký tự lạ, hoặc dài quá {MAX_URL} ký tự: "
            "chép lại đúng địa chỉ đài cung cấp",
            f"The stream address has a space or an unusual character, or is over {MAX_URL} "
            "characters: copy the address the station gives exactly",
        )
    return url


def check_minutes(minutes: int) -> int:
    """How long a relay lasts: whole minutes, 1 to a day."""
    if not 1 <= minutes <= MAX_RELAY_MIN:
        raise Invalid(
            "bad_duration",
            f"Thời lượng tiếp sóng phải từ 1 đến {MAX_RELAY_MIN} phút",
            f"A relay lasts 1 to {MAX_RELAY_MIN} minutes",
        )
    return minutes


def station_mount(station_id: int) -> str:
    """The site's mount of a station: one per station, so every relay of it shares it."""
    return f"/station-{station_id}.ogg"


def mount_station(url: str) -> int | None:
    """The station whose mount ``url`` is (any stream server's), or None."""
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    number = name.removeprefix("station-").removesuffix(".ogg")
    if name == f"station-{number}.ogg" and number.isdigit() and number == str(int(number)):
        return int(number)
    return None


def relay_stream_for(
    station: RadioStation, streams: StreamServer | None
) -> tuple[str, bool, str | None]:
    """What speakers pull for ``station``: (url, device_auth, direct_url). Through the
    site's stream server when there is one, the station's own URL to fall back on."""
    if streams is None:
        return station.url, False, None
    return streams.listener_url(station_mount(station.id)), True, station.url


def relay_url_for(station: RadioStation, streams: StreamServer | None = None) -> str:
    """The URL speakers pull first for ``station``."""
    return relay_stream_for(station, streams)[0]


def station_not_found(station_id: int) -> NotFound:
    return NotFound(
        "station_not_found",
        f"Không có đài tiếp sóng số {station_id}: tải lại trang rồi chọn lại",
        f"No station {station_id}: reload the page and choose again",
    )


def province_station(name: str) -> OutOfScope:
    return OutOfScope(
        "province_station",
        f"Đài «{name}» do cấp tỉnh khai báo: xã được tiếp sóng nhưng không được sửa hoặc xoá; "
        "liên hệ cấp tỉnh",
        f"Station «{name}» is the province's: a commune may relay it but not change or "
        "delete it; contact the province",
    )


def station_stream(
    session: Session,
    station_id: int,
    duration_s: int,
    base_url: str,
    streams: StreamServer | None = None,
    *,
    commune: str | None = None,
) -> StreamRef:
    """A schedule's relay of a station, read in the schedule's own transaction; a station
    ``commune`` may not relay is not found."""
    row = session.get(RelayStationRow, station_id)
    if row is None or not tenancy.reads(commune, row.commune):
        raise station_not_found(station_id)
    if not 1 <= duration_s <= MAX_RELAY_MIN * 60:
        check_minutes(0)
    fallback = None
    if row.on_failure == "fallback" and row.fallback_sha256 is not None:
        clip = session.get(ClipRow, row.fallback_sha256)
        if clip is not None:
            fallback = ClipRef(
                sha256=clip.sha256,
                url=clip_url(base_url, clip.sha256),
                bytes=clip.size_bytes,
                duration_ms=clip.duration_ms,
            )
    url, device_auth, direct_url = relay_stream_for(RadioStation.of(row), streams)
    return StreamRef(
        url=url,
        duration_s=duration_s,
        fallback=fallback,
        device_auth=device_auth,
        direct_url=direct_url,
    )


class StationList:
    """CRUD of the relayed stations, and the stream a relay of one sends."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        library: ClipLibrary,
        *,
        streams: StreamServer | None = None,
        clock: Clock = wall_ms,
    ) -> None:
        self.sessions = sessions
        self.library = library
        self.streams = streams
        self.clock = clock

    def create(self, entry: StationInput, *, by: str, commune: str | None = None) -> RadioStation:
        """A station of ``commune`` (its author's; None: the province's)."""
        now = self.clock()
        with self.sessions.begin() as session:
            row = RelayStationRow(created_by=by, created_ms=now, commune=commune)
            self._fill(session, row, entry, now)
            session.add(row)
            self._flush(session, row.name)
            return RadioStation.of(row)

    def update(
        self, station_id: int, entry: StationInput, *, by: str, commune: str | None = None
    ) -> RadioStation:
        """Change a station; the schedules relaying it send the new stream at their next
        publish (the caller republishes them). Only its own commune (or the province)
        changes it."""
        now = self.clock()
        with self.sessions.begin() as session:
            row = self._row(session, station_id, commune, change=True)
            self._fill(session, row, entry, now)
            self._flush(session, row.name)
            return RadioStation.of(row)

    def delete(self, station_id: int, commune: str | None = None) -> RadioStation:
        with self.sessions.begin() as session:
            row = self._row(session, station_id, commune, change=True)
            used = session.scalar(
                select(func.count())
                .select_from(ScheduleRow)
                .where(ScheduleRow.station_id == station_id)
            )
            if used:
                raise Conflict(
                    "station_in_use",
                    f"Đài «{row.name}» đang có trong {used} lịch phát: xoá hoặc sửa các lịch "
                    "đó trước khi xoá đài",
                    f"Station «{row.name}» is in {used} schedule entries: delete or change "
                    "them before deleting the station",
                )
            gone = RadioStation.of(row)
            session.delete(row)
            return gone

    def get(self, station_id: int, commune: str | None = None) -> RadioStation:
        with self.sessions() as session:
            return RadioStation.of(self._row(session, station_id, commune))

    def stations(self, commune: str | None = None) -> list[RadioStation]:
        """The stations ``commune`` may relay: its own and the province's (None: all)."""
        with self.sessions() as session:
            query = select(RelayStationRow)
            if commune is not None:
                query = query.where(
                    or_(RelayStationRow.commune.is_(None), RelayStationRow.commune == commune)
                )
            rows = session.scalars(query)
            # sorted here, not by the database's collation (SQLite and PostgreSQL differ)
            return sorted((RadioStation.of(r) for r in rows), key=lambda s: s.name.casefold())

    def stream_for(
        self, station_id: int, duration_s: int, base_url: str, commune: str | None = None
    ) -> StreamRef:
        """What a relay of the station for ``duration_s`` sends: its URL and fallback clip."""
        with self.sessions() as session:
            return station_stream(
                session, station_id, duration_s, base_url, self.streams, commune=commune
            )

    def _row(
        self,
        session: Session,
        station_id: int,
        commune: str | None = None,
        *,
        change: bool = False,
    ) -> RelayStationRow:
        """The station, if ``commune`` may relay it (another commune's is not found) and,
        to ``change`` it, if it is theirs (the province's: 403)."""
        row = session.get(RelayStationRow, station_id)
        if row is None or not tenancy.reads(commune, row.commune):
            raise station_not_found(station_id)
        if change and not tenancy.sees(commune, row.commune):
            raise province_station(row.name)
        return row

    def _fill(self, session: Session, row: RelayStationRow, entry: StationInput, now: int) -> None:
        name = " ".join(entry.name.split())
        if not 1 <= len(name) <= 100:
            raise Invalid(
                "bad_station_name",
                "Đặt tên đài từ 1 đến 100 ký tự, ví dụ «VOV1» hoặc «Đài PT-TH tỉnh»",
                "Give the station a name of 1 to 100 characters, e.g. «VOV1»",
            )
        fallback = entry.fallback_sha256 or None
        if entry.on_failure == "fallback":
            if fallback is None:
                raise Invalid(
                    "no_fallback",
                    "Chọn tệp âm thanh phát thay khi mất sóng, hoặc chọn «dừng phát»",
                    "Choose the clip that plays when the stream fails, or choose «stop»",
                )
            self.library.get(fallback, row.commune)  # refused when the commune has it not
        else:
            fallback = None
        row.name, row.url, row.level = name, check_url(entry.url), entry.level
        row.on_failure, row.fallback_sha256, row.updated_ms = entry.on_failure, fallback, now

    @staticmethod
    def _flush(session: Session, name: str) -> None:
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(
                "station_name_taken",
                f"Đã có đài tên «{name}»: chọn tên khác",
                f"There is already a station named «{name}»: choose another name",
            ) from None
