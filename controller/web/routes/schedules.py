"""Schedule entries over HTTP, the calendar and the conflict preview, and their page.

Entries are kept per group or per device at one of the three levels
(Circular 39); each change republishes the target's signed retained document
(controller.radio.scheduling) and is audited. The calendar and the preview are
controller.radio.schedule_calendar's. Reading needs only view_fleet, so an officer
sees what plays where; changing needs manage_schedules.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from controller import i18n
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal
from controller.deps import DbSession, StationDep, app_state, require
from controller.fleet.play_log import PlayLogRow, play_log
from controller.radio.relay_stations import MAX_RELAY_MIN
from controller.radio.schedule_calendar import DevicePlan, only_conflicts
from controller.radio.schedule_entries import Entry, EntryInput
from controller.radio.station import Station, invalid_input, refused_as_http
from controller.web.paging import PER_PAGE, Pager, clamp, page_number
from controller.web.report_sheets import reason_text
from controller.web.routes import LOCAL_TZ, error_responses, lang_of, render
from controller.web.routes.approvals import audit_held
from controller.web.routes.broadcasts import SEND_ERRORS, form_targets
from controller.web.routes.schedule_schemas import (
    EntryIn,
    EntryOut,
    EntryUpdate,
    PlanOut,
    PreviewIn,
)
from controller.web.routes.targets import target_choices
from protocol.topics import ID_PATTERN

router = APIRouter(tags=["schedules"])
Scheduler = Annotated[Principal, Depends(require(Permission.MANAGE_SCHEDULES))]
Viewer = Annotated[Principal, Depends(require(Permission.VIEW_FLEET))]
EntryId = Annotated[int, Path(ge=1, le=2**31 - 1)]
READ_ERRORS = {k: v for k, v in SEND_ERRORS.items() if k != 404}
DAY_MS = 86_400_000
MAX_PER_DAY = 96
REPEATS = {
    "once": "FREQ=DAILY;COUNT=1",
    "daily": "FREQ=DAILY",
    "weekdays": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
    "weekly": "FREQ=WEEKLY",
}

i18n.register(
    {
        "nav.schedules": ("Lịch phát", "Schedules"),
        "sched.title": ("Lịch phát", "Schedules"),
        "sched.new": ("Thêm lịch phát", "New schedule entry"),
        "sched.save": ("Lưu và gửi tới cụm loa", "Save and send to the speakers"),
        "sched.preview": ("Xem trước xung đột", "Preview conflicts"),
        "sched.target": ("Nơi phát", "Where"),
        "sched.start": ("Bắt đầu (giờ địa phương)", "Starts (local time)"),
        "sched.from_day": ("Từ ngày (ngày/tháng/năm)", "From (day/month/year)"),
        "sched.times": (
            "Giờ phát (24 giờ, cách nhau bởi dấu phẩy)",
            "Times of day (24-hour, separated by commas)",
        ),
        "sched.times_col": ("Giờ phát", "Times"),
        "sched.no_time": (
            "Nhập ít nhất một giờ phát, ví dụ 06:30 hoặc 06:30, 17:00.",
            "Give at least one time of day, such as 06:30 or 06:30, 17:00.",
        ),
        "sched.bad_from_day": (
            "Ngày bắt đầu «{day}» không hợp lệ: ghi theo ngày/tháng/năm, ví dụ 01/12/2026.",
            "«{day}» is not a start day: write it as day/month/year, such as 01/12/2026.",
        ),
        "sched.repeat": ("Lặp lại", "Repeat"),
        "sched.or_station": ("Hoặc tiếp sóng đài", "Or relay a station"),
        "sched.relay_of": ("Tiếp sóng {name} ({minutes} phút)", "Relay of {name} ({minutes} min)"),
        "sched.repeat.once": ("Một lần", "Once"),
        "sched.repeat.daily": ("Hằng ngày", "Daily"),
        "sched.repeat.weekdays": ("Thứ Hai đến thứ Sáu", "Monday to Friday"),
        "sched.repeat.weekly": ("Hằng tuần", "Weekly"),
        "sched.rrule": ("Quy tắc RRULE (tuỳ chọn)", "RRULE (optional)"),
        "sched.entries": ("Các mục lịch", "Entries"),
        "sched.empty": ("Chưa có lịch phát nào.", "No schedule entries yet."),
        "sched.delete": ("Xoá", "Delete"),
        "sched.saved": ("Đã lưu và gửi lịch phát.", "Saved and sent to the speakers."),
        "sched.deleted": ("Đã xoá lịch phát.", "Entry deleted."),
        "sched.calendar": ("Lịch theo cụm loa", "Calendar per speaker"),
        "sched.day": ("Ngày", "Day"),
        "sched.span": ("Khoảng", "Span"),
        "sched.span.day": ("Một ngày", "One day"),
        "sched.span.week": ("Một tuần", "One week"),
        "sched.show": ("Xem", "Show"),
        "sched.nothing": ("Không có gì phát.", "Nothing plays."),
        "sched.conflicts": ("Xung đột", "Conflicts"),
        "sched.no_conflict": (
            "Không có xung đột: mọi mục đều phát trọn vẹn đúng giờ.",
            "No conflicts: every item plays in full at its time.",
        ),
        "sched.planned": ("Dự kiến", "Planned"),
        "sched.actual": ("Thực tế", "Actual"),
        "sched.outcome": ("Kết quả", "Outcome"),
        "outcome.will.completed": ("Sẽ phát trọn vẹn", "Will play in full"),
        "outcome.will.joined": (
            "Sẽ phát muộn, bỏ {s} giây đầu để kết thúc đúng giờ",
            "Will join late: the first {s} s skipped, to end on time",
        ),
        "outcome.will.preempted": ("Sẽ bị ngắt giữa chừng", "Will be cut short"),
        "outcome.will.resumed": (
            "Sẽ bị ngắt giữa chừng, rồi phát tiếp phần còn lại lúc {at}",
            "Will be cut short, then play its rest at {at}",
        ),
        "outcome.will.missed": ("Sẽ không phát", "Will not play"),
        "outcome.unreported": (
            "Chưa có báo cáo từ cụm loa (cụm loa có thể đang mất kết nối)",
            "No report from the speaker yet (it may be offline)",
        ),
        "why.preempted": (
            "Vì: «{by}» có mức ưu tiên cao hơn phát chồng lên.",
            "Why: «{by}», at a higher level, plays over it.",
        ),
        "why.quiet_hours": (
            "Vì: trùng giờ yên tĩnh, khi đó chỉ bản tin khẩn cấp được phát.",
            "Why: it falls in quiet hours, when only emergencies play.",
        ),
        "why.late": (
            "Vì: trùng giờ với bản tin khác; khi đến lượt thì đã quá muộn để phát.",
            "Why: it overlaps another item; by its turn it is too late to play.",
        ),
        "why.delayed": (
            "Vì: chờ bản tin trước phát xong, bắt đầu lúc {at}.",
            "Why: it waits for the item before it, and starts at {at}.",
        ),
        "why.joined": (
            "Vì: chờ bản tin trước, nên vào giữa chừng để kết thúc đúng giờ.",
            "Why: it waits for the item before it, so it joins midway to end on time.",
        ),
        "sched.bad_day": ("Ngày không hợp lệ: {day}", "Not a valid day: {day}"),
        "sched.too_frequent": (
            "Lịch phát lặp quá dày: tối đa {max} lần một ngày (mỗi 15 phút).",
            "The entry repeats too often: at most {max} times a day (every 15 minutes).",
        ),
    }
)


def check_rrule(rrule: str, times: int = 1) -> None:
    """Refuse rules that fire more than MAX_PER_DAY times a day at ``times`` times of day:
    no loudspeaker needs them, and every speaker and the calendar would expand each."""
    rule = rrule.upper().removeprefix("RRULE:")
    parts = dict(p.split("=", 1) for p in rule.split(";") if "=" in p)
    freq = parts.get("FREQ", "")
    hours = len(parts["BYHOUR"].split(",")) if "BYHOUR" in parts else 24 if freq == "HOURLY" else 1
    minutes = len(parts["BYMINUTE"].split(",")) if "BYMINUTE" in parts else 1
    if (
        freq in ("SECONDLY", "MINUTELY")
        or "BYSECOND" in parts
        or hours * minutes * times > MAX_PER_DAY
    ):
        raise i18n.Refusal(422, "sched.too_frequent", max=MAX_PER_DAY)


def period(start: dt.date, days: int) -> tuple[int, int]:
    """Local midnight of ``start`` and ``days`` later, in epoch ms."""
    try:
        begin = dt.datetime.combine(start, dt.time(), LOCAL_TZ)
        first = int(begin.timestamp() * 1000)
    except (OverflowError, ValueError, OSError):
        raise i18n.Refusal(422, "sched.bad_day", day=str(start)) from None
    return first, first + days * DAY_MS


def _audit(db: DbSession, who: Principal, action: str, e: Entry) -> None:
    details = {"entry": e.id, "item_id": e.item_id, "label": e.label, "level": e.level}
    details |= {"rrule": e.rrule, "dtstart": e.dtstart, "clip": e.clip_sha256, "version": e.version}
    details |= {"station": e.station_id}
    audit(db, who, action, f"{e.target.kind}:{e.target.id}", details)
    db.commit()
    if e.approval == "pending" and action != "schedule.delete":
        audit_held(db, who, "schedule", str(e.id), e.label or e.item_id)


def _validate(station: Station, entry: EntryInput, commune: str | None = None) -> None:
    """Check an entry as saving would, without saving: bad input before a missing broker."""
    check_rrule(entry.rrule, len(entry.times) or 1)
    station.check_site()
    now = station.scheduling.clock()
    with refused_as_http():
        station.calendar.plans(now, now + 1, devices=[], proposed=entry, commune=commune)
    station.check_can_send()


def create(station: Station, db: DbSession, who: Principal, body: EntryIn) -> Entry:
    with refused_as_http():
        entry = body.to_input()
    _validate(station, entry, who.commune)
    with refused_as_http():
        made = station.scheduling.create(
            entry, by=who.name, approved=who.can(Permission.APPROVE), commune=who.commune
        )
    _audit(db, who, "schedule.create", made)
    return made


def update(
    station: Station, db: DbSession, who: Principal, entry_id: int, body: EntryUpdate
) -> Entry:
    with refused_as_http():
        entry = EntryIn.model_validate(body.model_dump(exclude={"expected_version"})).to_input()
        station.scheduling.get(entry_id, who.commune)
    _validate(station, entry.model_copy(update={"item_id": None}), who.commune)
    with refused_as_http():
        changed = station.scheduling.update(
            entry_id,
            entry,
            by=who.name,
            expected_version=body.expected_version,
            approved=who.can(Permission.APPROVE),
            commune=who.commune,
        )
    _audit(db, who, "schedule.update", changed)
    return changed


def delete(station: Station, db: DbSession, who: Principal, entry_id: int) -> Entry:
    with refused_as_http():
        gone = station.scheduling.get(entry_id, who.commune)
    station.check_can_send()
    with refused_as_http():
        station.scheduling.delete(entry_id, by=who.name, commune=who.commune)
    _audit(db, who, "schedule.delete", gone)
    return gone


@router.get("/api/schedules", response_model=list[EntryOut], responses=READ_ERRORS)
def api_entries(
    *,
    station: StationDep,
    who: Viewer,
    target_kind: Literal["group", "device"] | None = None,
    target_id: Annotated[str, Query(pattern=f"^{ID_PATTERN}$")] | None = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="Skip this many first")] = 0,
) -> list[EntryOut]:
    """The entries, oldest first, a page of them (``limit`` from ``offset``: a province has
    hundreds), or a target's (give both target_kind and target_id); a commune user's
    commune's own (the province's that reach them are in the calendar)."""
    entries = station.scheduling.entries(commune=who.commune)
    if target_kind is not None:
        entries = [e for e in entries if e.target.kind == target_kind]
    if target_id is not None:
        entries = [e for e in entries if e.target.id == target_id]
    return [EntryOut.of(e) for e in entries[offset : offset + limit]]


@router.post("/api/schedules", response_model=EntryOut, status_code=201, responses=SEND_ERRORS)
def api_create(body: EntryIn, station: StationDep, db: DbSession, who: Scheduler) -> EntryOut:
    """Add an entry and publish its target's signed document."""
    return EntryOut.of(create(station, db, who, body))


@router.get(
    "/api/schedules/{entry_id}",
    response_model=EntryOut,
    responses=error_responses(401, 403, 404, 422),
)
def api_entry(entry_id: EntryId, station: StationDep, who: Viewer) -> EntryOut:
    """One entry."""
    with refused_as_http():
        return EntryOut.of(station.scheduling.get(entry_id, who.commune))


@router.put(
    "/api/schedules/{entry_id}",
    response_model=EntryOut,
    responses=SEND_ERRORS | error_responses(409),
)
def api_update(
    entry_id: EntryId, body: EntryUpdate, station: StationDep, db: DbSession, who: Scheduler
) -> EntryOut:
    """Replace an entry; its former and new targets' documents are published again."""
    return EntryOut.of(update(station, db, who, entry_id, body))


@router.delete("/api/schedules/{entry_id}", response_model=EntryOut, responses=SEND_ERRORS)
def api_delete(entry_id: EntryId, station: StationDep, db: DbSession, who: Scheduler) -> EntryOut:
    """Delete an entry (returned as it was) and publish its target's document."""
    return EntryOut.of(delete(station, db, who, entry_id))


@router.get("/api/calendar", response_model=list[PlanOut], responses=READ_ERRORS)
def api_calendar(
    *,
    station: StationDep,
    who: Viewer,
    start: dt.date,
    days: Annotated[int, Query(ge=1, le=31)] = 1,
    device: Annotated[list[str], Query(max_length=100)] = [],  # noqa: B006 - copied by FastAPI
    conflicts_only: bool = False,
) -> list[PlanOut]:
    """What each speaker plays from local midnight of `start` for `days` days, collisions
    resolved as the speaker will; `conflicts_only` keeps what is cut, missed or delayed."""
    first, end = period(start, days)
    ask = station.calendar.conflicts if conflicts_only else station.calendar.plans
    with refused_as_http():
        plans = ask(first, end, devices=device or None, commune=who.commune)
        return [PlanOut.of(p) for p in plans]


@router.post("/api/schedules/preview", response_model=list[PlanOut], responses=READ_ERRORS)
def api_preview(body: PreviewIn, station: StationDep, who: Scheduler) -> list[PlanOut]:
    """The conflict preview of an entry not yet saved: what it would cut, delay or lose."""
    check_rrule(body.entry.rrule, len(body.entry.times) or 1)
    first, end = period(body.start, body.days)
    with refused_as_http():
        plans = station.calendar.conflicts(
            first, end, proposed=body.entry.to_input(), commune=who.commune
        )
    return [PlanOut.of(p) for p in plans]


# page


def _form_entry(form: dict[str, Any]) -> EntryIn:
    """The page's form: targets ticked, a first day (dd/mm/yyyy), times of day, a repeat."""
    chosen = form_targets(list(form.get("target", [])))
    times = [at for at in re.split(r"[\s,;]+", str(form.get("times", ""))) if at]
    if not times:
        raise i18n.Refusal(422, "sched.no_time")
    rrule = str(form.get("rrule") or "").strip() or REPEATS.get(str(form.get("repeat")), "")
    data: dict[str, Any] = {
        "targets": [vars(t) for t in chosen],
        "times": times,
        "clip_sha256": form.get("clip") or None,
        "level": form.get("level") or "normal",
        "dtstart": f"{form_day(str(form.get('from_day', ''))).isoformat()}T00:00:00",
        "rrule": rrule,
        "label": form.get("label", ""),
    }
    relayed = str(form.get("station") or "")
    if relayed:  # a relay of a station instead of a clip, for a number of minutes
        minutes = str(form.get("minutes") or "").strip()
        if not relayed.isdigit():
            raise i18n.Refusal(422, "st.no_station")
        if not minutes.isdigit() or not 1 <= int(minutes) <= MAX_RELAY_MIN:
            raise i18n.Refusal(422, "st.bad_minutes", max=MAX_RELAY_MIN)
        data |= {"station_id": int(relayed), "stream_duration_s": int(minutes) * 60}
    try:
        return EntryIn.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc) from None


def form_day(text: str) -> dt.date:
    """A day as people write it here (dd/mm/yyyy), or as a date picker sends it."""
    text = text.strip()
    for layout in ("%d/%m/%Y", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, layout).date()
        except ValueError:
            continue
    raise i18n.Refusal(422, "sched.bad_from_day", day=text[:20])


def _page(
    request: Request,
    station: Station,
    *,
    status_code: int = 200,
    error: i18n.Refusal | None = None,
    form: dict[str, Any] | None = None,
    preview: list[DevicePlan] | None = None,
    named: list[DevicePlan] | None = None,
) -> HTMLResponse:
    """The page; ``named``: plans whose items a preview's rows may refer to."""
    who: Principal | None = getattr(request.state, "principal", None)
    commune = who.commune if who is not None else None
    query = request.query_params
    try:
        day = dt.date.fromisoformat(query.get("day", ""))
    except ValueError:
        day = dt.datetime.now(LOCAL_TZ).date()
    span = "week" if query.get("span") == "week" else "day"
    first, end = period(day, 7 if span == "week" else 1)
    shown = page_number(query.get("cpage"))  # the calendar, a page of speakers at a time
    try:
        speakers = [d.id for d in station.scheduling.fleet.speakers(commune)]
        shown = clamp(shown, PER_PAGE, len(speakers))
        some = speakers[(shown - 1) * PER_PAGE : shown * PER_PAGE]
        plans = station.calendar.plans(first, end, devices=some, commune=commune) if some else []
    except (i18n.Refusal, OSError, ValueError):  # no site yet
        speakers, some, plans = [], [], []
    kept = tuple(query.items())
    clips = station.library.choices(commune)
    now_ms = app_state(request).now_ms()
    aired: dict[tuple[str, str], PlayLogRow] = {}
    if first < now_ms:  # the past says what happened, from the speakers' reports
        with app_state(request).sessions() as db:
            for row in play_log(db, first, min(end, now_ms + 1), commune=commune, devices=some):
                aired[(row.device_id, row.key)] = row
    lang = lang_of(request)
    page = page_number(query.get("page"))
    entries, total = station.scheduling.page(page, PER_PAGE, commune)
    if not entries and total:
        page = clamp(page, PER_PAGE, total)
        entries, total = station.scheduling.page(page, PER_PAGE, commune)
    by_id = station.library.titles((e.clip_sha256 for e in entries if e.clip_sha256), commune)
    stations = station.stations.stations(commune)
    return render(
        request,
        "schedules.html",
        status_code=status_code,
        error=error,
        done=query.get("done", "")[:20],
        day=day.isoformat(),
        span=span,
        plans=plans,
        preview=preview,
        form=form or {},
        repeats=list(REPEATS),
        choices=target_choices(station, request, "/schedules", commune=commune),
        checked=(form or {}).get("target", []),
        clips=clips,
        clip_titles=by_id,
        stations=stations,
        station_names={s.id: s.name for s in stations},
        entries=entries,
        pager=Pager(page, PER_PAGE, total, kept, path="/schedules"),
        calendar_pager=Pager(shown, PER_PAGE, len(speakers), kept, "cpage", "/schedules"),
        today=dt.datetime.now(LOCAL_TZ).strftime("%d/%m/%Y"),
        now_ms=now_ms,
        aired=aired,
        labels={r.key: r.label or r.item_id for p in plans + (named or []) for r in p.rows},
        reason=lambda code: reason_text(lang, code),
    )


@router.get("/schedules", response_class=HTMLResponse, include_in_schema=False)
def schedules_page(request: Request, station: StationDep, who: Viewer) -> Response:
    return _page(request, station)


async def _form(request: Request) -> dict[str, Any]:
    """The form's fields, ``target`` as the list of every box ticked."""
    form = await request.form()
    fields: dict[str, Any] = {
        k: v for k, v in form.items() if isinstance(v, str) and len(v) <= 1000
    }
    fields["target"] = [v for v in form.getlist("target") if isinstance(v, str) and len(v) <= 60]
    return fields


@router.post("/schedules", include_in_schema=False)
def page_create(
    request: Request,
    station: StationDep,
    db: DbSession,
    who: Scheduler,
    form: Annotated[dict[str, Any], Depends(_form)],
) -> Response:
    try:
        made = create(station, db, who, _form_entry(form))
    except i18n.Refusal as refused:
        return _page(request, station, status_code=refused.status, error=refused, form=form)
    done = "held" if made.approval == "pending" else "saved"
    return RedirectResponse(f"/schedules?done={done}", status_code=303)


@router.post("/schedules/preview", include_in_schema=False)
def page_preview(
    request: Request,
    station: StationDep,
    who: Scheduler,
    form: Annotated[dict[str, Any], Depends(_form)],
) -> Response:
    try:
        entry = _form_entry(form)
        check_rrule(entry.rrule, len(entry.times))
        start = dt.date.fromisoformat(entry.dtstart[:10])
        first, end = period(start, 7)
        with refused_as_http():
            everything = station.calendar.plans(
                first, end, proposed=entry.to_input(), commune=who.commune
            )
    except i18n.Refusal as refused:
        return _page(request, station, status_code=refused.status, error=refused, form=form)
    except ValueError:
        refusal = i18n.Refusal(422, "sched.bad_day", day="?")
        return _page(request, station, status_code=422, error=refusal, form=form)
    found = only_conflicts(everything)
    return _page(request, station, form=form, preview=found, named=everything)


@router.post("/schedules/{entry_id}/delete", include_in_schema=False)
def page_delete(
    request: Request, entry_id: EntryId, station: StationDep, db: DbSession, who: Scheduler
) -> Response:
    try:
        delete(station, db, who, entry_id)
    except i18n.Refusal as refused:
        return _page(request, station, status_code=refused.status, error=refused)
    return RedirectResponse("/schedules?done=deleted", status_code=303)
