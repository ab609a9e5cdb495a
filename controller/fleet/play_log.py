"""Proof of play per bulletin: one row for each play on each cluster, as it happened.

What an officer shows upward: that bulletin X aired on cluster Y at 06:30 on
3 December, for how long, or that it was cut or missed and why. Each play's
records are folded by ingest into ``plays`` (controller/fleet/play_writes.py,
the fold itself in controller/fleet/play_rules.py), so a period's log is
selected, ordered, counted and paged in SQL; ``reports.proof_of_play`` gives
the totals of the same records.

Rows are selected by their planned start (what the officer asks about); a play
with no planned start in its records is placed by its first record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from controller.db.fleet_tables import Device, PlayFold
from controller.fleet.play_rules import Result
from controller.fleet.reports import groups_by_device

Q = TypeVar("Q", bound=Select[*tuple[Any, ...]])
FEW_DEVICES = 5000  # a page's devices whose groups are read by id; more: all the scope's


@dataclass(frozen=True)
class PlayLogRow:
    device_id: str
    groups: tuple[str, ...]
    key: str
    label: str
    item_id: str | None
    priority: int | None
    planned_ms: int | None
    actual_ms: int | None  # when its first sample aired; None if it never did
    played_ms: int  # what aired, all parts
    result: Result
    reason: str  # why it was cut, missed or failed ("" when completed)
    # a stream relay: what of the stream itself aired, and the stretches that did not
    relayed_ms: int | None = None  # None: not a relay (or a speaker too old to say)
    gaps: int = 0
    gap_ms: int = 0
    commune: str | None = None  # the cluster's commune; None: the province's


def play_log(
    session: Session,
    start_ms: int,
    end_ms: int,
    device: str | None = None,
    *,
    commune: str | None = None,
    devices: Collection[str] | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[PlayLogRow]:
    """Each play planned in [start, end), in order of its planned start, then cluster;
    ``commune``: on its speakers only (None: every speaker, the province's view);
    ``devices``: on those only (the calendar's page of speakers); ``offset``, ``limit``:
    that slice of them, in that order."""
    query = _where(
        select(*PlayFold.__table__.c, Device.commune.label("home")),
        start_ms, end_ms, device=device, commune=commune, devices=devices,
    ).order_by(PlayFold.order_ms, PlayFold.device_id, PlayFold.key)  # fmt: skip
    found = session.execute(query.offset(offset).limit(limit)).all()
    ids = {play.device_id for play in found}
    groups_of = groups_by_device(session, commune, ids if len(ids) <= FEW_DEVICES else None)
    return [_row(play, groups_of.get(play.device_id, ())) for play in found]


def play_results(
    session: Session,
    start_ms: int,
    end_ms: int,
    device: str | None = None,
    *,
    commune: str | None = None,
) -> Counter[str]:
    """How many plays of ``play_log``'s would end each way (completed, cut, ...): the
    page's chart and pager, in one statement."""
    counted = select(PlayFold.result, func.count())
    query = _where(counted, start_ms, end_ms, device=device, commune=commune, devices=None)
    query = query.group_by(PlayFold.result)
    return Counter({result: n for result, n in session.execute(query)})


def _where(
    query: Q,
    start_ms: int,
    end_ms: int,
    *,
    device: str | None,
    commune: str | None,
    devices: Collection[str] | None,
) -> Q:
    query = query.outerjoin(Device, Device.id == PlayFold.device_id).where(
        PlayFold.placed_ms >= start_ms, PlayFold.placed_ms < end_ms
    )
    if device is not None:
        query = query.where(PlayFold.device_id == device)
    if commune is not None:
        query = query.where(Device.commune == commune)
    if devices is not None:
        query = query.where(PlayFold.device_id.in_(tuple(devices)))
    return query


def _row(play: Any, groups: Collection[str]) -> PlayLogRow:
    """A row of ``plays`` with its device's commune (``home``) and groups."""
    return PlayLogRow(
        device_id=play.device_id,
        groups=tuple(sorted(groups)),
        key=play.key,
        label=play.label,
        item_id=play.item_id,
        priority=play.priority,
        planned_ms=play.planned_ms,
        actual_ms=play.actual_ms,
        played_ms=play.played_ms,
        result=play.result,
        reason=play.reason,
        relayed_ms=play.relayed_ms,
        gaps=play.gaps,
        gap_ms=play.gap_ms,
        commune=play.home or None,
    )
