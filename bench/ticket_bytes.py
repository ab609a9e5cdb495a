"""Bytes per thermal ticket and their time on the serial line.

Target: at most 4 KB for a ticket (0.5 s at 115200 baud, 5 s at 9600).
The baseline in the same run is the same ticket with its QR code drawn as an
image, the fallback for printers without a native QR command; the last rows
are the code-page mode (CP1258 text, no raster strips).
"""

from __future__ import annotations

import dataclasses
import sys
import time

from kiosk.receipt import PROFILE_58, PROFILE_80, PrinterProfile, TicketContent, render

TARGET_BYTES = 4096
USUAL = TicketContent(
    office="UBND xã Tân Phú, huyện Đồng Phú",
    service_vi="Chứng thực, hộ tịch",
    service_en="Certification, civil status",
    number="A015",
    issued_local="23/11/2026 09:41",
    people_ahead=3,
    status_url="http://192.168.1.10:8080/ve/2026-11-23/A015",
)
LONG = dataclasses.replace(
    USUAL,
    office="Trung tâm Phục vụ hành chính công, Ủy ban nhân dân xã Tân Phú, huyện Đồng Phú, "
    "tỉnh Đồng Nai",
    service_vi="Lao động - Thương binh và Xã hội, người có công với cách mạng",
)


def wire_s(n: int, baud: int) -> float:
    return n * 10 / baud  # 8N1: ten bits a byte


def row(name: str, content: TicketContent, prof: PrinterProfile) -> None:
    start = time.perf_counter()
    data = render(content, prof)
    ms = (time.perf_counter() - start) * 1000
    verdict = "PASS" if len(data) <= TARGET_BYTES else "MISS"
    print(
        f"{name:<10}{prof.paper_mm:>2} mm    {'native' if prof.native_qr else 'image':<7}"
        f"{len(data):>7}{wire_s(len(data), 9600):>8.2f}"
        f"{wire_s(len(data), 115200) * 1000:>11.0f}{ms:>11.1f}  {verdict}"
    )


def main() -> int:
    print(
        f"{'ticket':<10}{'profile':<9}{'QR':<7}{'bytes':>7}{'9600 s':>8}{'115200 ms':>11}"
        f"{'render ms':>11}  target"
    )
    for name, content in (("usual", USUAL), ("long", LONG)):
        for profile in (PROFILE_58, PROFILE_80):
            for native in (True, False):
                row(name, content, dataclasses.replace(profile, native_qr=native))
    # the code-page mode: Vietnamese as CP1258 text in the printer's font, no strips
    for name, content in (("usual", USUAL), ("long", LONG)):
        for profile in (PROFILE_58, PROFILE_80):
            cp = dataclasses.replace(profile, vietnamese="codepage", codepage="CP1258")
            row(f"cp-{name}", content, cp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
