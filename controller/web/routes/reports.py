"""Reports over HTTP: proof of play and queue statistics, as JSON, pages with charts, and CSV.

Proof of play is what a commune reports upward: per device or group over a
period, how many plays, their total duration, and what was missed or failed.
Queue statistics are the one-stop office's: per service or counter, tickets,
waiting and service times, no-shows, ratings. The pages take local dates
(Asia/Ho_Chi_Minh) and `?format=csv` gives the same rows as a file, UTF-8
with a BOM so that Excel shows the Vietnamese right.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from controller import i18n
from controller.auth.roles import Permission, Principal
from controller.deps import DbSession, app_state, require
from controller.fleet.reports import PlayRow, QueueRow, proof_of_play, queue_stats, to_csv
from controller.web.charts import bar_chart
from controller.web.routes import LOCAL_TZ, error_responses, lang_of, render

router = APIRouter(tags=["reports"])
Reader = Annotated[Principal, Depends(require(Permission.VIEW_REPORTS))]
EpochMs = Annotated[int, Query(ge=0, le=2**53)]


class PlayRowOut(BaseModel):
    key: str
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
    db: DbSession,
    who: Reader,
    start_ms: EpochMs,
    end_ms: EpochMs,
    by: Literal["device", "group"] = "device",
) -> list[PlayRowOut]:
    """Proof of play per device or group for events in [start_ms, end_ms)."""
    _check_period(start_ms, end_ms)
    return [PlayRowOut(**vars(row)) for row in proof_of_play(db, start_ms, end_ms, by)]


MAX_PERIOD_MS = 366 * 86_400_000
i18n.register(
    {
        "reports.title": ("Báo cáo", "Reports"),
        "reports.plays": ("Báo cáo phát thanh", "Proof of play"),
        "reports.queue": ("Thống kê lấy số", "Queue statistics"),
        "reports.bad_period": (
            "Khoảng thời gian không hợp lệ: ngày kết thúc phải sau ngày bắt đầu, tối đa 366 ngày.",
            "Invalid period: the end must be after the start, 366 days at most.",
        ),
        "reports.from": ("Từ ngày", "From"),
        "reports.to": ("Đến hết ngày", "To (inclusive)"),
        "reports.by": ("Theo", "By"),
        "reports.show": ("Xem", "Show"),
        "reports.csv": ("Tải CSV", "Download CSV"),
        "reports.none": ("Không có số liệu trong khoảng này.", "No figures in this period."),
        "reports.by.device": ("Thiết bị", "Device"),
        "reports.by.group": ("Nhóm", "Group"),
        "reports.by.service": ("Dịch vụ", "Service"),
        "reports.by.counter": ("Quầy", "Counter"),
        "reports.col.plays": ("Số lượt phát", "Plays"),
        "reports.col.duration": ("Tổng thời lượng (phút)", "Total duration (min)"),
        "reports.col.missed": ("Bỏ lỡ", "Missed"),
        "reports.col.failed": ("Lỗi", "Failed"),
        "reports.col.interrupted": ("Bị ngắt giữa chừng", "Interrupted"),
        "reports.aired": ("đã phát {seconds} giây", "{seconds} s aired"),
        "reports.col.issued": ("Số phát ra", "Tickets issued"),
        "reports.col.served": ("Đã phục vụ", "Served"),
        "reports.col.no_shows": ("Vắng mặt", "No-shows"),
        "reports.col.wait": ("Chờ TB / tối đa (giây)", "Wait avg / max (s)"),
        "reports.col.service": ("Phục vụ TB (giây)", "Service avg (s)"),
        "reports.col.rating": ("Đánh giá (số / TB)", "Ratings (count / avg)"),
        "reports.col.relay_gaps": ("Gián đoạn tiếp sóng", "Relay gaps"),
        "reports.gap_seconds": ("mất {seconds} giây", "{seconds} s lost"),
    }
)


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
    db: DbSession,
    who: Reader,
    start_ms: EpochMs,
    end_ms: EpochMs,
    by: Literal["service", "counter"] = "service",
) -> list[QueueRowOut]:
    """Queue statistics per service or counter for ticket events in [start_ms, end_ms)."""
    _check_period(start_ms, end_ms)
    return [QueueRowOut(**vars(row)) for row in queue_stats(db, start_ms, end_ms, by)]


Day = Annotated[dt.date | None, Query()]
Format = Literal["html", "csv"]


def _period(
    request: Request, start: dt.date | None, end: dt.date | None
) -> tuple[int, int, dt.date, dt.date]:
    """Local calendar days [start, end], by default the last 7 up to today, as epoch ms."""
    today = dt.datetime.fromtimestamp(app_state(request).now_ms() / 1000, LOCAL_TZ).date()
    end = end or today
    start = start or end - dt.timedelta(days=6)
    start_ms = int(dt.datetime.combine(start, dt.time(), LOCAL_TZ).timestamp() * 1000)
    end_ms = int(
        dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), LOCAL_TZ).timestamp() * 1000
    )
    _check_period(start_ms, end_ms)
    return start_ms, end_ms, start, end


def _csv(rows: list[Any], row_type: type[Any], name: str, start: dt.date, end: dt.date) -> Response:
    body = "\ufeff" + to_csv(rows, row_type)
    filename = f"{name}_{start.isoformat()}_{end.isoformat()}.csv"
    return Response(
        body.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/reports", response_class=HTMLResponse, include_in_schema=False)
def reports_page(request: Request, who: Reader) -> Response:
    return render(request, "reports.html", kind=None)


@router.get("/reports/plays", include_in_schema=False)
def plays_page(
    *,
    request: Request,
    db: DbSession,
    who: Reader,
    start: Day = None,
    end: Day = None,
    by: Literal["device", "group"] = "device",
    format: Format = "html",
) -> Response:
    start_ms, end_ms, first, last = _period(request, start, end)
    rows = proof_of_play(db, start_ms, end_ms, by)
    if format == "csv":
        return _csv(rows, PlayRow, f"proof-of-play_{by}", first, last)
    lang = lang_of(request)
    chart = bar_chart([(r.key, r.plays) for r in rows], i18n.t(lang, "reports.col.plays"))
    return render(
        request,
        "reports.html",
        kind="plays",
        rows=rows,
        chart=chart,
        start=first,
        end=last,
        by=by,
        bys=("device", "group"),
    )


@router.get("/reports/queue", include_in_schema=False)
def queue_page(
    *,
    request: Request,
    db: DbSession,
    who: Reader,
    start: Day = None,
    end: Day = None,
    by: Literal["service", "counter"] = "service",
    format: Format = "html",
) -> Response:
    start_ms, end_ms, first, last = _period(request, start, end)
    rows = queue_stats(db, start_ms, end_ms, by)
    if format == "csv":
        return _csv(rows, QueueRow, f"queue_{by}", first, last)
    lang = lang_of(request)
    chart = bar_chart(
        [(r.key, r.issued or r.called) for r in rows], i18n.t(lang, "reports.col.issued")
    )
    return render(
        request,
        "reports.html",
        kind="queue",
        rows=rows,
        chart=chart,
        start=first,
        end=last,
        by=by,
        bys=("service", "counter"),
    )
