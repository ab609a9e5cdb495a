"""A reference source-information server on loopback, for the upward adapter's tests.

It checks every field of every body against what vendors' receivers send
(controller/fleet/upward_fields.py, docs/upward.md), the Bearer token, and
the Idempotency-Key; answers 400 naming the field that is wrong, 401 to a
wrong token, 503 while ``down`` is set (an outage); and keeps what it took.

Downward, it lists ``bulletins`` (items as the province sends them) to a GET
whose every parameter it checks, in order of ThoiDiemTao from TuThoiDiem on,
for the communes asked (``every_commune``: for all), and serves ``files``
under /tep/ with the token; a path in ``hung`` answers nothing until the test
ends, one in ``failing`` its status. It counts what was asked (``asked``, ``fetched``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
LIST = "/api/BanTin/DanhSach"
QUERY: dict[str, Any] = {
    "MaXa": lambda v: all(c and len(c) <= 48 for c in v.split(",")),
    "TuThoiDiem": _time,
    "SoLuong": lambda v: v.isdigit() and 1 <= int(v) <= 1000,
}


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
    bulletins: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)  # name: content, at /tep/<name>
    hung: set[str] = field(default_factory=set)  # paths that never answer
    failing: dict[str, int] = field(default_factory=dict)  # path: its status
    asked: list[dict[str, str]] = field(default_factory=list)  # each list query
    fetched: list[str] = field(default_factory=list)  # each file asked for
    every_commune: bool = False  # list every commune's, not only those asked for

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._ending = threading.Event()

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

    def _get(self, target: str, headers: Any) -> tuple[int, bytes]:
        url = urlsplit(target)
        if self.down:
            return 503, b"down"
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, b"token"
        if url.path in self.failing:
            return self.failing[url.path], b"failing"
        if url.path.startswith("/tep/"):
            self.fetched.append(url.path)
            found = self.files.get(url.path.removeprefix("/tep/"))
            return (200, found) if found is not None else (404, b"no such file")
        if url.path != LIST:
            return 404, url.path.encode()
        return self._list({k: v[-1] for k, v in parse_qs(url.query).items()})

    def _list(self, query: dict[str, str]) -> tuple[int, bytes]:
        wrong = [f"missing {k}" for k in QUERY if k not in query]
        wrong += [f"unknown {k}" for k in query if k not in QUERY]
        wrong += [f"invalid {k}={query[k]!r}" for k, ok in QUERY.items() if k in query
                  and not ok(query[k])]  # fmt: skip
        if wrong:
            return 400, "; ".join(wrong).encode()
        self.asked.append(query)
        since = dt.datetime.fromisoformat(query["TuThoiDiem"])
        codes = set(query["MaXa"].split(","))
        listed = [
            b
            for b in self.bulletins
            if (self.every_commune or b.get("MaXa") in codes) and _at(b, since) >= since
        ]
        listed.sort(key=lambda b: _at(b, since))
        return 200, json.dumps(listed[: int(query["SoLuong"])], ensure_ascii=False).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        ref = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path in ref.hung:
                    ref._ending.wait(60)  # a server that took the request and went quiet
                    return
                with ref._lock:
                    status, content = ref._get(self.path, self.headers)
                    if status != 200:
                        ref.refused.append((status, content.decode(errors="replace")))
                self.send_response(status)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

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
        self._ending.set()
        self._server.shutdown()
        self._server.server_close()


def _at(bulletin: dict[str, Any], since: dt.datetime) -> dt.datetime:
    """An item's ThoiDiemTao; one without a readable time is listed first, always."""
    try:
        return dt.datetime.fromisoformat(bulletin["ThoiDiemTao"])
    except (KeyError, TypeError, ValueError):
        return since
