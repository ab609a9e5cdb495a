"""`GET /live`: server-sent events for the open pages (controller/web/static/live.js).

Each page subscribes to the process's one feed (controller/fleet/live.py),
names the devices it shows, and gets every change as an event whose data is
JSON, already worded in the page's language:

- `counts`: the dashboard's tiles (online, offline, unknown, alerting);
- `device`: one device's state and open alerts;
- `onair`: what one speaker plays now, with its level (`on: false` once it ends);
- `command`: a broadcast's or a console command's status and each speaker's ack.

A stream ends after `STREAM_S`; the browser reconnects by itself, signed in
again (a user signed out or deactivated meanwhile gets no more), and is sent
the whole current state on joining, so nothing is missed in between.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from controller import i18n
from controller.auth.roles import Permission, Principal
from controller.deps import DbSession, app_state, require
from controller.fleet.live import CommandLive, DeviceLive
from controller.fleet.live_rules import OnAir
from controller.web.paging import listed_acks
from controller.web.routes import lang_of, local_time
from controller.web.routes.console import ack_text
from protocol.topics import ID_PATTERN

router = APIRouter()
Viewer = Annotated[Principal, Depends(require(Permission.VIEW_FLEET))]
STREAM_S = 300.0
HEARTBEAT_S = 10.0
RETRY_MS = 2000
MAX_DEVICES = 500

i18n.register(
    {
        "live.on_air": ("Đang phát", "On air now"),
        "live.nothing": ("Không cụm loa nào đang phát.", "No speaker is playing."),
        "live.since": ("từ {when}", "since {when}"),
        "live.untitled": ("(không tiêu đề)", "(untitled)"),
    }
)


def _shown(devices: Annotated[str, Query(max_length=MAX_DEVICES * 49)] = "") -> frozenset[str]:
    ids = frozenset(d for d in devices.split(",") if d)
    if len(ids) > MAX_DEVICES or any(not re.fullmatch(ID_PATTERN, d) for d in ids):
        raise i18n.Refusal(422, "error.invalid", problems="devices")
    return ids


@router.get("/live", include_in_schema=False)
async def live(
    request: Request,
    db: DbSession,
    who: Viewer,
    devices: Annotated[frozenset[str], Depends(_shown)],
    all_devices: Annotated[bool, Query(alias="all")] = False,
) -> StreamingResponse:
    db.close()  # signed in: give its connection back, or each open page would hold one
    feed = app_state(request).live
    assert feed is not None  # create_app builds it
    lang = lang_of(request)
    sub = feed.subscribe(asyncio.get_running_loop(), None if all_devices else devices)

    async def stream() -> AsyncIterator[str]:
        try:
            yield f"retry: {RETRY_MS}\n\n"
            ends = time.monotonic() + STREAM_S
            while not sub.closed and time.monotonic() < ends:
                try:
                    await asyncio.wait_for(sub.ready.wait(), HEARTBEAT_S)
                except TimeoutError:
                    yield ": still here\n\n"  # finds a page that went away
                    continue
                for (topic, key), value in sorted(sub.take().items()):
                    data = json.dumps(_worded(topic, key, value, lang), ensure_ascii=False)
                    yield f"event: {topic}\ndata: {data}\n\n"
        finally:
            feed.unsubscribe(sub)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _worded(topic: str, key: str, value: Any, lang: i18n.Lang) -> dict[str, Any]:
    """An item as the page shows it, in ``lang``; None means it is gone."""
    if topic == "counts":
        return dict(value or {})
    return _WORDING[topic](key, value, lang)


def _device(key: str, d: DeviceLive | None, lang: i18n.Lang) -> dict[str, Any]:
    if d is None:
        return {"id": key, "gone": True}
    return {
        "id": key,
        "state": d.state,
        "state_text": i18n.t(lang, f"fleet.{d.state}"),
        "alerts": [{"kind": k, "text": i18n.t(lang, f"alert.{k}")} for k in d.alerts],
    }


def _on_air(key: str, a: OnAir | None, lang: i18n.Lang) -> dict[str, Any]:
    if a is None:
        return {"device": key, "on": False}
    return {
        "device": key,
        "on": True,
        "label": a.label or i18n.t(lang, "live.untitled"),
        "level": a.level,
        "level_text": i18n.t(lang, f"level.{a.level}"),
        "since_text": i18n.t(lang, "live.since", when=local_time(a.since_ms)[11:]),
    }


def _command(key: str, c: CommandLive | None, lang: i18n.Lang) -> dict[str, Any]:
    if c is None:
        return {"id": key, "gone": True}
    shown, more = listed_acks(c.acks)
    ok = sum(1 for a in c.acks if a.ok)
    return {
        "id": key,
        "status": c.status,
        "status_text": i18n.t(lang, f"status.{c.status}"),
        "acks": [
            {
                "device": a.device,
                "state": "wait" if a.ok is None else ("yes" if a.ok else "no"),
                "text": ack_text(lang, a.ok, a.error),
            }
            for a in shown
        ],
        "more_text": (
            i18n.t(lang, "page.acks_more", ok=ok, total=len(c.acks), more=more) if more else ""
        ),
    }


_WORDING: dict[str, Callable[[str, Any, i18n.Lang], dict[str, Any]]] = {
    "device": _device,
    "onair": _on_air,
    "command": _command,
}
