"""The queue ticket: its bytes over a real pseudo-terminal, parsed back, and printer status."""

from __future__ import annotations

import os
import select
import threading
import unicodedata
from collections.abc import Callable, Iterator

import pytest
from PIL import Image, ImageDraw, ImageFont

from kiosk.printer import (
    GarbledReply,
    PrinterError,
    PrinterStatus,
    SerialTicketPrinter,
    resolve_port,
)
from kiosk.receipt import (
    FONT_BOLD_PATH,
    FONT_PATH,
    PROFILE_58,
    PROFILE_80,
    TEXT_PX,
    TITLE_PX,
    PrinterProfile,
    TicketContent,
    codepage_form,
    render,
    wrap_columns,
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


def has_strip(rasters: list[Raster], text: str, size: int = TEXT_PX, bold: bool = False) -> bool:
    """Whether one of the strips is exactly this one line of text."""
    want = expected_line(text, size, bold)
    return any(
        (r.width_bytes, r.height) == ((want.width + 7) // 8, want.height)
        and strip_image(r, want.width).tobytes() == want.tobytes()
        for r in rasters
    )


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
    # office (bold), service, the number's label, people ahead, thanks: one strip per block
    assert len(rasters) == 5
    for raster, text, size, bold in zip(
        rasters,
        [TICKET.office, TICKET.service_vi, "Số thứ tự", "Số người đang chờ: 3", "Cảm ơn quý khách"],
        [TITLE_PX, TEXT_PX, TEXT_PX, TEXT_PX, TEXT_PX],
        [True, False, False, False, False],
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
    # two-line service cost about 5 KB (5.3 KB with the number's label, ~250
    # bytes), which this bound keeps from growing.
    [(TICKET, BUDGET), (LONG, 5400)],
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
    assert len([it for it in items if isinstance(it, Raster)]) == 6


def test_priority_mark_and_wait_estimate() -> None:
    content = TicketContent(**{**TICKET.__dict__, "priority": True, "wait_min": 12})
    rasters = [it for it in parse(render(content, PROFILE_80)) if isinstance(it, Raster)]
    assert has_strip(rasters, "Ưu tiên / Priority", bold=True)
    assert has_strip(rasters, "Số người đang chờ: 3, chờ khoảng 12 phút")
    plain = [it for it in parse(render(TICKET, PROFILE_80)) if isinstance(it, Raster)]
    assert not has_strip(plain, "Ưu tiên / Priority", bold=True)


def text_lines(items: list) -> list[bytes]:
    """The printer-font lines: text runs up to each line feed."""
    lines, line = [], b""
    for it in items:
        if isinstance(it, Text):
            line += it.data
        elif it == Command("LF"):
            lines.append(line)
            line = b""
    return lines


def test_cp1258_prints_every_vietnamese_letter_as_text() -> None:
    """Đ included ("Đất đai"), tones as combining marks: no strip, no `?`."""
    content = TicketContent(**{**TICKET.__dict__, "service_vi": "Đất đai", "office": LONG.office})
    items = parse(render(content, PrinterProfile(vietnamese="codepage", codepage="CP1258")))
    assert not any(isinstance(it, Raster) for it in items)
    assert Command("ESC t", bytes([52])) in items  # WPC1258 is code page 52 (Epson)
    printed = [unicodedata.normalize("NFC", line.decode("cp1258")) for line in text_lines(items)]
    assert "Đất đai" in printed
    assert "Số thứ tự" in printed
    assert "Cảm ơn quý khách" in printed
    assert all("?" not in line for line in printed[:-1])  # the QR's URL may hold one
    assert " ".join(printed[:2]) == LONG.office  # wrapped at a space, 48 columns at most
    assert len(unicodedata.normalize("NFC", printed[0])) <= 48


def test_codepage_form_round_trips() -> None:
    for text in ("Đất đai", "Ủy ban nhân dân", "ậu ặc ượng", "Hộ tịch"):
        spelled = codepage_form(text, "CP1258")
        assert all(
            not unicodedata.combining(c) or c in "\u0300\u0301\u0303\u0309\u0323" for c in spelled
        )
        assert unicodedata.normalize("NFC", spelled.encode("cp1258").decode("cp1258")) == text


def test_codepage_without_a_letter_draws_that_block_instead() -> None:
    """TCVN-3-1 has no capital Đ: "Đất đai" becomes a strip, the rest stays text."""
    content = TicketContent(
        **{**TICKET.__dict__, "service_vi": "Đất đai", "office": "UBND xa Tan Phu"}
    )
    items = parse(render(content, PrinterProfile(vietnamese="codepage", codepage="TCVN-3-1")))
    assert has_strip([it for it in items if isinstance(it, Raster)], "Đất đai")
    assert not any(
        isinstance(it, Text) and b"?" in it.data for it in items[: items.index(Text(b"A015"))]
    )


def test_english_names_wrap_at_word_boundaries() -> None:
    items = parse(render(LONG, PROFILE_58))  # 32 columns of font A
    lines = text_lines(items)
    assert b"Birth, death and marriage" in lines
    assert b"registration" in lines
    assert all(len(line) <= 32 for line in lines if line.isascii())
    assert wrap_columns("Supercalifragilistic", 8) == ["Supercal", "ifragili", "stic"]


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
        (OK, PrinterStatus(online=True, paper="ok", cover="closed")),
        ({**OK, 4: b"\x1e"}, PrinterStatus(online=True, paper="near_end", cover="closed")),
        (
            {1: b"\x1a", 2: b"\x32", 4: b"\x7e"},
            PrinterStatus(online=False, paper="out", cover="closed"),
        ),
        (
            {1: b"\x1a", 2: b"\x16", 4: b"\x12"},
            PrinterStatus(online=False, paper="ok", cover="open"),
        ),
        ({}, PrinterStatus(online=False, fault="silent")),  # silence
        ({1: b"\x12"}, PrinterStatus(online=False, fault="silent")),  # answers once, then silence
    ],
    ids=["online", "near-end", "paper-out", "cover-open", "silence", "short"],
)
def test_status_over_a_pty(
    pty_pair: tuple[int, str], replies: dict[int, bytes], want: PrinterStatus
) -> None:
    got = status_with(pty_pair, replies)
    assert got == want
    if got.fault is not None:  # never "paper ok" from a printer that did not answer
        assert (got.paper, got.cover, got.state, got.can_print) == (
            "unknown",
            "unknown",
            "offline",
            False,
        )


def test_cover_open_comes_before_the_paper_reading() -> None:
    """Many sensors read "out" with the cover open: the screen must say "cover open"."""
    status = PrinterStatus(online=False, paper="out", cover="open")
    assert (status.state, status.can_print) == ("cover_open", False)


@pytest.mark.parametrize(
    "replies",
    [
        {**OK, 2: b"\x12\x12"},  # two bytes for one request
        {**OK, 4: b"\x7e\x00"},  # "paper out" with noise after it
    ],
    ids=["extra-byte", "paper-out-and-noise"],
)
def test_status_with_unasked_bytes_is_garbled(
    pty_pair: tuple[int, str], replies: dict[int, bytes]
) -> None:
    with pytest.raises(GarbledReply):
        status_with(pty_pair, replies)


def test_status_replies_that_change_are_garbled(pty_pair: tuple[int, str]) -> None:
    """Noise that passes the fixed bits once must also agree with itself: never paper "out"."""
    answers = iter([b"\x12", b"\x12", b"\x7e", b"\x12", b"\x12", b"\x12"])
    master, path = pty_pair
    stop = threading.Event()
    thread = threading.Thread(
        target=play_printer, args=(master, lambda _n: next(answers, b""), stop)
    )
    thread.start()
    try:
        with SerialTicketPrinter(path, 9600, timeout_s=0.3) as printer, pytest.raises(GarbledReply):
            printer.status()
    finally:
        stop.set()
        thread.join()


def test_unplugged_line_is_a_printer_error_on_status_and_send() -> None:
    """A pty whose far side is gone: termios and OSError failures, all PrinterError."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    printer = SerialTicketPrinter(path, 115200, timeout_s=0.3)
    os.close(master)
    os.close(slave)
    with pytest.raises(PrinterError, match="line failed"):
        printer.status()
    with pytest.raises(PrinterError, match="write failed"):
        printer.send(b"\x1b@")
    printer.close()
    with pytest.raises(PrinterError, match="cannot open printer port"):
        SerialTicketPrinter(path, 115200)


@pytest.mark.parametrize("garbage", [b"\xff", b"\x00", b"\x13", b"A"])
def test_status_garbage_is_a_clear_error(pty_pair: tuple[int, str], garbage: bytes) -> None:
    with pytest.raises(PrinterError, match="not a status reply"):
        status_with(pty_pair, {**OK, 2: garbage})


def test_a_glob_names_the_first_matching_port(tmp_path) -> None:
    (tmp_path / "ttyUSB1").touch()
    (tmp_path / "ttyUSB0").touch()
    assert resolve_port(str(tmp_path / "ttyUSB*")) == str(tmp_path / "ttyUSB0")
    assert resolve_port("/dev/ttyUSB0") == "/dev/ttyUSB0"
    with pytest.raises(PrinterError, match="is it plugged in"):
        resolve_port(str(tmp_path / "ttyACM*"))


def test_unopenable_port_is_a_clear_error() -> None:
    with pytest.raises(PrinterError, match="cannot open printer port"):
        SerialTicketPrinter("/dev/does-not-exist-xaso")


def test_loop_url_and_wire_time() -> None:
    with SerialTicketPrinter("loop://", 9600, flow_control="xonxoff") as printer:
        printer.send(b"\x1b@")
        assert printer.wire_seconds(4096) == pytest.approx(4.2667, abs=1e-3)
