"""What the province's source-information system is sent: our records in its field names.

Pure: a mapping from the controller's rows to the bodies vendors' receivers
send (../shared/DOMAIN.md, "Reporting upward"; docs/upward.md has the table
and where each name comes from). The Ministry's guidance (1273/BTTTT-TTCS,
then 2455 and 5616) is not public, so the names follow vendors' practice and
live here alone: a province whose system spells them otherwise changes this
module, not the queue or the sender.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from controller.auth import tenancy

VN = ZoneInfo("Asia/Ho_Chi_Minh")
VENDOR = "Xaso"
PATHS = {"ping": "/api/CumLoa/TrangThai", "play": "/api/BanTin/NhatKyPhat"}
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
