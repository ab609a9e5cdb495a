"""The demo's fleet page: every device, online or not, in Vietnamese and English.

A preview of the controller's dashboard; `?lang=en` switches the language.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from controller.fleet_view import FleetView

TEXT = {
    "vi": {
        "title": "Xã số: thiết bị",
        "device": "Thiết bị",
        "state": "Trạng thái",
        "online": "Trực tuyến",
        "offline": "Mất kết nối",
        "unknown": "Chưa rõ",
        "temp": "Nhiệt độ (°C)",
        "disk": "Đĩa trống (MB)",
        "outbox": "Hàng đợi gửi",
        "events": "Sự kiện",
        "other": "English",
    },
    "en": {
        "title": "Xaso: devices",
        "device": "Device",
        "state": "State",
        "online": "Online",
        "offline": "Offline",
        "unknown": "Unknown",
        "temp": "Temperature (°C)",
        "disk": "Free disk (MB)",
        "outbox": "Outbox",
        "events": "Events",
        "other": "Tiếng Việt",
    },
}


def create_app(view: FleetView) -> FastAPI:
    app = FastAPI(title="Xaso demo", version="0.1")

    @app.get("/api/devices")
    def devices() -> list[dict[str, Any]]:
        return view.snapshot()

    @app.get("/", response_class=HTMLResponse)
    def page(lang: str = "vi") -> str:
        lang = lang if lang in TEXT else "vi"
        t = TEXT[lang]
        other = "en" if lang == "vi" else "vi"
        rows = "".join(
            "<tr>"
            f"<td>{html.escape(d['id'])}</td>"
            f"<td class='{d['state']}'>{t.get(d['state'], d['state'])}</td>"
            f"<td>{_num(d['cpu_temp_c'])}</td><td>{_num(d['disk_free_mb'])}</td>"
            f"<td>{_num(d['outbox_len'])}</td><td>{d['events']}</td></tr>"
            for d in view.snapshot()
        )
        return (
            f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'>"
            f"<meta http-equiv='refresh' content='5'><title>{t['title']}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:.4em 1em;text-align:left}"
            ".online{color:#070}.offline{color:#b00}</style></head><body>"
            f"<h1>{t['title']}</h1><p><a href='/?lang={other}'>{t['other']}</a></p>"
            f"<table><tr><th>{t['device']}</th><th>{t['state']}</th><th>{t['temp']}</th>"
            f"<th>{t['disk']}</th><th>{t['outbox']}</th><th>{t['events']}</th></tr>{rows}</table>"
            "</body></html>"
        )

    return app


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
