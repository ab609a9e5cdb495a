"""The queue ticket: its bytes over a real pseudo-terminal, parsed back, and printer status."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable, Iterator

import pytest
from PIL import Image, ImageDraw, ImageFont

from kiosk.printer import PrinterError, PrinterStatus, SerialTicketPrinter
from kiosk.receipt import (
    FONT_BOLD_PATH,
    FONT_PATH,
    PROFILE_58,
    PROFILE_80,
    TEXT_PX,
    TITLE_PX,
    PrinterProfile,
    TicketContent,
    UnencodableTextError,
    render,
)
from tests.escpos_parse import Code2D, Command, Cut, Raster, Text, parse, qr_data

TICKET = TicketContent(
    office="UBND xã Tân Phú, huyện Đồng Phú",
    service_vi="Chứng thực, hộ tịch",
    service_en="Certification, civil status",
    number="A015",
    issued_local="23/11/2026 09:41",
    people_ahead=3,
    status_url="https://tanphu.xaso.vn/q/A015?k=7f3a9c",
)
BUDGET = 4096


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """A real pseudo-terminal: the master fd for the test, the slave path for the printer."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    yield master, path
    os.close(slave)
    os.close(master)


def read_until_idle(fd: int, idle_s: float = 0.3) -> bytes:
    chunks = []
    while select.select([fd], [], [], idle_s)[0]:
        chunks.append(os.read(fd, 65536))
    return b"".join(chunks)


def expected_line(text: str, size: int, bold: bool = False) -> Image.Image:
    """The text drawn independently of kiosk.receipt: same font, cropped to its ink."""
    face = ImageFont.truetype(FONT_BOLD_PATH if bold else FONT_PATH, size)
    canvas = Image.new("1", (1000, 200), 1)
    ImageDraw.Draw(canvas).text((100, 100), text, font=face, fill=0)
    left, top, right, bottom = face.getbbox(text)
    return canvas.crop((100 + left, 100 + top, 100 + right, 100 + bottom))


def strip_image(raster: Raster, width: int) -> Image.Image:
    """The strip cropped to its drawn width; the padding bits must print nothing."""
    image = raster.image()
    padding = image.crop((width, 0, image.width, image.height))
    assert padding.width == 0 or padding.getextrema() == (255, 255)
    return image.crop((0, 0, width, image.height))


def test_ticket_over_a_pty_parses_back(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    data = render(TICKET, PROFILE_80)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(read_until_idle(master)))
    reader.start()
    with SerialTicketPrinter(path, 115200) as printer:
        printer.send(data)
    reader.join(timeout=5)
    assert received == [data]

    items = parse(received[0])
    assert items[0] == Command("ESC @")
    rasters = [it for it in items if isinstance(it, Raster)]
    # office (bold), service, people ahead, thanks: one strip per block
    assert len(rasters) == 4
    for raster, text, size, bold in zip(
        rasters,
        [TICKET.office, TICKET.service_vi, "Số người đang chờ: 3", "Cảm ơn quý khách"],
        [TITLE_PX, TEXT_PX, TEXT_PX, TEXT_PX],
        [True, False, False, False],
        strict=True,
    ):
        assert raster.width_bytes * 8 <= PROFILE_80.dots
        want = expected_line(text, size, bold)
        got = strip_image(raster, want.width)
        assert got.size == want.size
        assert got.tobytes() == want.tobytes(), f"strip for {text!r} differs"

    # the number in the printer's font, double width and height (ESC ! 0x30) just before it
    index = items.index(Text(b"A015"))
    assert Command("ESC !", b"\x30") in items[index - 3 : index]
    assert Text(b"23/11/2026 09:41") in items
    assert Text(TICKET.service_en.encode()) in items
    assert qr_data(items) == TICKET.status_url.encode()
    assert Code2D(49, 81, b"0") in items  # print the stored QR code
    assert isinstance(items[-1], Cut)
    assert (items[-1].mode, items[-1].feed) == (66, 0)  # feed to the cutter only
    assert not any(isinstance(it, Text) and b"?" in it.data for it in items[:index])


def test_office_wraps_into_one_strip_on_58mm() -> None:
    items = parse(render(TICKET, PROFILE_58))
    office = next(it for it in items if isinstance(it, Raster))
    lines = [expected_line(t, TITLE_PX, bold=True) for t in ("UBND xã Tân Phú,", "huyện Đồng Phú")]
    assert office.height == sum(line.height for line in lines) + 4
    assert office.width_bytes * 8 <= PROFILE_58.dots


LONG = TicketContent(
    office="Ủy ban nhân dân xã Tân Phú, huyện Đồng Phú, tỉnh Đồng Nai",
    service_vi="Đăng ký khai sinh, khai tử, kết hôn",
    service_en="Birth, death and marriage registration",
    number="B123",
    issued_local="23/11/2026 09:41",
    people_ahead=27,
    status_url="https://tanphu.xaso.vn/q/B123?k=7f3a9c0d",
)


@pytest.mark.parametrize("profile", [PROFILE_58, PROFILE_80, PrinterProfile(80, 512)])
@pytest.mark.parametrize(
    ("content", "budget"),
    # The 4 KB target holds for a usual ticket; a three-line office name and a
    # two-line service cost about 5 KB, which this bound keeps from growing.
    [(TICKET, BUDGET), (LONG, 5200)],
    ids=["usual", "long-names"],
)
def test_size_budget_and_width(
    profile: PrinterProfile, content: TicketContent, budget: int
) -> None:
    data = render(content, profile)
    assert len(data) <= budget, f"{len(data)} bytes for {profile}"
    for raster in (it for it in parse(data) if isinstance(it, Raster)):
        assert raster.width_bytes * 8 <= profile.dots


def test_qr_falls_back_to_an_image() -> None:
    items = parse(render(TICKET, PrinterProfile(58, 384, native_qr=False)))
    assert not any(isinstance(it, Code2D) for it in items)
    assert len([it for it in items if isinstance(it, Raster)]) == 5


def test_codepage_refuses_what_it_cannot_print() -> None:
    profile = PrinterProfile(vietnamese="codepage", codepage="CP1258")
    with pytest.raises(UnencodableTextError, match="CP1258 cannot print"):
        render(TICKET, profile)


def test_codepage_prints_text_it_can_encode() -> None:
    ascii_office = TicketContent(**{**TICKET.__dict__, "office": "UBND xa Tan Phu"})
    profile = PrinterProfile(vietnamese="codepage", codepage="TCVN-3-1")
    items = parse(render(ascii_office, profile))  # TCVN-3 has the lower-case letters
    assert not any(isinstance(it, Raster) for it in items)
    assert Command("ESC t", b"\x1e") in items  # TCVN-3-1 is code page 30
    assert not any(isinstance(it, Text) and b"?" in it.data for it in items)


def test_profile_needs_a_codepage_for_codepage_mode() -> None:
    with pytest.raises(ValueError, match="needs a codepage"):
        PrinterProfile(vietnamese="codepage")


# --- status over a pty: the test plays the printer ---------------------------------


def play_printer(master: int, answer: Callable[[int], bytes], stop: threading.Event) -> None:
    """Answer each DLE EOT n read on the master with answer(n)."""
    pending = b""
    while not stop.is_set():
        if not select.select([master], [], [], 0.05)[0]:
            continue
        pending += os.read(master, 1024)
        while (start := pending.find(b"\x10\x04")) >= 0 and len(pending) >= start + 3:
            n = pending[start + 2]
            pending = pending[start + 3 :]
            if reply := answer(n):
                os.write(master, reply)


def status_with(pty_pair: tuple[int, str], replies: dict[int, bytes]) -> PrinterStatus:
    master, path = pty_pair
    stop = threading.Event()
    thread = threading.Thread(target=play_printer, args=(master, replies.get, stop))
    thread.start()
    try:
        with SerialTicketPrinter(path, 9600, timeout_s=0.3) as printer:
            return printer.status()
    finally:
        stop.set()
        thread.join()


OK = {1: b"\x12", 2: b"\x12", 4: b"\x12"}


@pytest.mark.parametrize(
    ("replies", "want"),
    [
        (OK, PrinterStatus(online=True, paper="ok", cover_open=False)),
        ({**OK, 4: b"\x1e"}, PrinterStatus(online=True, paper="near_end")),
        ({1: b"\x1a", 2: b"\x32", 4: b"\x7e"}, PrinterStatus(online=False, paper="out")),
        ({1: b"\x1a", 2: b"\x16", 4: b"\x12"}, PrinterStatus(online=False, cover_open=True)),
        ({}, PrinterStatus(online=False)),  # silence
        ({1: b"\x12"}, PrinterStatus(online=False)),  # answers once, then silence
    ],
    ids=["online", "near-end", "paper-out", "cover-open", "silence", "short"],
)
def test_status_over_a_pty(
    pty_pair: tuple[int, str], replies: dict[int, bytes], want: PrinterStatus
) -> None:
    assert status_with(pty_pair, replies) == want


@pytest.mark.parametrize("garbage", [b"\xff", b"\x00", b"\x13", b"A"])
def test_status_garbage_is_a_clear_error(pty_pair: tuple[int, str], garbage: bytes) -> None:
    with pytest.raises(PrinterError, match="not a status reply"):
        status_with(pty_pair, {**OK, 2: garbage})


def test_unopenable_port_is_a_clear_error() -> None:
    with pytest.raises(PrinterError, match="cannot open printer port"):
        SerialTicketPrinter("/dev/does-not-exist-xaso")


def test_loop_url_and_wire_time() -> None:
    with SerialTicketPrinter("loop://", 9600, flow_control="xonxoff") as printer:
        printer.send(b"\x1b@")
        assert printer.wire_seconds(4096) == pytest.approx(4.2667, abs=1e-3)
