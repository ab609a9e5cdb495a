"""A reference source-information server on loopback, for the upward adapter's tests.

It checks every field of every body against what vendors' receivers send
(controller/fleet/upward_fields.py, docs/upward.md), the Bearer token, and
the Idempotency-Key; answers 400 naming the field that is wrong, 401 to a
wrong token, 503 while ``down`` is set (an outage); and keeps what it took.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
VN_OFFSET = dt.timedelta(hours=7)


def _time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.utcoffset() == VN_OFFSET and parsed.microsecond == 0


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _opt(check: Any) -> Any:
    return lambda v: v is None or check(v)


def _number(lo: float, hi: float) -> Any:
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi


def _int(lo: int, hi: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


PING = {
    "MaXa": lambda v: _text(v) and bool(v),
    "CumLoaID": lambda v: _text(v) and bool(ID.match(v)),
    "TenCumLoa": lambda v: _text(v) and bool(v),
    "NhaCungCap": lambda v: v == "Xaso",
    "AmLuong": _opt(_int(0, 100)),
    "TrangThaiHoatDong": lambda v: v in (0, 1) and not isinstance(v, bool),
    "TrangThaiKetNoi": _text,
    "ViDo": _opt(_number(-90, 90)),
    "KinhDo": _opt(_number(-180, 180)),
    "NhietDo": _opt(_number(-40, 150)),
    "DungLuongDaDung": _opt(_number(0, 100)),
    "DangPhat": _opt(_text),
    "PhatTu": _opt(_time),
    "PhienBanUngDung": _text,
    "ThoiGian": _time,
}
PLAY = {
    "MaXa": lambda v: _text(v) and bool(v),
    "CumLoaID": lambda v: _text(v) and bool(ID.match(v)),
    "NhatKyID": lambda v: _text(v) and bool(v),
    "BanTinID": lambda v: _text(v) and bool(v),
    "LoaiBanTin": lambda v: v in ("LichPhat", "PhatNgay", "GoiSo", "Khac"),
    "MucDoUuTien": lambda v: v in (1, 2, 3) and not isinstance(v, bool),
    "TieuDe": _text,
    "LinhVuc": _text,
    "ThoiLuong": _int(0, 86_400),
    "ThoiDiemBatDau": _opt(_time),
    "KetQua": lambda v: v in ("HoanThanh", "BiNgat", "DaDung", "BiGianDoan", "KhongPhat"),
    "LyDo": _text,
    "TiepSong": lambda v: isinstance(v, bool),
    "NguonTiepSong": _opt(_text),
    "AmLuong": _opt(_int(0, 100)),
}
ROUTES = {"/api/CumLoa/TrangThai": ("ping", PING), "/api/BanTin/NhatKyPhat": ("play", PLAY)}


def problems(body: Any, spec: dict[str, Any]) -> list[str]:
    """What is wrong with a body: missing, unknown and invalid fields."""
    if not isinstance(body, dict):
        return ["not a JSON object"]
    wrong = [f"missing {k}" for k in spec if k not in body]
    wrong += [f"unknown {k}" for k in body if k not in spec]
    wrong += [f"invalid {k}={body[k]!r}" for k, ok in spec.items() if k in body and not ok(body[k])]
    return wrong


@dataclass
class Taken:
    kind: str
    key: str
    body: dict[str, Any]


@dataclass
class Reference:
    token: str = "tinh-token"
    down: bool = False
    taken: list[Taken] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (status, why)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def of(self, kind: str) -> list[Taken]:
        with self._lock:
            return [t for t in self.taken if t.kind == kind]

    def _answer(self, path: str, headers: Any, raw: bytes) -> tuple[int, str]:
        if self.down:
            return 503, "down"
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, "token"
        if path not in ROUTES:
            return 404, path
        kind, spec = ROUTES[path]
        key = headers.get("Idempotency-Key") or ""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        wrong = (["no Idempotency-Key"] if not key else []) + problems(body, spec)
        if wrong:
            return 400, "; ".join(wrong)
        self.taken.append(Taken(kind, key, body))
        return 200, "ok"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        ref = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with ref._lock:
                    status, why = ref._answer(self.path, self.headers, raw)
                    if status != 200:
                        ref.refused.append((status, why))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"ok": status == 200, "why": why}).encode())

            def log_message(self, *_args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> Reference:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
