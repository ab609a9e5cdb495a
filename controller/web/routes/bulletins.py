"""The bulletin inbox over HTTP: a province's system pushes, the commune operator decides.

The province's source-information system holds an API token (Bearer) of a
broadcaster role: it uploads the audio to POST /api/clips, then pushes the
bulletin here. Normal bulletins wait for the operator on /bulletins; priority
and emergency ones go on air on arrival (Circular 39, controller.radio.bulletins).
A bulletin names the commune it is for, or none (the province, every commune's);
a commune's operator reads its own and the province's, and decides its own.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller import i18n
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal
from controller.db.broadcast_tables import DownwardBulletinRow
from controller.deps import DbSession, StationDep, commune_names, require
from controller.radio.bulletins import Bulletin
from controller.radio.downward import refusals
from controller.radio.station import Station, invalid_input, refused_as_http
from controller.web.routes import error_responses, lang_of, render
from controller.web.routes.approvals import audit_held
from controller.web.routes.broadcast_schemas import StreamUrl, TargetIn, TargetOut
from controller.web.routes.broadcasts import SEND_ERRORS, precheck
from controller.web.routes.schedule_schemas import LocalTime
from controller.web.routes.schedules import REPEATS, check_rrule

router = APIRouter(tags=["bulletins"])
Operator = Annotated[Principal, Depends(require(Permission.MANAGE_SCHEDULES))]
BulletinId = Annotated[int, Path(ge=1, le=2**31 - 1)]
State = Literal["pending", "accepted", "declined", "aired"]

i18n.register(
    {
        "nav.bulletins": ("Bản tin cấp trên", "Bulletin inbox"),
        "bul.title": ("Bản tin từ cấp trên", "Bulletins from above"),
        "bul.intro": (
            "Bản tin thông thường chờ cán bộ xã chấp nhận (xếp lịch hoặc phát ngay) hoặc từ chối; "
            "bản tin ưu tiên và khẩn cấp được phát ngay khi nhận (Thông tư 39/2020/TT-BTTTT).",
            "Normal bulletins wait for the commune operator to accept (schedule or play now) "
            "or decline them; priority and emergency ones play on arrival (Circular 39/2020).",
        ),
        "bul.pending": ("Chờ xử lý", "Waiting"),
        "bul.none_pending": ("Không có bản tin nào chờ xử lý.", "No bulletin is waiting."),
        "bul.history": ("Đã xử lý", "Handled"),
        "bul.source": ("Nguồn", "Source"),
        "bul.accept": ("Chấp nhận, xếp lịch", "Accept into the schedule"),
        "bul.play_now": ("Chấp nhận, phát ngay", "Accept and play now"),
        "bul.decline": ("Từ chối", "Decline"),
        "bul.note": ("Ghi chú", "Note"),
        "bul.done": ("Đã xử lý bản tin.", "Bulletin handled."),
        "bul.auto": ("Tự động, theo mức ưu tiên", "Automatically, by its level"),
        "bul.state.pending": ("Chờ xử lý", "Waiting"),
        "bul.state.accepted": ("Đã chấp nhận", "Accepted"),
        "bul.state.declined": ("Đã từ chối", "Declined"),
        "bul.state.aired": ("Đã phát tự động", "Aired on arrival"),
        "bul.for": ("Gửi cho", "For"),
        "bul.lang.vi": ("tiếng Việt", "in Vietnamese"),
        "bul.lang.en": ("tiếng Anh", "in English"),
        "bul.lang.other": ("ngôn ngữ {code}", "language {code}"),
        "bul.proposed": (
            "Lịch đề xuất của cấp trên: {times}, {days}",
            "Schedule proposed from above: {times}, {days}",
        ),
        "bul.proposed.one_day": ("ngày {first}", "on {first}"),
        "bul.proposed.days": ("mỗi ngày từ {first} đến {last}", "every day from {first} to {last}"),
        "bul.accept_proposed": ("Chấp nhận theo lịch đề xuất", "Accept as proposed"),
        "bul.refused": ("Bản tin cấp trên chưa nhận được", "Bulletins from above not taken"),
        "bul.refused_intro": (
            "Hệ thống thông tin nguồn của tỉnh đã gửi các bản tin này nhưng bộ điều khiển "
            "không nhận được, vì lý do ghi bên cạnh. Báo cấp tỉnh sửa rồi gửi lại.",
            "The province's source-information system sent these bulletins but the "
            "controller could not take them, for the reason given. Ask the province to "
            "correct and send them again.",
        ),
        "bul.refused.key": ("Mã bản tin", "Bulletin id"),
        "bul.refused.why": ("Lý do", "Reason"),
        "bul.refused.retry": (
            "Chưa tải được (mạng hoặc máy chủ của tỉnh chưa trả lời); bộ điều khiển tự thử "
            "lại, đã thử {n} lần",
            "Not fetched yet (the network or the province's server did not answer); the "
            "controller tries again by itself, {n} tries so far",
        ),
        "bul.of_province": (
            "Gửi cho cấp tỉnh: xã xem được, cấp tỉnh xử lý",
            "For the province: yours to see, the province's to handle",
        ),
    }
)


class BulletinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="The sender's id (BanTinID): the same id twice is one bulletin"
    )
    title: Annotated[str, Field(min_length=1, max_length=200)]
    level: Literal["normal", "priority", "emergency"]
    targets: Annotated[list[TargetIn], Field(min_length=1, max_length=100)]
    clip_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    stream_url: StreamUrl | None = None
    stream_duration_s: Annotated[int, Field(ge=1, le=86_400)] | None = None
    lang: Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")] = "vi"
    commune: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$")] | None = Field(
        None,
        description="The commune it is for (MaXa); none: the sender's (a province token's: "
        "the province, every commune's inbox)",
    )


class AcceptIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    play_now: bool = False
    dtstart: LocalTime | None = Field(None, description="Local time of the first play")
    rrule: Annotated[str, Field(min_length=1, max_length=1000)] = "FREQ=DAILY;COUNT=1"
    until: LocalTime | None = None
    targets: Annotated[list[TargetIn], Field(min_length=1, max_length=100)] | None = None


class DeclineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Field(max_length=500)] = ""


class BulletinOut(BaseModel):
    id: int
    source: str
    external_id: str
    title: str
    level: str
    clip_sha256: str | None
    stream_url: str | None
    stream_duration_s: int | None
    lang: str
    targets: list[TargetOut]
    received_ms: int
    state: State
    decided_by: str | None
    decided_ms: int | None
    note: str
    schedule_id: int | None
    broadcast_id: str | None
    commune: str | None
    proposed: dict[str, Any] | None = Field(
        None, description="A schedule from above: the times accept uses when given none"
    )

    @classmethod
    def of(cls, b: Bulletin) -> BulletinOut:
        data: dict[str, Any] = {k: v for k, v in vars(b).items() if k != "targets"}
        return cls(targets=[TargetOut(kind=t.kind, id=t.id) for t in b.targets], **data)


def _audit(db: DbSession, who: Principal, action: str, b: Bulletin) -> None:
    details: dict[str, Any] = {"title": b.title, "level": b.level, "state": b.state}
    details |= {"source": b.source, "schedule": b.schedule_id, "broadcast": b.broadcast_id}
    audit(db, who, action, f"bulletin:{b.id}", details)
    db.commit()


def receive(station: Station, db: DbSession, who: Principal, body: BulletinIn) -> Bulletin:
    targets = [t.target() for t in body.targets]
    if body.level == "normal":
        station.check_site()
    else:  # it goes on air now
        precheck(station, targets, body.clip_sha256, who.commune)
    with refused_as_http():
        bulletin = station.inbox.receive(
            source=who.token_name or who.username,
            external_id=body.external_id,
            title=body.title,
            level=body.level,
            targets=targets,
            clip_sha256=body.clip_sha256,
            stream_url=body.stream_url,
            stream_duration_s=body.stream_duration_s,
            lang=body.lang,
            commune=body.commune,
            sender=who.commune,
        )
    _audit(db, who, "bulletin.receive", bulletin)
    return bulletin


def accept(
    station: Station, db: DbSession, who: Principal, bulletin_id: int, body: AcceptIn
) -> Bulletin:
    with refused_as_http():
        station.inbox.get(bulletin_id, who.commune)
    check_rrule(body.rrule)
    station.check_can_send()
    with refused_as_http():
        bulletin = station.inbox.accept(
            bulletin_id,
            by=who.name,
            play_now=body.play_now,
            dtstart=body.dtstart,
            rrule=body.rrule,
            until=body.until,
            targets=[t.target() for t in body.targets] if body.targets else None,
            approved=who.can(Permission.APPROVE),
            commune=who.commune,
        )
    _audit(db, who, "bulletin.accept", bulletin)
    if bulletin.schedule_id is not None:
        with refused_as_http():
            entry = station.scheduling.get(bulletin.schedule_id)
        if entry.approval == "pending":
            audit_held(db, who, "schedule", str(entry.id), entry.label)
    return bulletin


def decline(
    station: Station, db: DbSession, who: Principal, bulletin_id: int, note: str
) -> Bulletin:
    with refused_as_http():
        bulletin = station.inbox.decline(bulletin_id, by=who.name, note=note, commune=who.commune)
    _audit(db, who, "bulletin.decline", bulletin)
    return bulletin


@router.post("/api/bulletins", response_model=BulletinOut, status_code=201, responses=SEND_ERRORS)
def api_receive(body: BulletinIn, station: StationDep, db: DbSession, who: Operator) -> BulletinOut:
    """A bulletin from a province's system (Bearer API token; audio first via POST
    /api/clips). Normal: waits for the operator. Priority, emergency: on air now."""
    return BulletinOut.of(receive(station, db, who, body))


@router.get("/api/bulletins", response_model=list[BulletinOut], responses=SEND_ERRORS)
def api_inbox(
    station: StationDep,
    who: Operator,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[BulletinOut]:
    """Newest first; `state=pending` is what waits for the operator. A commune user's:
    those for their commune and for the province."""
    return [BulletinOut.of(b) for b in station.inbox.inbox(state, limit, who.commune)]


@router.get("/api/bulletins/{bulletin_id}", response_model=BulletinOut, responses=SEND_ERRORS)
def api_bulletin(bulletin_id: BulletinId, station: StationDep, who: Operator) -> BulletinOut:
    """One bulletin and what was decided (another commune's: 404)."""
    with refused_as_http():
        return BulletinOut.of(station.inbox.get(bulletin_id, who.commune))


@router.post(
    "/api/bulletins/{bulletin_id}/accept",
    response_model=BulletinOut,
    responses=SEND_ERRORS | error_responses(409),
)
def api_accept(
    bulletin_id: BulletinId, body: AcceptIn, station: StationDep, db: DbSession, who: Operator
) -> BulletinOut:
    """Put a waiting bulletin on air: into the schedule from `dtstart`, or now."""
    return BulletinOut.of(accept(station, db, who, bulletin_id, body))


@router.post(
    "/api/bulletins/{bulletin_id}/decline",
    response_model=BulletinOut,
    responses=SEND_ERRORS | error_responses(409),
)
def api_decline(
    bulletin_id: BulletinId, body: DeclineIn, station: StationDep, db: DbSession, who: Operator
) -> BulletinOut:
    """Decline a waiting bulletin, with a note for the record."""
    return BulletinOut.of(decline(station, db, who, bulletin_id, body.note))


# page


def _page(
    request: Request,
    station: Station,
    who: Principal,
    status_code: int = 200,
    error: i18n.Refusal | None = None,
) -> HTMLResponse:
    everything = station.inbox.inbox(limit=200, commune=who.commune)
    return render(
        request,
        "bulletins.html",
        status_code=status_code,
        error=error,
        done=request.query_params.get("done") == "1",
        pending=[b for b in everything if b.state == "pending"],
        handled=[b for b in everything if b.state != "pending"],
        repeats=list(REPEATS),
        clip_titles={c.sha256: c.title for c in station.library.clips(who.commune)},
        viewer_commune=who.commune,
        commune_names=commune_names(request),
        language=lambda code: language_name(lang_of(request), code),
        proposal=lambda b: proposal_text(lang_of(request), b.proposed),
        refused=[
            (r, refusal_text(lang_of(request), r))
            for r in refusals(station.sessions, who.commune, limit=20)
        ],
    )


def _day(local_iso: str) -> str:
    """dd/mm/yyyy of a local ISO date or date-time."""
    return dt.date.fromisoformat(local_iso[:10]).strftime("%d/%m/%Y")


def proposal_text(lang: i18n.Lang, proposed: dict[str, Any] | None) -> str:
    """A schedule from above in words: its times of day and its days, dd/mm/yyyy."""
    if not proposed:
        return ""
    times = ", ".join(proposed["times"] or [proposed["dtstart"][11:16]])
    first = _day(proposed["dtstart"])
    if proposed.get("until"):
        days = i18n.t(lang, "bul.proposed.days", first=first, last=_day(proposed["until"]))
    else:
        days = i18n.t(lang, "bul.proposed.one_day", first=first)
    return i18n.t(lang, "bul.proposed", times=times, days=days)


def refusal_text(lang: i18n.Lang, row: DownwardBulletinRow) -> str:
    """Why a bulletin from above is not in the inbox, in the reader's language."""
    if row.status == "retry":
        return i18n.t(lang, "bul.refused.retry", n=row.attempts)
    vi, _, en = row.reason.partition("\n")
    return vi if lang == "vi" or not en else en


def language_name(lang: i18n.Lang, code: str) -> str:
    """A bulletin's language in words ("tiếng Việt"), not its code; one we have no name
    for keeps its code, so that nothing is hidden."""
    base = code.split("-", maxsplit=1)[0]
    key = f"bul.lang.{base}"
    return i18n.t(lang, key) if i18n.has(key) else i18n.t(lang, "bul.lang.other", code=code)


@router.get("/bulletins", response_class=HTMLResponse, include_in_schema=False)
def bulletins_page(request: Request, station: StationDep, who: Operator) -> Response:
    return _page(request, station, who)


@router.post("/bulletins/{bulletin_id}/accept", include_in_schema=False)
def page_accept(
    *,
    request: Request,
    bulletin_id: BulletinId,
    station: StationDep,
    db: DbSession,
    who: Operator,
    play_now: Annotated[str, Form()] = "",
    dtstart: Annotated[str, Form(max_length=32)] = "",
    repeat: Annotated[str, Form(max_length=20)] = "once",
) -> Response:
    if len(dtstart) == 16:  # datetime-local gives minutes only
        dtstart += ":00"
    try:
        body = AcceptIn.model_validate(
            {
                "play_now": play_now == "yes",
                "dtstart": dtstart or None,
                "rrule": REPEATS.get(repeat, REPEATS["once"]),
            }
        )
        accept(station, db, who, bulletin_id, body)
    except ValidationError as exc:
        return _page(request, station, who, 422, invalid_input(exc))
    except i18n.Refusal as refused:
        return _page(request, station, who, refused.status, refused)
    return RedirectResponse("/bulletins?done=1", status_code=303)


@router.post("/bulletins/{bulletin_id}/decline", include_in_schema=False)
def page_decline(
    *,
    request: Request,
    bulletin_id: BulletinId,
    station: StationDep,
    db: DbSession,
    who: Operator,
    note: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    try:
        decline(station, db, who, bulletin_id, note)
    except i18n.Refusal as refused:
        return _page(request, station, who, refused.status, refused)
    return RedirectResponse("/bulletins?done=1", status_code=303)
