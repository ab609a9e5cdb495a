"""The cached ticket render prints the same bytes as drawing every part from scratch.

The static parts (header, priority line, footer) are drawn once per office, service and
printer profile; what python-escpos's code page state was before a part is in the key, so
tickets rendered in any order, on any profile, must match an uncached render byte for byte.
"""

from __future__ import annotations

import itertools
import random

import pytest

from kiosk import receipt
from kiosk.receipt import PROFILE_58, PROFILE_80, PrinterProfile, TicketContent, render
from tests.escpos_parse import Raster, Text, parse

PROFILES = [
    PROFILE_58,
    PROFILE_80,
    PrinterProfile(58, 384, native_qr=False),  # the QR code as an image
    PrinterProfile(vietnamese="codepage", codepage="CP1258"),
    PrinterProfile(58, 384, vietnamese="codepage", codepage="TCVN-3-1"),  # no "Đ": raster
]
OFFICES = [
    "UBND xã Tân Phú, huyện Đồng Phú",
    "UBND xa Tan Phu",  # ASCII: the printer's own font in both modes
    "Ủy ban nhân dân xã Đông Hòa, thị xã Dĩ An, tỉnh Bình Dương",  # wraps on 58 mm
]
SERVICES = [
    ("Hộ tịch", "Civil status"),
    ("Chứng thực, hộ tịch", "Certification, civil status"),
    ("Dat dai", "Land"),
]


def ticket(office: str, service: tuple[str, str], n: int, priority: bool) -> TicketContent:
    return TicketContent(
        office=office,
        service_vi=service[0],
        service_en=service[1],
        number=f"{'AB'[n % 2]}{n:03d}",
        issued_local=f"02/12/2026 {8 + n % 9:02d}:{n % 60:02d}",
        people_ahead=n % 13,
        status_url=f"http://192.168.1.20:8080/ve/{n:032x}",
        priority=priority,
        wait_min=None if n % 3 == 0 else n % 40 + 1,
    )


ALL = [
    (profile, ticket(office, service, n, priority))
    for n, (profile, office, service, priority) in enumerate(
        itertools.product(PROFILES, OFFICES, SERVICES, (False, True))
    )
]


def test_cached_bytes_equal_a_render_from_scratch_in_any_order() -> None:
    receipt._part_bytes.cache_clear()
    cases = ALL * 2  # the second time round every static part comes from the cache
    random.Random(16).shuffle(cases)
    for profile, content in cases:
        assert render(content, profile) == render(content, profile, cached=False), (
            profile,
            content,
        )
    info = receipt._part_bytes.cache_info()
    assert info.hits > info.misses  # the cache is used, not redrawn every time


def test_a_cached_ticket_still_carries_its_own_number_time_wait_and_qr() -> None:
    profile = PROFILE_80
    first = ticket(OFFICES[0], SERVICES[0], 7, False)
    second = ticket(OFFICES[0], SERVICES[0], 8, False)
    render(first, profile)  # warms the cache for this office and service
    items = parse(render(second, profile))
    assert Text(second.number.encode()) in items
    assert Text(second.issued_local.encode()) in items
    assert Text(first.number.encode()) not in items
    rasters = [it for it in items if isinstance(it, Raster)]
    assert len(rasters) == 5  # office, service, label, the wait, thanks


def test_another_office_or_service_is_not_served_the_old_header() -> None:
    profile = PrinterProfile(vietnamese="codepage", codepage="CP1258")
    a = ticket("UBND xã Tân Phú", ("Hộ tịch", "Civil status"), 1, False)
    b = ticket("UBND xã Đông Hòa", ("Đất đai", "Land"), 2, False)
    render(a, profile)
    items = parse(render(b, profile))
    texts = b"".join(it.data for it in items if isinstance(it, Text))
    assert receipt.codepage_form(b.office, "CP1258").encode("cp1258") in texts
    assert receipt.codepage_form(a.office, "CP1258").encode("cp1258") not in texts
    assert b"Land" in texts and b"Civil status" not in texts
    assert render(b, profile) == render(b, profile, cached=False)


@pytest.mark.parametrize("cached", [True, False])
def test_a_word_too_wide_is_refused_and_the_next_ticket_prints(cached: bool) -> None:
    bad = ticket("Ủy" + "ê" * 80, SERVICES[0], 3, False)  # one word wider than 384 dots
    with pytest.raises(ValueError, match="word too wide"):
        render(bad, PROFILE_58, cached=cached)
    good = ticket(OFFICES[0], SERVICES[0], 4, False)
    assert render(good, PROFILE_58, cached=cached) == render(good, PROFILE_58, cached=False)
