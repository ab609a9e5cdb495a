"""The booking tests' controller: one office (kiosk-1) taking bookings, on a hand-moved clock."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import FastAPI

from controller.app import create_app
from controller.settings import load_settings
from tests.auth_helpers import Clock

HN = ZoneInfo("Asia/Ho_Chi_Minh")
MONDAY_9_S = datetime(2026, 11, 23, 9, tzinfo=HN).timestamp()  # as tests/conftest.py KioskClock

OFFICE = """
[booking]
attempts_per_ip = {attempts}
status_views_per_ip_per_min = {views}

[[booking.offices]]
kiosk = "kiosk-1"
name = "Bộ phận một cửa UBND xã Tân Lập"
slot_min = 15
capacity = 2

[[booking.offices.services]]
code = "ho-tich"
name_vi = "Hộ tịch"
name_en = "Civil status"

[[booking.offices.services]]
code = "dat-dai"
name_vi = "Đất đai"
name_en = "Land"
weekdays = [0, 2, 4]
"""


def booking_app(
    tmp: Path,
    database_url: str,
    *,
    site_dir: Path | None = None,
    mqtt_port: int = 1,
    attempts: int = 1000,
    views: int = 1000,
    clock: Clock | None = None,
) -> FastAPI:
    """The controller with the office above; no broker unless ``mqtt_port`` has one."""
    if clock is None:
        clock = Clock()
        clock.now = MONDAY_9_S
    config = tmp / "controller.toml"
    config.write_text(
        "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
        f'[site]\ndir = "{site_dir or tmp / "site"}"\n'
        f'[database]\nurl = "{database_url}"\n[mqtt]\nport = {mqtt_port}\n'
        "[documents]\ncheck_every_s = 0.5\n" + OFFICE.format(attempts=attempts, views=views),
        encoding="utf-8",
    )
    return create_app(load_settings(config), clock=clock)
