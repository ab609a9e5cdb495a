"""Phát trực tiếp: the live page and its WebSocket (controller/radio/live_voice.py).

The socket is checked as a form post is: the session cookie, the broadcast
permission, the page's CSRF token (in the first message) and the Origin
header (a WebSocket is not bound by the same-origin policy). Then binary
messages are the microphone's WebM chunks; the text ``stop`` ends the
session, and so does a closed socket. Start and end are audited.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from controller import i18n
from controller.auth.accounts import session_principal
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal
from controller.auth.security import same
from controller.deps import LANG_COOKIE, SESSION_COOKIE, AppState, StationDep
from controller.radio.live_voice import LEAD_MS, LiveSession
from controller.radio.station import Station
from controller.web.routes import local_time, render
from controller.web.routes.broadcasts import Broadcaster, form_targets, precheck
from controller.web.routes.targets import target_choices

router = APIRouter(tags=["live"])
MAX_CHUNK_BYTES = 256 * 1024  # MediaRecorder sends a few kB every 100 ms
POLL_S = 0.5  # how often a quiet socket looks whether its session has ended
LIVE_LEVELS = ("normal", "priority", "emergency")

i18n.register(
    {
        "nav.live_voice": ("Phát trực tiếp", "Live"),
        "lv.title": ("Phát trực tiếp", "Speak live"),
        "lv.intro": (
            "Chọn nơi phát và mức, bấm «Nói», chờ loa bật rồi nói vào micrô. Bấm «Dừng» khi "
            "xong. Buổi phát được ghi lại vào thư viện.",
            "Choose where and the level, press Talk, wait for the speakers, then speak. Press "
            "Stop when done. The session is recorded in the library.",
        ),
        "lv.talk": ("Nói", "Talk"),
        "lv.stop": ("Dừng", "Stop"),
        "lv.meter": ("Mức âm thanh micrô", "Microphone level"),
        "lv.idle": ("Chưa phát.", "Not on air."),
        "lv.connecting": ("Đang bật loa, xin chờ…", "Switching the speakers on, please wait…"),
        "lv.on_air": ("Đang phát trực tiếp, hãy nói.", "On air: speak now."),
        "lv.ended": ("Đã dừng phát.", "The broadcast has ended."),
        "lv.no_mic": (
            "Không dùng được micrô: hãy cho phép trình duyệt dùng micrô rồi thử lại.",
            "The microphone cannot be used: allow the browser to use it and try again.",
        ),
        "lv.lost": (
            "Mất kết nối tới máy chủ: buổi phát đã dừng. Kiểm tra mạng rồi bấm «Nói» lại.",
            "The connection to the server was lost: the broadcast stopped. Check the network "
            "and press Talk again.",
        ),
        "lv.no_server": (
            "Chưa cài máy chủ phát luồng: báo kỹ thuật viên cấu hình mục [stream].",
            "No stream server is set up: ask the technician to configure [stream].",
        ),
        "lv.bad_start": (
            "Yêu cầu phát không hợp lệ: tải lại trang rồi thử lại.",
            "The request is not valid: reload the page and try again.",
        ),
        "lv.bad_level": ("Chọn một mức phát.", "Choose a level."),
        "lv.too_big": ("Dữ liệu âm thanh quá lớn.", "Too much audio at once."),
    }
)


@router.get("/live-voice", response_class=HTMLResponse, include_in_schema=False)
def live_page(request: Request, station: StationDep, who: Broadcaster) -> Response:
    return render(
        request,
        "live_voice.html",
        connected=station.connected,
        configured=request.app.state.xaso.streams is not None,
        choices=target_choices(station, request, "/live-voice", commune=who.commune),
        levels=LIVE_LEVELS,
        lead_ms=LEAD_MS,
    )


def _lang(ws: WebSocket) -> i18n.Lang:
    value = ws.query_params.get("lang") or ws.cookies.get(LANG_COOKIE) or i18n.DEFAULT
    return "en" if value == "en" else "vi"


def _same_origin(ws: WebSocket) -> bool:
    origin = ws.headers.get("origin", "")
    return bool(origin) and urlsplit(origin).netloc == ws.headers.get("host", "")


def _principal(state: AppState, ws: WebSocket) -> Principal | None:
    cookie = ws.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    ip = ws.client.host if ws.client else ""
    with state.sessions() as db:
        return session_principal(db, state.auth, cookie, ip, state.now_ms())


async def _refuse(ws: WebSocket, lang: i18n.Lang, key: str, code: int = 1008) -> None:
    await ws.send_json({"state": "error", "message": i18n.t(lang, key)})
    await ws.close(code)


def _audit(state: AppState, who: Principal, action: str, session: LiveSession) -> None:
    target = ",".join(f"{t.kind}:{t.id}" for t in session.targets)
    details: dict[str, Any] = {"level": session.level, "label": session.label}
    if session.started is not None:
        details |= {"broadcast": session.started.id, "mount": session.mount}
        details |= {"devices": [a.device for a in session.started.acks]}
    if action.endswith("end"):
        details |= {"ended_by": session.ended_by, "clip": session.clip and session.clip.sha256}
        details |= {"stop": session.stopped and session.stopped.id}
    with state.sessions() as db:
        audit(db, who, action, target, details)
        db.commit()


def _begin(state: AppState, station: Station, who: Principal, first: Any) -> LiveSession:
    """A checked start message into a running session (raises a Refusal)."""
    if not isinstance(first, dict) or not same(str(first.get("csrf_token", "")), who.csrf_token):
        raise i18n.Refusal(403, "lv.bad_start")
    values = first.get("targets")
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise i18n.Refusal(422, "bc.no_target")
    targets = form_targets(values[:64])
    level = first.get("level")
    if level not in LIVE_LEVELS:
        raise i18n.Refusal(422, "lv.bad_level")
    precheck(station, targets, commune=who.commune)
    assert state.streams is not None
    session = LiveSession(
        station.broadcasting,
        station.library,
        state.streams,
        targets,
        level,
        who.name,
        Path(state.settings.clips_dir) / ".live",
        label=f"Phát trực tiếp {local_time(state.now_ms())}",
        commune=who.commune,
    )
    session.start()
    return session


async def _open(ws: WebSocket, state: AppState, lang: i18n.Lang) -> LiveSession | None:
    """The checks a form post gets, then the start message: a running session, or None."""
    who = await run_in_threadpool(_principal, state, ws)
    await ws.accept()
    if not _same_origin(ws) or who is None:
        await _refuse(ws, lang, "error.not_signed_in")
        return None
    if not who.can(Permission.BROADCAST):
        await _refuse(ws, lang, "error.forbidden")
        return None
    if state.streams is None or state.station is None:
        await _refuse(ws, lang, "lv.no_server", 1011)
        return None
    try:
        first = json.loads(await ws.receive_text())
        session = await run_in_threadpool(_begin, state, state.station, who, first)
    except (ValueError, KeyError, WebSocketDisconnect):
        await _refuse(ws, lang, "lv.bad_start")
        return None
    except i18n.Refusal as refusal:
        await ws.send_json({"state": "error", "message": refusal.text(lang)})
        await ws.close(1008)
        return None
    session.principal = who
    await ws.send_json({"state": "open"})  # the browser starts its recorder
    return session


async def _go_on_air(ws: WebSocket, state: AppState, session: LiveSession) -> None:
    """The first audio has come: the speakers are told, and the broadcaster."""
    info = await run_in_threadpool(session.announce)
    await run_in_threadpool(_audit, state, session.principal, "broadcast.live", session)
    await ws.send_json({"state": "on_air", "lead_ms": LEAD_MS, "devices": len(info.acks)})


async def _pump(ws: WebSocket, state: AppState, session: LiveSession) -> str:
    """Microphone chunks into the session until stop, a closed socket or silence: why."""
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), POLL_S)
        except TimeoutError:
            if session.ended_by:  # the browser went quiet: the session ended itself
                return session.ended_by
            continue
        if message["type"] == "websocket.disconnect":
            return "disconnected"
        data = message.get("bytes")
        if data is not None:
            if len(data) > MAX_CHUNK_BYTES:
                return "too_big"
            await run_in_threadpool(session.feed, data)
            if session.started is None:
                await _go_on_air(ws, state, session)
        elif message.get("text") == "stop":
            return "stopped"


@router.websocket("/ws/live-voice")
async def live_socket(ws: WebSocket) -> None:
    state: AppState = ws.app.state.xaso
    lang = _lang(ws)
    session = await _open(ws, state, lang)
    if session is None:
        return
    why = "disconnected"
    try:
        why = await _pump(ws, state, session)
    except WebSocketDisconnect:
        pass
    finally:
        await run_in_threadpool(session.end, why)
        if session.started is not None:
            await run_in_threadpool(_audit, state, session.principal, "broadcast.live_end", session)
    if why != "disconnected":
        try:
            await ws.send_json({"state": "ended", "clip": session.clip and session.clip.title})
            await ws.close()
        except (WebSocketDisconnect, RuntimeError):
            pass
