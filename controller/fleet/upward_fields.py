"""The province's source-information system in its field names: what it is sent, and
the bulletins it sends down.

Pure: a mapping from the controller's rows to the bodies vendors' receivers
send (../shared/DOMAIN.md, "Reporting upward"; docs/upward.md has the table
and where each name comes from). The Ministry's guidance (1273/BTTTT-TTCS,
then 2455 and 5616) is not public, so the names follow vendors' practice and
live here alone: a province whose system spells them otherwise changes this
module, not the queue, the sender or the poller (controller/radio/downward.py).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from controller.auth import tenancy

VN = ZoneInfo("Asia/Ho_Chi_Minh")
VENDOR = "Xaso"
PATHS = {"ping": "/api/CumLoa/TrangThai", "play": "/api/BanTin/NhatKyPhat"}
BULLETINS_PATH = "/api/BanTin/DanhSach"  # GET ?MaXa=a,b&TuThoiDiem=<local ISO>&SoLuong=n
# Circular 39/2020: the three levels, as vendors number them (1 normal .. 3 emergency)
LEVELS = ((8, 3), (5, 2), (0, 1))  # our priority from: their MucDoUuTien
RESULTS = {
    "completed": "HoanThanh",
    "preempted": "BiNgat",
    "stopped": "DaDung",
    "interrupted": "BiGianDoan",  # a power cut or a crash: the seconds aired are in ThoiLuong
}
KINDS = {"schedule": "LichPhat", "command": "PhatNgay", "call": "GoiSo"}


def local_iso(ms: int | None) -> str | None:
    """Vietnam's time with its offset, to the second: what the receiver logs."""
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, VN).isoformat(timespec="seconds")


def commune_code(commune: str | None, site: str, codes: Mapping[str, str]) -> str:
    """MaXa for a cluster of ``commune`` (controller/auth/tenancy.py): a commune's code in
    the province's records (``codes``, else its id); the province's own clusters, and
    every cluster of a site without communes, the site's (``[upward] commune``)."""
    if tenancy.is_province(commune or None):
        return site
    assert commune is not None
    return codes.get(commune, commune)


def level(priority: int | None) -> int:
    p = 0 if priority is None else priority
    return next(theirs for ours, theirs in LEVELS if p >= ours)


@dataclass(frozen=True)
class Cluster:
    """A loudspeaker cluster as the controller knows it now."""

    device_id: str
    name: str
    online: bool
    volume_pct: int | None
    link: str  # e.g. "4G,-71dBm"; "" when the device does not say
    temp_c: float | None
    disk_free_pct: float | None
    agent: str
    playing_label: str | None
    playing_since_ms: int | None
    lat: float | None = None
    lon: float | None = None
    commune: str | None = None  # its commune in the registry (None: the province's)


def ping(cluster: Cluster, commune: str, now_ms: int) -> dict[str, Any]:
    """One cluster's status ping."""
    used = None if cluster.disk_free_pct is None else round(100 - cluster.disk_free_pct, 1)
    return {
        "MaXa": commune,
        "CumLoaID": cluster.device_id,
        "TenCumLoa": cluster.name or cluster.device_id,
        "NhaCungCap": VENDOR,
        "AmLuong": cluster.volume_pct,
        "TrangThaiHoatDong": 1 if cluster.online else 0,
        "TrangThaiKetNoi": cluster.link if cluster.online else "MatKetNoi",
        "ViDo": cluster.lat,
        "KinhDo": cluster.lon,
        "NhietDo": cluster.temp_c,
        "DungLuongDaDung": used,
        "DangPhat": cluster.playing_label,
        "PhatTu": local_iso(cluster.playing_since_ms),
        "PhienBanUngDung": cluster.agent,
        "ThoiGian": local_iso(now_ms),
    }


@dataclass(frozen=True)
class Play:
    """One play's end on one cluster, from its records (controller/fleet/play_log.py)."""

    device_id: str
    key: str  # the command id, or "<item id>@<local ISO>"
    item_id: str | None
    origin: str | None
    priority: int | None
    label: str
    started_ms: int | None  # its first sample, None if it never aired
    aired_ms: int
    result: str  # completed | preempted | stopped | failed | missed | interrupted
    reason: str
    relay: str | None  # the stream it relayed, None for a clip
    volume_pct: int | None


def play(record: Play, commune: str) -> dict[str, Any]:
    """One play's log record."""
    return {
        "MaXa": commune,
        "CumLoaID": record.device_id,
        "NhatKyID": f"{record.device_id}/{record.key}",  # the receiver's key to drop a repeat
        "BanTinID": record.item_id or record.key,
        "LoaiBanTin": KINDS.get(record.origin or "", "Khac"),
        "MucDoUuTien": level(record.priority),
        "TieuDe": record.label,
        "LinhVuc": "",
        "ThoiLuong": round(record.aired_ms / 1000),
        "ThoiDiemBatDau": local_iso(record.started_ms),
        "KetQua": RESULTS.get(record.result, "KhongPhat"),
        "LyDo": record.reason,
        "TiepSong": record.relay is not None,
        "NguonTiepSong": record.relay,
        "AmLuong": record.volume_pct,
    }


# Bulletins from above: one item of the list the province answers at BULLETINS_PATH.

FROM, CODES, PAGE = "TuThoiDiem", "MaXa", "SoLuong"  # the query's parameters
LEVEL_NAMES = {1: "normal", 2: "priority", 3: "emergency"}  # MucDoUuTien (Circular 39)
MAX_ID, MAX_TITLE, MAX_TARGETS, MAX_TIMES = 128, 200, 100, 24
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # a CumLoaID is our device id
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class BadBulletin(ValueError):
    """An item the poller cannot take, naming the field; ``str()`` is Vietnamese / English."""

    def __init__(self, field: str, vi: str, en: str) -> None:
        super().__init__(f"{field}: {vi} / {field}: {en}")
        self.field = field
        self.message_vi = f"{field}: {vi}"
        self.message_en = f"{field}: {en}"


@dataclass(frozen=True)
class Plan:
    """A schedule from above (LichPhat): the bulletin's planned plays, proposed to the
    operator, whose accept makes them one schedule entry."""

    schedule_id: str  # LichPhatID
    dtstart: str  # local ISO, the first play (ThoiDiemBatDau)
    times: tuple[str, ...]  # "HH:MM" each day (GioPhat); none: the time of dtstart
    last_day: str | None  # "YYYY-MM-DD" (NgayKetThuc); None: that day only


@dataclass(frozen=True)
class Incoming:
    """One bulletin from above, its fields checked."""

    bulletin_id: str  # BanTinID
    title: str  # TieuDe
    level: str  # normal | priority | emergency, from MucDoUuTien
    commune_code: str  # MaXa: a commune's code, or the site's (the whole site)
    created_ms: int  # ThoiDiemTao: the list's order and the poller's cursor
    audio_url: str | None  # TepAmThanh: a URL, or a path on the province's server
    stream_url: str | None  # NguonTiepSong: a stream to relay, for ThoiLuong seconds
    duration_s: int | None  # ThoiLuong
    clusters: tuple[str, ...]  # DanhSachCumLoa; none: the whole commune
    lang: str  # NgonNgu
    plan: Plan | None

    @property
    def external_id(self) -> str:
        """The inbox's id for it: a schedule from above is its own bulletin."""
        if self.plan is None:
            return self.bulletin_id
        return f"LichPhat:{self.plan.schedule_id}"[:MAX_ID]


def incoming(item: object) -> Incoming:
    """An item of the list as the inbox will take it; BadBulletin names what is wrong.
    Fields not named here are the province's own business and are left alone."""
    if not isinstance(item, dict):
        raise BadBulletin("BanTin", "không phải một đối tượng JSON", "not a JSON object")
    stream = _opt_text(item, "NguonTiepSong", 2048)
    audio = _opt_text(item, "TepAmThanh", 2048)
    if (audio is None) == (stream is None):
        raise BadBulletin(
            "TepAmThanh",
            "cần đúng một trong TepAmThanh (tệp âm thanh) và NguonTiepSong (luồng tiếp sóng)",
            "give exactly one of TepAmThanh (an audio file) and NguonTiepSong (a stream)",
        )
    if audio is not None and not audio.startswith(("http://", "https://", "/")):
        raise BadBulletin(
            "TepAmThanh",
            "phải là địa chỉ http(s) hoặc đường dẫn /...",
            "must be an http(s) URL or a /path",
        )
    if stream is not None and not stream.startswith(("http://", "https://")):
        raise BadBulletin("NguonTiepSong", "phải là địa chỉ http(s)", "must be an http(s) URL")
    duration = _opt_int(item, "ThoiLuong", 1, 86_400)
    if stream is not None and duration is None:
        raise BadBulletin(
            "ThoiLuong",
            "luồng tiếp sóng cần thời lượng (giây)",
            "a stream needs its duration in seconds",
        )
    level = item.get("MucDoUuTien")
    if not isinstance(level, int) or isinstance(level, bool) or level not in LEVEL_NAMES:
        raise BadBulletin(
            "MucDoUuTien",
            f"phải là 1, 2 hoặc 3, không phải {level!r}",
            f"must be 1, 2 or 3, not {level!r}",
        )
    return Incoming(
        bulletin_id=_text(item, "BanTinID", MAX_ID),
        title=_text(item, "TieuDe", MAX_TITLE),
        level=LEVEL_NAMES[level],
        commune_code=_text(item, "MaXa", 48),
        created_ms=_moment(item, "ThoiDiemTao"),
        audio_url=audio,
        stream_url=stream,
        duration_s=duration,
        clusters=_clusters(item.get("DanhSachCumLoa")),
        lang=_lang(item.get("NgonNgu")),
        plan=_plan(item),
    )


def list_body(body: object) -> list[object]:
    """The answer at BULLETINS_PATH: a JSON list of items."""
    if not isinstance(body, list):
        raise BadBulletin(
            "DanhSach", "câu trả lời không phải danh sách JSON", "the answer is not a JSON list"
        )
    return body


def query_time(ms: int) -> str:
    """TuThoiDiem: Vietnam's time, as every time the province is sent."""
    found = local_iso(ms)
    assert found is not None
    return found


def _text(item: dict[str, object], name: str, limit: int) -> str:
    value = item.get(name)
    cleaned = " ".join(value.split()) if isinstance(value, str) else ""
    if not cleaned or len(cleaned) > limit:
        raise BadBulletin(
            name, f"cần chữ, từ 1 đến {limit} ký tự", f"must be text of 1 to {limit} characters"
        )
    return cleaned


def _opt_text(item: dict[str, object], name: str, limit: int) -> str | None:
    return None if item.get(name) in (None, "") else _text(item, name, limit)


def _opt_int(item: dict[str, object], name: str, lo: int, hi: int) -> int | None:
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadBulletin(
            name, f"phải là số nguyên từ {lo} đến {hi}", f"must be a whole number from {lo} to {hi}"
        )
    return value


def _when(item: dict[str, object], name: str) -> dt.datetime:
    """A moment; one written without an offset is Vietnam's."""
    value = item.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadBulletin(
            name,
            "cần ngày giờ ISO 8601, ví dụ 2027-03-03T06:30:00+07:00",
            "must be an ISO 8601 time such as 2027-03-03T06:30:00+07:00",
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=VN)


def _moment(item: dict[str, object], name: str) -> int:
    return int(_when(item, name).timestamp() * 1000)


def _clusters(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or len(value) > MAX_TARGETS
        or not all(isinstance(v, str) and _ID.match(v) for v in value)
    ):
        raise BadBulletin(
            "DanhSachCumLoa",
            f"cần danh sách tối đa {MAX_TARGETS} mã cụm loa",
            f"must be a list of at most {MAX_TARGETS} cluster ids",
        )
    return tuple(dict.fromkeys(value))


def _lang(value: object) -> str:
    if value is None:
        return "vi"
    if not isinstance(value, str) or not _LANG.match(value):
        raise BadBulletin("NgonNgu", "cần mã ngôn ngữ như vi", "must be a language code such as vi")
    return value


def _plan(item: dict[str, object]) -> Plan | None:
    schedule = _opt_text(item, "LichPhatID", 100)
    if schedule is None:
        return None
    first = _when(item, "ThoiDiemBatDau").astimezone(VN).replace(tzinfo=None)
    times = item.get("GioPhat")
    if times is None:
        times = []
    if (
        not isinstance(times, list)
        or len(times) > MAX_TIMES
        or not all(isinstance(t, str) and _HHMM.match(t) for t in times)
    ):
        raise BadBulletin(
            "GioPhat",
            f"cần danh sách tối đa {MAX_TIMES} giờ dạng HH:MM",
            f"must be a list of at most {MAX_TIMES} times as HH:MM",
        )
    last = item.get("NgayKetThuc")
    if last is not None and not (isinstance(last, str) and _day_from(last, first.date())):
        raise BadBulletin(
            "NgayKetThuc",
            "cần ngày YYYY-MM-DD, không trước ngày bắt đầu",
            "must be a YYYY-MM-DD date, not before the first day",
        )
    return Plan(
        schedule_id=schedule,
        dtstart=first.replace(microsecond=0).isoformat(),
        times=tuple(sorted(set(times))),
        last_day=last,
    )


def _day_from(text: str, first: dt.date) -> bool:
    try:
        return len(text) == 10 and dt.date.fromisoformat(text) >= first
    except ValueError:
        return False
