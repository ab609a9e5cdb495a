"""The other door's kiosk for bench/button_to_serial_shared.py, in its own process.

``python -m bench._office_peer <site dir> <work dir> <port>``: kiosk-b's shared
queue on the broker; each line "issue" on stdin issues one ticket there and
answers "ok" once it is on disk and sent; end of input closes it.
"""

from __future__ import annotations

import sys
import time
import tomllib
from pathlib import Path

from bench.button_to_serial import ALL_DAY
from kiosk.numbering import Service
from kiosk.shared_queue import SharedQueue
from plumbing.validation import convert
from protocol.topics import Topics

SERVICE = convert(
    {"code": "ho-tich", "name_vi": "Hộ tịch", "name_en": "Civil status", "prefix": "A"} | ALL_DAY,
    Service,
    strict=False,
)


def main(site_dir: str, work: str, port: str) -> int:
    mqtt = tomllib.loads((Path(site_dir) / "devices" / "kiosk-b.toml").read_text())["mqtt"]
    shared = SharedQueue(Path(work) / "office.sqlite", queue="bench", kiosk="kiosk-b",
                         kiosks=["kiosk-a", "kiosk-b"], topics=Topics())  # fmt: skip
    shared.connect("127.0.0.1", int(port), mqtt["username"], mqtt["password"])
    if not shared.wait_link(up=True, timeout_s=30):
        return 1
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "issue":
            shared.issue(SERVICE, time.time_ns() // 1_000_000)
            print("ok", flush=True)
    shared.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
