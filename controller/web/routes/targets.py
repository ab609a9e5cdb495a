"""Choosing where a broadcast, a command or an entry goes: groups listed, speakers searched.

A commune has a few groups and up to thousands of speakers. The forms list the
groups as checkboxes ("Toàn xã", the group every speaker is in, first) and
show speakers a page at a time, found by id or name on the server: in the page
itself (``?q=&tpage=``: it works without script) and as JSON for the search box
(``GET /api/targets``, static/targets.js), so a page weighs the same at ten
speakers or ten thousand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from controller import i18n
from controller.auth.roles import Permission, Principal
from controller.deps import StationDep, require
from controller.radio.station import Station
from controller.site.directory import DeviceEntry, ProvisioningError
from controller.web.paging import Pager, clamp, page_number
from controller.web.routes import error_responses, lang_of, target_name

router = APIRouter(tags=["targets"])
Viewer = Annotated[Principal, Depends(require(Permission.VIEW_FLEET))]
SEARCH_PER_PAGE = 20
GROUPS_LISTED = 100  # more in a province: its communes listed, their villages searched

i18n.register(
    {
        "targets.groups": ("Nhóm loa", "Groups"),
        "targets.devices": ("Cụm loa", "Speakers"),
        "targets.search": ("Tìm cụm loa theo mã hoặc tên", "Find speakers by id or name"),
        "targets.find": ("Tìm", "Find"),
        "targets.none_found": (
            "Không tìm thấy cụm loa nào: thử mã khác, như loa-12, hoặc tên thôn.",
            "No speaker found: try another id, such as loa-12, or a village's name.",
        ),
        "targets.found": ("Tìm thấy {total} cụm loa", "{total} speakers found"),
        "targets.villages_hint": (
            "Nhóm thôn của một xã: gõ mã xã (ví dụ {example}) vào ô tìm cụm loa.",
            "A commune's village groups: type the commune's id (such as {example}) in the "
            "speaker search.",
        ),
    }
)


@dataclass(frozen=True)
class TargetChoices:
    """What a form offers: every group, and one page of the speakers found by ``q``."""

    groups: list[str]
    devices: list[DeviceEntry]
    q: str
    pager: Pager
    path: str  # the page, where its search goes
    unlisted: str = ""  # a commune whose villages the province's list leaves to the search


def province_groups(groups: list[str], communes: set[str], q: str) -> list[str]:
    """A province's groups: "all" and each commune's own, and of the others (the
    communes' villages, thousands in a province) those the search names."""
    wanted = q.strip().casefold()
    return [g for g in groups if g == "all" or g in communes or (wanted and wanted in g.casefold())]


def target_choices(
    station: Station, request: Request | None, path: str, *, commune: str | None = None
) -> TargetChoices:
    """The choices of the page at ``path``, from its ``q`` and ``tpage`` parameters (the
    page's own list may be paged by ``page``); a commune user's: their commune's only."""
    params = request.query_params if request is not None else {}
    q = str(params.get("q", ""))[:48]
    page = page_number(params.get("tpage"))
    kept = tuple((k, v) for k, v in params.items() if k != "tpage")
    unlisted = ""
    try:
        fleet = station.scheduling.fleet
        groups = fleet.groups(commune)
        communes = {c.id for c in station.site.communes()} if commune is None else set()
        if communes and len(groups) > GROUPS_LISTED:
            every, groups = groups, province_groups(groups, communes, q)
            unlisted = min(communes) if len(groups) < len(every) else ""
        found, total = fleet.find(q, page, SEARCH_PER_PAGE, commune)
        if not found and total:
            page = clamp(page, SEARCH_PER_PAGE, total)
            found, total = fleet.find(q, page, SEARCH_PER_PAGE, commune)
    except (OSError, ProvisioningError, i18n.Refusal):  # no site yet: nothing to choose
        groups, found, total = [], [], 0
    pager = Pager(page, SEARCH_PER_PAGE, total, kept, param="tpage", path=path)
    return TargetChoices(groups, found, q, pager, path, unlisted)


class TargetOut(BaseModel):
    value: str = Field(description="The form value: `device:<id>`")
    id: str
    name: str
    label: str = Field(description="As the pages show it, in the caller's language")


class TargetPageOut(BaseModel):
    q: str
    page: int
    pages: int
    total: int
    devices: list[TargetOut]


@router.get("/api/targets", response_model=TargetPageOut, responses=error_responses(401, 403))
def api_targets(
    request: Request,
    station: StationDep,
    who: Viewer,
    q: Annotated[str, Query(max_length=48)] = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> TargetPageOut:
    """Speakers whose id or name holds `q` (any case), 20 a page; no `q`: every speaker
    (a commune user's: of their commune)."""
    try:
        found, total = station.scheduling.fleet.find(q, page, SEARCH_PER_PAGE, who.commune)
    except (OSError, ProvisioningError):
        found, total = [], 0
    lang = lang_of(request)
    pager = Pager(page, SEARCH_PER_PAGE, total)
    devices = [
        TargetOut(
            value=f"device:{d.id}",
            id=d.id,
            name=d.name,
            label=target_name(lang, "device", d.id) + (f" — {d.name}" if d.name else ""),
        )
        for d in found
    ]
    return TargetPageOut(q=q, page=page, pages=pager.pages, total=total, devices=devices)
