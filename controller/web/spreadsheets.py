"""Report files an office opens in Excel: XLSX with real types, and CSV as Excel reads it.

A ``Sheet`` holds typed cells: text, numbers, local date-times and durations.
In XLSX they stay typed (a date is a date, a duration a number shown as
minutes:seconds), so that an officer can sort and add them up. CSV is text:
dates dd/mm/yyyy HH:MM:SS and durations m:ss. Excel set to Vietnamese splits
columns on ";" and reads "," as the decimal mark, so the semicolon variant
writes decimals with a comma; both carry a BOM, without which Excel misreads
UTF-8. This module is the only importer of openpyxl.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

Cell = str | int | float | dt.datetime | dt.timedelta | None
Separator = Literal["comma", "semicolon"]
DATE_TIME = "%d/%m/%Y %H:%M:%S"
XLSX_DATE_TIME = "dd/mm/yyyy hh:mm:ss"
XLSX_DURATION = "[m]:ss"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass
class Sheet:
    title: str  # at most 31 characters in XLSX
    headers: Sequence[str]
    rows: list[Sequence[Cell]] = field(default_factory=list)


def to_csv(sheet: Sheet, separator: Separator = "comma") -> bytes:
    """UTF-8 with a BOM, a header row even when empty, CRLF lines."""
    out = io.StringIO()
    delimiter = ";" if separator == "semicolon" else ","
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(sheet.headers)
    for row in sheet.rows:
        writer.writerow([_text(cell, decimal_comma=separator == "semicolon") for cell in row])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def cell_text(cell: Cell) -> str:
    """A cell as a page shows it."""
    return _text(cell, decimal_comma=False)


def _text(cell: Cell, *, decimal_comma: bool) -> str:
    if cell is None:
        return ""
    if isinstance(cell, dt.datetime):
        return cell.strftime(DATE_TIME)
    if isinstance(cell, dt.timedelta):
        return minutes_seconds(cell)
    if isinstance(cell, float):
        text = f"{cell:g}"
        return text.replace(".", ",") if decimal_comma else text
    return str(cell)


def minutes_seconds(duration: dt.timedelta) -> str:
    """12:05 for twelve minutes five seconds; 125:00 past two hours, as Excel's [m]:ss."""
    seconds = round(duration.total_seconds())
    return f"{seconds // 60}:{seconds % 60:02d}"


def to_xlsx(sheet: Sheet) -> bytes:
    """One worksheet: bold frozen headers, typed cells, columns wide enough to read."""
    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.title = sheet.title[:31]
    ws.append(list(sheet.headers))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    ws.freeze_panes = "A2"
    widths = [len(h) for h in sheet.headers]
    for row in sheet.rows:
        ws.append([_naive(cell) for cell in row])
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(_text(cell, decimal_comma=False)))
    for cells in ws.iter_cols(min_row=2):
        for c in cells:
            if isinstance(c.value, dt.datetime):
                c.number_format = XLSX_DATE_TIME
            elif isinstance(c.value, dt.timedelta):
                c.number_format = XLSX_DURATION
    for column, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(column)].width = min(max(width, 6) + 2, 60)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _naive(cell: Cell) -> Cell:
    """Excel has no time zones: a local time is written as the office reads its clock."""
    if isinstance(cell, dt.datetime) and cell.tzinfo is not None:
        return cell.replace(tzinfo=None)
    return cell
