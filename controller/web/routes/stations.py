"""The stations a commune relays ("Đài tiếp sóng") over HTTP, and relaying one now.

Broadcasters and admins keep the list; each change is audited. A relay now
("Tiếp sóng ngay") sends ``broadcast.stream`` to the chosen groups for a number
of minutes at the station's level, with its fallback clip; it is stopped like
any broadcast (the broadcasts page's "Dừng phát"). A change to a station
republishes the schedules that relay it, so speakers get its new stream.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller import i18n
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal
from controller.deps import DbSession, StationDep, require
from controller.radio.broadcast_reads import BroadcastInfo
from controller.radio.broadcasting import Held
from controller.radio.relay_stations import (
    MAX_RELAY_MIN,
    RadioStation,
    StationInput,
    check_minutes,
)
from controller.radio.station import Station, invalid_input, refused_as_http
from controller.web.routes import error_responses, render
from controller.web.routes.approvals import HeldOut, held_out
from controller.web.routes.broadcast_schemas import BroadcastSentOut, ClipSha, Label, Targets
from controller.web.routes.broadcasts import (
    audit_sent,
    broadcasts_page_with,
    form_targets,
    precheck,
)

router = APIRouter(tags=["stations"])
Broadcaster = Annotated[Principal, Depends(require(Permission.BROADCAST))]
StationId = Annotated[int, Path(ge=1, le=2**31 - 1)]
ERRORS = error_responses(401, 403, 404, 409, 422)

i18n.register(
    {
        "st.of_province": (
            "Của cấp tỉnh: xã được tiếp sóng, không sửa hoặc xoá",
            "The province's: yours to relay, not to change or delete",
        ),
        "nav.stations": ("Đài tiếp sóng", "Relayed stations"),
        "st.title": ("Đài tiếp sóng", "Relayed stations"),
        "st.intro": (
            "Các đài phát thanh mà loa của xã tiếp sóng (VOV1, Đài PT-TH tỉnh…). Địa chỉ luồng "
            "phát do đài cung cấp, bắt đầu bằng http:// hoặc https://.",
            "The radio stations the commune's speakers relay (VOV1, the province's radio…). "
            "The stream address is the one the station gives, starting with http:// or https://.",
        ),
        "st.new": ("Thêm đài", "Add a station"),
        "st.name": ("Tên đài", "Station name"),
        "st.url": ("Địa chỉ luồng phát", "Stream address"),
        "st.on_failure": ("Khi mất sóng hoặc sóng im lặng", "When the stream fails or goes silent"),
        "st.fail.stop": ("Dừng phát", "Stop"),
        "st.fail.fallback": ("Phát tệp thay thế", "Play a fallback clip"),
        "st.fallback": ("Tệp phát thay thế", "Fallback clip"),
        "st.save": ("Lưu", "Save"),
        "st.delete": ("Xoá", "Delete"),
        "st.empty": ("Chưa có đài nào.", "No stations yet."),
        "st.saved": ("Đã lưu đài «{name}».", "Station «{name}» saved."),
        "st.deleted": ("Đã xoá đài.", "The station was deleted."),
        "st.confirm_delete": ("Xoá đài «{name}»?", "Delete station «{name}»?"),
        "st.relay": ("Tiếp sóng ngay", "Relay now"),
        "st.station": ("Đài", "Station"),
        "st.minutes": ("Thời lượng (phút)", "Duration (minutes)"),
        "st.none": (
            "Chưa có đài tiếp sóng: thêm đài ở trang «Đài tiếp sóng».",
            "No stations yet: add one on the «Relayed stations» page.",
        ),
        "st.bad_minutes": (
            "Nhập thời lượng tiếp sóng là số phút, từ 1 đến {max}.",
            "Give the relay's duration in whole minutes, 1 to {max}.",
        ),
        "st.no_station": ("Chọn một đài để tiếp sóng.", "Choose a station to relay."),
    }
)


class StationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100)] = Field(examples=["VOV1"])
    url: Annotated[str, Field(min_length=1, max_length=2048)] = Field(
        examples=["https://str.vov.gov.vn/vov1"]
    )
    level: Literal["normal", "priority"] = "normal"
    on_failure: Literal["fallback", "stop"] = "stop"
    fallback_sha256: ClipSha | None = None

    def to_input(self) -> StationInput:
        return StationInput(**self.model_dump())


class StationOut(BaseModel):
    id: int
    name: str
    url: str
    level: str
    on_failure: str
    fallback_sha256: str | None
    created_by: str
    updated_ms: int
    commune: str | None = None  # whose it is (None: the province's, every commune's)

    @classmethod
    def of(cls, s: RadioStation) -> StationOut:
        return cls(**vars(s))


class RelayIn(BaseModel):
    """Relay a station now: where, for how many minutes (at the station's level)."""

    model_config = ConfigDict(extra="forbid")

    targets: Targets
    minutes: Annotated[int, Field(strict=True, ge=1, le=MAX_RELAY_MIN)]
    label: Label = ""


def _audit(db: DbSession, who: Principal, action: str, s: RadioStation) -> None:
    details = {"name": s.name, "url": s.url, "level": s.level, "on_failure": s.on_failure}
    audit(db, who, action, f"station:{s.id}", details | {"fallback": s.fallback_sha256})
    db.commit()


def _republish(station: Station, station_id: int) -> None:
    """The schedules relaying a changed station carry its new stream (when the broker is up)."""
    if station.connected:
        with refused_as_http():
            station.scheduling.republish_station(station_id)


def save(
    station: Station, db: DbSession, who: Principal, body: StationIn, station_id: int | None
) -> RadioStation:
    with refused_as_http():
        if station_id is None:
            saved = station.stations.create(body.to_input(), by=who.name, commune=who.commune)
        else:
            saved = station.stations.update(
                station_id, body.to_input(), by=who.name, commune=who.commune
            )
    _audit(db, who, "station.create" if station_id is None else "station.update", saved)
    if station_id is not None:
        _republish(station, station_id)
    return saved


def delete(station: Station, db: DbSession, who: Principal, station_id: int) -> RadioStation:
    with refused_as_http():
        gone = station.stations.delete(station_id, who.commune)
    _audit(db, who, "station.delete", gone)
    return gone


def relay(
    station: Station, db: DbSession, who: Principal, station_id: int, body: RelayIn
) -> BroadcastInfo | HeldOut:
    """Relayed now, or held back for a leader's approval (and audited as prepared)."""
    targets = [t.target() for t in body.targets]
    with refused_as_http():
        chosen = station.stations.get(station_id, who.commune)
        minutes = check_minutes(body.minutes)
    precheck(station, targets, chosen.fallback_sha256, who.commune)
    with refused_as_http():
        stream = station.stations.stream_for(
            chosen.id, minutes * 60, station.clip_base_url, who.commune
        )
        info = station.broadcasting.relay_now(
            targets,
            stream,
            by=who.name,
            level=chosen.level,  # type: ignore[arg-type]
            label=body.label or chosen.name,
            approved=who.can(Permission.APPROVE),
            commune=who.commune,
        )
    if isinstance(info, Held):
        return held_out(db, who, info)
    audit_sent(db, who, "broadcast.relay", info)
    return info


@router.get("/api/stations", response_model=list[StationOut], responses=ERRORS)
def api_list(station: StationDep, who: Broadcaster) -> list[StationOut]:
    """Every relayed station, by name (a commune user: their commune's and the province's,
    which every commune relays)."""
    return [StationOut.of(s) for s in station.stations.stations(who.commune)]


@router.post("/api/stations", response_model=StationOut, status_code=201, responses=ERRORS)
def api_create(body: StationIn, station: StationDep, db: DbSession, who: Broadcaster) -> StationOut:
    """Add a station: an http(s) stream, its level, and a fallback clip or stop on failure."""
    return StationOut.of(save(station, db, who, body, None))


@router.put("/api/stations/{station_id}", response_model=StationOut, responses=ERRORS)
def api_update(
    station_id: StationId, body: StationIn, station: StationDep, db: DbSession, who: Broadcaster
) -> StationOut:
    """Change a station; the schedules relaying it are sent again with its new stream."""
    return StationOut.of(save(station, db, who, body, station_id))


@router.delete("/api/stations/{station_id}", response_model=StationOut, responses=ERRORS)
def api_delete(
    station_id: StationId, station: StationDep, db: DbSession, who: Broadcaster
) -> StationOut:
    """Delete a station no schedule entry relays (409 otherwise)."""
    return StationOut.of(delete(station, db, who, station_id))


@router.post(
    "/api/stations/{station_id}/relay",
    response_model=BroadcastSentOut,
    status_code=201,
    responses={
        **error_responses(401, 403, 404, 409, 422, 503),
        202: {"model": HeldOut, "description": "Waits for approval"},
    },
)
def api_relay(
    station_id: StationId, body: RelayIn, station: StationDep, db: DbSession, who: Broadcaster
) -> BroadcastSentOut | JSONResponse:
    """Relay the station now on every speaker of the targets, for `minutes`; stop it with
    POST /api/broadcasts/stop. With the commune's approval on, a broadcaster's relay waits
    for a leader: 202, and it starts, for its full length, once approved."""
    info = relay(station, db, who, station_id, body)
    if isinstance(info, HeldOut):
        return JSONResponse(info.model_dump(), status_code=202)
    return BroadcastSentOut.of(info)


# pages


def _page(
    request: Request,
    station: Station,
    status_code: int = 200,
    error: i18n.Refusal | None = None,
    done: str = "",
) -> HTMLResponse:
    who: Principal | None = getattr(request.state, "principal", None)
    commune = who.commune if who is not None else None
    return render(
        request,
        "stations.html",
        status_code=status_code,
        error=error,
        done=done,
        stations=station.stations.stations(commune),
        clips=station.library.choices(commune),
        viewer_commune=commune,
    )


@router.get("/stations", response_class=HTMLResponse, include_in_schema=False)
def stations_page(request: Request, station: StationDep, who: Broadcaster) -> Response:
    return _page(request, station, done=request.query_params.get("done", "")[:100])


def _form_body(name: str, url: str, level: str, on_failure: str, fallback: str) -> StationIn:
    return StationIn.model_validate(
        {
            "name": name,
            "url": url,
            "level": level,
            "on_failure": on_failure,
            "fallback_sha256": fallback or None,
        }
    )


class StationForm(BaseModel):
    """The page's form fields, as typed (the API's model checks them)."""

    name: str = ""
    url: str = ""
    level: str = "normal"
    on_failure: str = "stop"
    fallback: str = ""


def _page_save(
    *,
    request: Request,
    station: Station,
    db: DbSession,
    who: Principal,
    form: StationForm,
    station_id: int | None,
) -> Response:
    try:
        try:
            body = StationIn.model_validate(
                {
                    "name": form.name,
                    "url": form.url,
                    "level": form.level,
                    "on_failure": form.on_failure,
                    "fallback_sha256": form.fallback or None,
                }
            )
        except ValidationError as exc:
            raise invalid_input(exc) from None
        saved = save(station, db, who, body, station_id)
    except i18n.Refusal as refused:
        return _page(request, station, refused.status, refused)
    return RedirectResponse(f"/stations?done=saved:{saved.id}", status_code=303)


@router.post("/stations", include_in_schema=False)
def page_create(
    *,
    request: Request,
    station: StationDep,
    db: DbSession,
    who: Broadcaster,
    form: Annotated[StationForm, Form()],
) -> Response:
    return _page_save(request=request, station=station, db=db, who=who, form=form, station_id=None)


@router.post("/stations/{station_id}", include_in_schema=False)
def page_update(
    *,
    request: Request,
    station_id: StationId,
    station: StationDep,
    db: DbSession,
    who: Broadcaster,
    form: Annotated[StationForm, Form()],
) -> Response:
    return _page_save(
        request=request, station=station, db=db, who=who, form=form, station_id=station_id
    )


@router.post("/stations/{station_id}/delete", include_in_schema=False)
def page_delete(
    request: Request, station_id: StationId, station: StationDep, db: DbSession, who: Broadcaster
) -> Response:
    try:
        delete(station, db, who, station_id)
    except i18n.Refusal as refused:
        return _page(request, station, refused.status, refused)
    return RedirectResponse("/stations?done=deleted", status_code=303)


@router.post("/broadcasts/relay", include_in_schema=False)
def page_relay(
    *,
    request: Request,
    station: StationDep,
    db: DbSession,
    who: Broadcaster,
    target: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies defaults
    station_id: Annotated[str, Form(max_length=12)] = "",
    minutes: Annotated[str, Form(max_length=12)] = "",
    label: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        targets = form_targets(target)
        if not station_id.isdigit():
            raise i18n.Refusal(422, "st.no_station")
        if not minutes.strip().isdigit() or not 1 <= int(minutes) <= MAX_RELAY_MIN:
            raise i18n.Refusal(422, "st.bad_minutes", max=MAX_RELAY_MIN)
        body = RelayIn.model_validate(
            {"targets": [vars(t) for t in targets], "minutes": int(minutes), "label": label}
        )
        info = relay(station, db, who, int(station_id), body)
    except i18n.Refusal as refused:
        return broadcasts_page_with(request, station, refused)
    if isinstance(info, HeldOut):
        return RedirectResponse("/broadcasts?held=1", status_code=303)
    return RedirectResponse(f"/broadcasts?sent={info.id}", status_code=303)
