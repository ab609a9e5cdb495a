"""Reports over HTTP: proof of play and queue statistics, as JSON, pages with charts, and CSV.

Proof of play is what a commune reports upward: per device or group over a
period, how many plays, their total duration, and what was missed or failed.
Queue statistics are the one-stop office's: per service or counter, tickets,
waiting and service times, no-shows, ratings. The play log is proof of play
per bulletin: each play on each cluster. The pages take local dates
(Asia/Ho_Chi_Minh, dd/mm/yyyy) and `?format=xlsx` or `?format=csv` (with
`sep=semicolon` for Excel set to Vietnamese) give the same sheet as a file.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from controller import i18n
from controller.auth.roles import Permission, Principal
from controller.deps import Communes, DbSession, app_state, asked_commune, require
from controller.fleet.play_log import play_log, play_results
from controller.fleet.reports import proof_of_play, queue_stats
from controller.web.charts import bar_chart
from controller.web.paging import Pager, clamp, page_number
from controller.web.report_sheets import play_log_sheet, plays_sheet, queue_sheet
from controller.web.routes import LOCAL_TZ, error_responses, lang_of, render
from controller.web.spreadsheets import XLSX_TYPE, Sheet, cell_text, to_csv, to_xlsx

router = APIRouter(tags=["reports"])
Reader = Annotated[Principal, Depends(require(Permission.VIEW_REPORTS))]
EpochMs = Annotated[int, Query(ge=0, le=2**53)]
CommuneQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description="One commune's devices only (a commune user: their own, always)",
    ),
]
PlaysBy = Literal["device", "group", "commune"]


def _scope(who: Principal, communes: Communes, asked: str | None) -> str | None:
    """Whose devices a report counts: a commune user's commune, or the one a province
    user asks for (None: every device)."""
    return asked_commune(who, communes, asked, "reports.other_commune")


class PlayRowOut(BaseModel):
    key: str
    commune: str | None = Field(description="The device's or group's commune; null: the province")
    plays: int
    completed: int
    total_played_ms: int
    missed: int
    failed: int
    missed_by_reason: dict[str, int]
    interrupted: int
    interrupted_by_reason: dict[str, int]
    interrupted_played_ms: int
    relay_gaps: int
    relay_gap_ms: int


@router.get(
    "/api/reports/plays", response_model=list[PlayRowOut], responses=error_responses(401, 403, 422)
)
def api_plays(
    *,
    db: DbSession,
    who: Reader,
    communes: Communes,
    start_ms: EpochMs,
    end_ms: EpochMs,
    by: PlaysBy = "device",
    commune: CommuneQuery = None,
) -> list[PlayRowOut]:
    """Proof of play per device, group or commune for events in [start_ms, end_ms)."""
    _check_period(start_ms, end_ms)
    scope = _scope(who, communes, commune)
    return [PlayRowOut(**vars(row)) for row in proof_of_play(db, start_ms, end_ms, by, scope)]


class PlayLogRowOut(BaseModel):
    device_id: str
    groups: tuple[str, ...]
    key: str
    label: str
    item_id: str | None
    priority: int | None
    planned_ms: int | None
    actual_ms: int | None
    played_ms: int
    result: Literal["completed", "cut", "missed", "failed"]
    reason: str
    relayed_ms: int | None = Field(description="A relay: what of the stream itself aired")
    gaps: int = Field(description="A relay: the stretches without the stream (drops, dead air)")
    gap_ms: int
    commune: str | None = Field(description="The cluster's commune; null: the province")


MAX_LOG_ROWS = 5000
LOG_ROWS = 500  # the API's page by default: a province's day is 40,000 plays, 1.7 MB at 5,000
LOG_PER_PAGE = 100  # rows of the log page; the files carry every row
WIDE_MAX = 10  # communes whose log one page shows at once; more: choose one


@router.get(
    "/api/reports/log", response_model=list[PlayLogRowOut], responses=error_responses(401, 403, 422)
)
def api_log(
    *,
    db: DbSession,
    who: Reader,
    communes: Communes,
    start_ms: EpochMs,
    end_ms: EpochMs,
    device: Annotated[str | None, Query(max_length=64)] = None,
    commune: CommuneQuery = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LOG_ROWS, description="At most this many rows (a page)")
    ] = LOG_ROWS,
) -> list[PlayLogRowOut]:
    """Each play planned in [start_ms, end_ms) on each cluster: bulletin, planned and actual
    start, what aired, and whether it completed, was cut, missed or failed, and why.

    A commune user's: on their commune's speakers; the province's: on every speaker, or
    ``commune``'s. At most ``limit`` rows (500 unless asked, at most 5,000) from
    ``offset``, in the log's order: selected, ordered and paged in SQL."""
    _check_period(start_ms, end_ms)
    scope = _scope(who, communes, commune)
    rows = play_log(db, start_ms, end_ms, device, commune=scope, offset=offset, limit=limit)
    return [PlayLogRowOut(**vars(row)) for row in rows]


MAX_PERIOD_MS = 366 * 86_400_000


def _check_period(start_ms: int, end_ms: int) -> None:
    if not 0 < end_ms - start_ms <= MAX_PERIOD_MS:
        raise i18n.Refusal(422, "reports.bad_period")


class QueueRowOut(BaseModel):
    key: str
    issued: int
    called: int
    served: int
    no_shows: int
    avg_wait_s: float | None
    max_wait_s: float | None
    avg_service_s: float | None
    ratings: int
    avg_rating: float | None
    ratings_by_level: dict[int, int]


@router.get(
    "/api/reports/queue", response_model=list[QueueRowOut], responses=error_responses(401, 403, 422)
)
def api_queue(
    *,
    db: DbSession,
    who: Reader,
    communes: Communes,
    start_ms: EpochMs,
    end_ms: EpochMs,
    by: Literal["service", "counter", "officer", "booking"] = "service",
    commune: CommuneQuery = None,
) -> list[QueueRowOut]:
    """Queue statistics per service, counter, officer, or booked against walk-in ("booked",
    "walk_in"), for ticket events in [start_ms, end_ms)."""
    _check_period(start_ms, end_ms)
    scope = _scope(who, communes, commune)
    rows = queue_stats(db, start_ms, end_ms, by, commune=scope)
    return [QueueRowOut(**vars(row)) for row in rows]


Day = Annotated[str | None, Query(max_length=10, description="dd/mm/yyyy, or yyyy-mm-dd")]
Format = Literal["html", "csv", "xlsx"]
Sep = Literal["comma", "semicolon"]
RESULTS = ("completed", "cut", "missed", "failed")


def parse_day(text: str | None) -> dt.date | None:
    """A local day as an officer types it (dd/mm/yyyy), or as a date picker sends it."""
    if not text:
        return None
    for pattern in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text.strip(), pattern).date()
        except ValueError:
            continue
    raise i18n.Refusal(422, "reports.bad_day", value=text[:10])


def _period(
    request: Request, start: str | None, end: str | None
) -> tuple[int, int, dt.date, dt.date]:
    """Local calendar days [start, end], by default the last 7 up to today, as epoch ms."""
    today = dt.datetime.fromtimestamp(app_state(request).now_ms() / 1000, LOCAL_TZ).date()
    last = parse_day(end) or today
    first = parse_day(start) or last - dt.timedelta(days=6)
    start_ms = int(dt.datetime.combine(first, dt.time(), LOCAL_TZ).timestamp() * 1000)
    end_ms = int(
        dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), LOCAL_TZ).timestamp() * 1000
    )
    _check_period(start_ms, end_ms)
    return start_ms, end_ms, first, last


def _file(
    sheet: Sheet, fmt: Format, sep: Sep, *, name: str, first: dt.date, last: dt.date
) -> Response:
    """The sheet as a download named for its period (dd-mm-yyyy: no slash in a file name)."""
    stem = f"{name}_{first:%d-%m-%Y}_{last:%d-%m-%Y}"
    if fmt == "xlsx":
        body, media, ext = to_xlsx(sheet), XLSX_TYPE, "xlsx"
    else:
        body, media, ext = to_csv(sheet, sep), "text/csv; charset=utf-8", "csv"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{stem}.{ext}"'},
    )


def _page(
    request: Request,
    kind: str,
    sheet: Sheet,
    *,
    chart: Any,
    first: dt.date,
    last: dt.date,
    where: Where,
    **extra: Any,
) -> Response:
    return render(
        request,
        "reports.html",
        kind=kind,
        sheet=sheet,
        cell=cell_text,
        chart=chart,
        start=first,
        end=last,
        communes=where.choices,
        commune=where.asked or "",
        **extra,
    )


@dataclass(frozen=True)
class Where:
    """A report page's commune: whose devices it counts (``scope``), what the province
    may choose from (``choices``: empty for a commune user or a site of one commune), and
    the site's communes by name (``names``), and whether its sheet has a "Xã" column
    (the province's, on a site of communes)."""

    scope: str | None
    asked: str | None
    choices: dict[str, str]
    names: dict[str, str]
    column: bool


def _where(who: Principal, communes: Communes, asked: str | None) -> Where:
    scope = _scope(who, communes, asked)
    province = who.commune is None
    return Where(
        scope=scope,
        asked=asked or None,
        choices=communes if province else {},
        names=communes,
        column=province and bool(communes),
    )


@router.get("/reports", response_class=HTMLResponse, include_in_schema=False)
def reports_page(request: Request, who: Reader) -> Response:
    return render(request, "reports.html", kind=None)


@router.get("/reports/log", include_in_schema=False)
def log_page(
    *,
    request: Request,
    db: DbSession,
    who: Reader,
    communes: Communes,
    start: Day = None,
    end: Day = None,
    device: Annotated[str | None, Query(max_length=64)] = None,
    commune: CommuneQuery = None,
    page: Annotated[str | None, Query(max_length=12)] = None,
    format: Format = "html",
    sep: Sep = "comma",
) -> Response:
    """Each play of each bulletin on each cluster: what an officer shows upward. The page
    shows ``LOG_PER_PAGE`` rows at a time (the chart counts them all); the files all."""
    start_ms, end_ms, first, last = _period(request, start, end)
    where = _where(who, communes, commune)
    # a province's week is hundreds of thousands of plays: its page asks for a commune
    # or a cluster first (the files still carry every row)
    wide = where.scope is None and not device and len(communes) > WIDE_MAX
    choose = format == "html" and wide
    lang = lang_of(request)
    if format != "html":
        rows = play_log(db, start_ms, end_ms, device or None, commune=where.scope)
        sheet = play_log_sheet(lang, rows, communes, column=where.column)
        return _file(sheet, format, sep, name="nhat-ky-phat", first=first, last=last)
    aired: Counter[str] = Counter()
    if not choose:  # the chart counts every row, in SQL; the page reads its own
        aired = play_results(db, start_ms, end_ms, device or None, commune=where.scope)
    total = sum(aired.values())
    shown = clamp(page_number(page), LOG_PER_PAGE, total)
    rows = []
    if total:
        rows = play_log(db, start_ms, end_ms, device or None, commune=where.scope,
                        offset=(shown - 1) * LOG_PER_PAGE, limit=LOG_PER_PAGE)  # fmt: skip
    sheet = play_log_sheet(lang, rows, communes, column=where.column)
    kept = tuple((k, v) for k, v in request.query_params.items() if k != "page")
    chart = bar_chart(
        [(i18n.t(lang, f"log.result.{k}"), aired[k]) for k in RESULTS],
        i18n.t(lang, "log.col.result"),
    )
    return _page(
        request,
        "log",
        sheet,
        chart=chart,
        first=first,
        last=last,
        where=where,
        by=None,
        bys=(),
        device=device or "",
        choose=choose,
        pager=Pager(shown, LOG_PER_PAGE, total, kept, path="/reports/log"),
    )


@router.get("/reports/plays", include_in_schema=False)
def plays_page(
    *,
    request: Request,
    db: DbSession,
    who: Reader,
    communes: Communes,
    start: Day = None,
    end: Day = None,
    by: PlaysBy = "device",
    commune: CommuneQuery = None,
    format: Format = "html",
    sep: Sep = "comma",
) -> Response:
    start_ms, end_ms, first, last = _period(request, start, end)
    where = _where(who, communes, commune)
    if by == "commune" and not where.column:
        by = "device"  # a commune's own report, or a site of one commune, has no communes
    rows = proof_of_play(db, start_ms, end_ms, by, where.scope)
    lang = lang_of(request)
    sheet = plays_sheet(lang, by, rows, where.names, column=where.column)
    if format != "html":
        return _file(sheet, format, sep, name=f"phat-thanh_{by}", first=first, last=last)
    chart = bar_chart(  # labelled as the sheet's first column: "Toàn xã", a commune's name
        [(str(line[0]), r.plays) for line, r in zip(sheet.rows, rows, strict=True)],
        i18n.t(lang, "reports.col.plays"),
    )
    bys = ("device", "group", "commune") if where.column else ("device", "group")
    return _page(
        request, "plays", sheet, chart=chart, first=first, last=last, where=where, by=by, bys=bys
    )


@router.get("/reports/queue", include_in_schema=False)
def queue_page(
    *,
    request: Request,
    db: DbSession,
    who: Reader,
    communes: Communes,
    start: Day = None,
    end: Day = None,
    by: Literal["service", "counter", "officer", "booking"] = "service",
    commune: CommuneQuery = None,
    format: Format = "html",
    sep: Sep = "comma",
) -> Response:
    start_ms, end_ms, first, last = _period(request, start, end)
    where = _where(who, communes, commune)
    rows = queue_stats(db, start_ms, end_ms, by, commune=where.scope)
    lang = lang_of(request)
    sheet = queue_sheet(lang, by, rows)
    if format != "html":
        return _file(sheet, format, sep, name=f"lay-so_{by}", first=first, last=last)
    chart = bar_chart(  # labelled as the sheet's first column ("Đặt lịch trước", not "booked")
        [(str(line[0]), r.issued or r.called) for line, r in zip(sheet.rows, rows, strict=True)],
        i18n.t(lang, "reports.col.issued"),
    )
    return _page(
        request,
        "queue",
        sheet,
        chart=chart,
        first=first,
        last=last,
        where=where,
        by=by,
        bys=("service", "counter", "officer", "booking"),
    )
