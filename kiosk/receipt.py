"""The queue ticket's content and its ESC/POS bytes.

Pure: no I/O but reading the font. Text with diacritics is drawn as a one-bit
raster strip with a Unicode TTF font, because Vietnamese code pages differ by
model and print tone marks detached (PITFALLS.md: python-escpos and
Vietnamese). ASCII text and the number use the printer's own fonts, which cost
one byte a character instead of a bitmap, wrapped here at word boundaries
(the printer would cut a word at the end of its line). python-escpos does all
the encoding.

In code-page mode, CP1258 (WPC1258) has "Đ" and the base letters (â, ơ, ư...)
but composes the five tones from combining marks, so text is decomposed
that way first; text a code page still cannot map (TCVN-3 has no capital
"Đ") is drawn as a raster strip instead, never printed as `?`.

The parts no ticket changes (header, priority line, footer) are drawn once per office,
service and profile and their bytes reused: a raster strip is most of a render's time,
and the render is most of the time from a button press to the first byte on the line.
"""

from __future__ import annotations

import copy
import functools
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from escpos.printer import Dummy
from PIL import Image, ImageDraw, ImageFont

# fonts-dejavu-core (Debian/Raspberry Pi OS): installed by ./xaso, never downloaded.
FONT_PATH = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_BOLD_PATH = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"

TEXT_PX = 20  # body text: 20 px at 203 dpi is 2.5 mm, about printer font A
TITLE_PX = 22  # the office name
LINE_GAP_PX = 4  # between wrapped lines of one strip: tight, bytes are time on the wire
QR_MODULE_DOTS = 4
FONT_A_DOTS = 12  # the printer's font A: 12 x 24 dots, so 48 columns on 576 dots
TONE_MARKS = frozenset("\u0300\u0301\u0303\u0309\u0323")  # huyền, sắc, ngã, hỏi, nặng
COMPOSING_CODEPAGES = frozenset({"CP1258"})  # tones as combining marks


@dataclass(frozen=True)
class PrinterProfile:
    """What one printer model can do: paper width in dots and how it prints Vietnamese."""

    paper_mm: Literal[58, 80] = 80
    dots: Literal[384, 512, 576] = 576
    vietnamese: Literal["raster", "codepage"] = "raster"
    codepage: str | None = None  # a python-escpos encoding name, e.g. "CP1258" (has Đ)
    native_qr: bool = True

    def __post_init__(self) -> None:
        if self.vietnamese == "codepage" and not self.codepage:
            raise ValueError("vietnamese='codepage' needs a codepage, e.g. 'CP1258'")


PROFILE_58 = PrinterProfile(paper_mm=58, dots=384)
PROFILE_80 = PrinterProfile(paper_mm=80, dots=576)


@dataclass(frozen=True)
class TicketContent:
    """What a ticket says; times come formatted in local time from the caller."""

    office: str
    service_vi: str
    service_en: str
    number: str  # "A015"
    issued_local: str  # "23/11/2026 09:41"
    people_ahead: int
    status_url: str
    priority: bool = False
    wait_min: int | None = None  # the estimate, when the office can make one


@functools.cache
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """The ticket's TTF font, loaded once per size."""
    return ImageFont.truetype(FONT_BOLD_PATH if bold else FONT_PATH, size)


def _greedy(text: str, face: ImageFont.FreeTypeFont, max_px: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if current and face.getlength(candidate) > max_px:
            lines.append(current)
            current = word
        else:
            current = candidate
    return [*lines, current] if current else lines


def wrap(text: str, face: ImageFont.FreeTypeFont, max_px: int) -> list[str]:
    """Word wrap by drawn width, never wider than max_px, with lines of even width.

    Even lines make the strip narrower than greedy wrapping does, and the strip's
    width is bytes on the wire for every one of its rows.
    """
    lines = _greedy(text, face, max_px)
    for line in lines:
        if face.getlength(line) > max_px:
            raise ValueError(f"word too wide for {max_px} dots: {line!r}")
    while len(lines) > 1:
        limit = max(face.getlength(line) for line in lines) - 1
        tighter = _greedy(text, face, int(limit))
        if len(tighter) > len(lines) or any(face.getlength(ln) > limit for ln in tighter):
            break
        lines = tighter
    return lines


def draw_line(text: str, face: ImageFont.FreeTypeFont) -> Image.Image:
    """One line of text, cropped to its ink: black (0) on white (1), no antialiasing."""
    left, top, right, bottom = (int(v) for v in face.getbbox(text))
    image = Image.new("1", (max(right - left, 1), max(bottom - top, 1)), 1)
    ImageDraw.Draw(image).text((-left, -top), text, font=face, fill=0)
    return image


def draw_strip(text: str, face: ImageFont.FreeTypeFont, max_px: int) -> Image.Image:
    """A block of text as one strip: wrapped lines, each centred, tight line gaps."""
    lines = [draw_line(line, face) for line in wrap(text, face, max_px)]
    width = max(line.width for line in lines)
    height = sum(line.height for line in lines) + LINE_GAP_PX * (len(lines) - 1)
    strip = Image.new("1", (width, height), 1)
    y = 0
    for line in lines:
        strip.paste(line, ((width - line.width) // 2, y))
        y += line.height + LINE_GAP_PX
    return strip


@functools.lru_cache(maxsize=16)
def _profile_data(profile: PrinterProfile) -> dict[str, Any]:
    """python-escpos's profile with our paper width, copied once per profile, read only."""
    data: dict[str, Any] = copy.deepcopy(Dummy().profile.profile_data)
    data["media"]["width"] = {"mm": profile.paper_mm, "pixels": profile.dots}
    return data


def _dummy(profile: PrinterProfile) -> Dummy:
    """A Dummy printer whose python-escpos profile knows the paper width (ImageWidthError)."""
    printer = Dummy()
    printer.profile.profile_data = _profile_data(profile)  # instance attribute: the class stays
    return printer


def codepage_form(text: str, codepage: str) -> str:
    """The text as the code page spells it: CP1258 wants base letters and tone marks apart."""
    if codepage.upper() not in COMPOSING_CODEPAGES:
        return unicodedata.normalize("NFC", text)
    clusters: list[str] = []  # a base letter and its marks
    for ch in unicodedata.normalize("NFD", text):
        if unicodedata.combining(ch) and clusters:
            clusters[-1] += ch
        else:
            clusters.append(ch)
    spelled = []
    for cluster in clusters:
        marks = cluster[1:]
        letter = cluster[0] + "".join(m for m in marks if m not in TONE_MARKS)
        spelled.append(
            unicodedata.normalize("NFC", letter) + "".join(m for m in marks if m in TONE_MARKS)
        )
    return "".join(spelled)


def _encodable(printer: Dummy, text: str, codepage: str) -> bool:
    """Whether every character maps: python-escpos would print `?` otherwise (issue #505)."""
    encoder = printer.magic.encoder
    encoding = encoder.get_encoding_name(codepage)
    return all(encoder.can_encode(encoding, ch) for ch in text)


def wrap_columns(text: str, columns: int) -> list[str]:
    """Word wrap for the printer's own font: combining marks take no column."""

    def width(s: str) -> int:
        return sum(1 for ch in s if not unicodedata.combining(ch))

    pieces: list[str] = []  # words, and a word longer than the line cut into lines
    for word in text.split():
        while width(word) > columns:
            head = word[:columns]
            while width(head) < columns and len(head) < len(word):  # combining marks
                head = word[: len(head) + 1]
            pieces.append(head)
            word = word[len(head) :]  # noqa: PLW2901 - the rest of the same word
        pieces.append(word)
    lines: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current} {piece}" if current else piece
        if current and width(candidate) > columns:
            lines.append(current)
            current = piece
        else:
            current = candidate
    return [*lines, current] if current else lines


def _font_lines(printer: Dummy, text: str, profile: PrinterProfile, scale: int = 1) -> None:
    for line in wrap_columns(text, profile.dots // (FONT_A_DOTS * scale)):
        printer.textln(line)


def _text_block(
    printer: Dummy, text: str, profile: PrinterProfile, face: ImageFont.FreeTypeFont
) -> None:
    """ASCII in the printer's font; other text through the code page when it maps, else raster."""
    if text.isascii():
        _font_lines(printer, text, profile)
        return
    if profile.vietnamese == "codepage":
        assert profile.codepage is not None  # checked by PrinterProfile
        spelled = codepage_form(text, profile.codepage)
        if _encodable(printer, spelled, profile.codepage):
            _font_lines(printer, spelled, profile)
            return
    printer.image(draw_strip(text, face, profile.dots))
    printer.ln()


def _header(printer: Dummy, profile: PrinterProfile, office: str, vi: str, en: str) -> None:
    printer.hw("INIT")
    if profile.vietnamese == "codepage":
        assert profile.codepage is not None
        printer.charcode(profile.codepage)
    printer.set(align="center")
    _text_block(printer, office, profile, font(TITLE_PX, bold=True))
    _text_block(printer, vi, profile, font(TEXT_PX))
    _text_block(printer, en, profile, font(TEXT_PX))
    _text_block(printer, "Số thứ tự", profile, font(TEXT_PX))
    printer.set(double_width=True, double_height=True, bold=True)


def _priority(printer: Dummy, profile: PrinterProfile) -> None:
    _text_block(printer, "Ưu tiên / Priority", profile, font(TEXT_PX, bold=True))


def _footer(printer: Dummy, profile: PrinterProfile) -> None:
    printer.ln()  # after the QR code
    _text_block(printer, "Cảm ơn quý khách", profile, font(TEXT_PX))
    printer.cut(feed=False)  # GS V 66 0: feed only to the cutter, not six extra lines


Part = Callable[..., None]  # (printer, profile, *texts): a part of the ticket no ticket changes
Encoder = tuple[str | None, bool]  # python-escpos's code page state: which one, and whether fixed


def _encoder(printer: Dummy) -> Encoder:
    return printer.magic.encoding, printer.magic.disabled


@functools.lru_cache(maxsize=256)
def _part_bytes(
    part: Part, profile: PrinterProfile, texts: tuple[str, ...], entry: Encoder
) -> tuple[bytes, Encoder]:
    """A static part's bytes, drawn once per configuration, and the encoder state it leaves.

    The entry state is in the key: python-escpos writes a code page switch only when the
    text needs another code page than the one it last selected.
    """
    printer = _dummy(profile)
    printer.magic.encoding, printer.magic.disabled = entry
    part(printer, profile, *texts)
    return bytes(printer.output), _encoder(printer)


def _compose(content: TicketContent, profile: PrinterProfile, static: Callable[..., None]) -> Dummy:
    """The ticket in print order; ``static`` writes the parts that do not change per ticket."""
    printer = _dummy(profile)
    static(printer, _header, content.office, content.service_vi, content.service_en)
    printer.textln(content.number)
    printer.set(normal_textsize=True, bold=False)
    if content.priority:
        static(printer, _priority)
    printer.textln(content.issued_local)
    waiting = f"Số người đang chờ: {content.people_ahead}"
    if content.wait_min is not None:
        waiting += f", chờ khoảng {content.wait_min} phút"
    _text_block(printer, waiting, profile, font(TEXT_PX))
    printer.qr(content.status_url, size=QR_MODULE_DOTS, native=profile.native_qr)
    static(printer, _footer)
    return printer


def render(content: TicketContent, profile: PrinterProfile, *, cached: bool = True) -> bytes:
    """The ticket as the ESC/POS bytes to send, cut at the end.

    Cached, the header, the priority line and the footer are drawn once per office,
    service and profile (the raster strips are most of a render's time); per ticket only
    the number, the time, the wait and the QR code are. ``cached=False`` draws every part
    (the same bytes: tests and the benchmark compare the two).
    """
    if not cached:
        direct = _compose(
            content, profile, lambda printer, part, *texts: part(printer, profile, *texts)
        )
        return bytes(direct.output)
    chunks: list[bytes] = []

    def from_cache(printer: Dummy, part: Part, *texts: str) -> None:
        data, leaves = _part_bytes(part, profile, texts, _encoder(printer))
        chunks.extend((printer.output, data))
        printer.clear()
        printer.magic.encoding, printer.magic.disabled = leaves

    last = _compose(content, profile, from_cache)
    chunks.append(last.output)
    return b"".join(chunks)
