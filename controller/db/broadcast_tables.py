"""Tables of the broadcasting services: clips, schedules, published documents,
broadcasts and their acks, the bulletin inbox and what the poller could not take.

Instants are epoch milliseconds (UTC) in BigInteger columns, as on the wire;
schedule times stay local ISO strings in the entry's own time zone, because
that is what a schedule document carries and what the edge interprets.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from controller.db.base import Base


class ClipRow(Base):
    """A prepared clip, stored under the clip directory as ``<sha256>.<format>``."""

    __tablename__ = "clips"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    duration_ms: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(8))  # upload | tts
    text: Mapped[str | None] = mapped_column(Text)  # what a tts clip says
    lang: Mapped[str] = mapped_column(String(16), default="vi")
    created_by: Mapped[str] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    # the commune whose library it is in (None: the province's, every commune's to play)
    commune: Mapped[str | None] = mapped_column(String(48), index=True)


class ClipShareRow(Base):
    """Another commune's library entry for a clip already stored: the same audio uploaded
    by a second commune is one file (named by its sha256), with that commune's own title."""

    __tablename__ = "clip_shares"

    sha256: Mapped[str] = mapped_column(
        String(64), ForeignKey("clips.sha256", ondelete="CASCADE"), primary_key=True
    )
    commune: Mapped[str] = mapped_column(String(48), primary_key=True, index=True)
    title: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(BigInteger)


class RelayStationRow(Base):
    """A radio station the commune relays (VOV1, the province's station): where its
    stream is, the level it plays at, and what airs when the stream fails."""

    __tablename__ = "relay_stations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    url: Mapped[str] = mapped_column(String(2048))  # http(s) only
    level: Mapped[str] = mapped_column(String(16))  # normal | priority
    on_failure: Mapped[str] = mapped_column(String(8))  # fallback | stop
    fallback_sha256: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("clips.sha256", ondelete="RESTRICT")
    )
    created_by: Mapped[str] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    # the commune that relays it (None: the province's, such as VOV, every commune's)
    commune: Mapped[str | None] = mapped_column(String(48), index=True)


class ScheduleRow(Base):
    """One entry of the groups' and devices' schedule documents: an item per time of day
    (``times``; none: the time of ``dtstart``) in the document of each of its targets
    (the first in ``target_kind``/``target_id``, the others in ``more_targets``)."""

    __tablename__ = "schedules"
    __table_args__ = (UniqueConstraint("target_kind", "target_id", "item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[str] = mapped_column(String(48))  # the id on the wire
    target_kind: Mapped[str] = mapped_column(String(8), index=True)  # group | device
    target_id: Mapped[str] = mapped_column(String(48), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    level: Mapped[str] = mapped_column(String(16))  # normal | priority | emergency
    priority: Mapped[int] = mapped_column(Integer)
    rrule: Mapped[str] = mapped_column(String(1000))
    tz: Mapped[str] = mapped_column(String(64))
    dtstart: Mapped[str] = mapped_column(String(32))  # local ISO date-time in tz
    until: Mapped[str | None] = mapped_column(String(32))
    exdates: Mapped[list[str]] = mapped_column(JSON, default=list)
    clip_sha256: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("clips.sha256", ondelete="RESTRICT"), index=True
    )
    stream_url: Mapped[str | None] = mapped_column(String(2048))
    stream_duration_s: Mapped[int | None] = mapped_column(Integer)
    # a relay of a station: its stream (and fallback) are the station's at each publish
    station_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("relay_stations.id", ondelete="RESTRICT"), index=True
    )
    gain_db: Mapped[float] = mapped_column(Float, default=0.0)
    lang: Mapped[str] = mapped_column(String(16), default="vi")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped by every change
    created_by: Mapped[str] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    # approved | pending | rejected: only an approved entry is in its target's document
    approval: Mapped[str] = mapped_column(String(16), default="approved", server_default="approved")
    times: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    more_targets: Mapped[list[dict[str, str]]] = mapped_column(
        JSON, default=list, server_default="[]"
    )
    # its author's commune (None: the province's); it may target only that commune
    commune: Mapped[str | None] = mapped_column(String(48), index=True)


class PublishedDocumentRow(Base):
    """The last signed document sent on a topic: versions only grow, and it can be resent."""

    __tablename__ = "published_documents"

    topic: Mapped[str] = mapped_column(String(200), primary_key=True)
    doc_type: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(BigInteger)
    envelope_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    signed_ms: Mapped[int] = mapped_column(BigInteger)
    delivered_ms: Mapped[int | None] = mapped_column(BigInteger)  # the broker's PUBACK


class BroadcastRow(Base):
    """A "play now", an emergency or a stop, sent as one signed command."""

    __tablename__ = "broadcasts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the command id
    kind: Mapped[str] = mapped_column(String(8))  # play | stream | stop
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{"kind", "id"}]
    level: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    clip_sha256: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("clips.sha256", ondelete="SET NULL")
    )
    stream_url: Mapped[str | None] = mapped_column(String(2048))
    label: Mapped[str] = mapped_column(String(200), default="")
    at_ms: Mapped[int | None] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    status: Mapped[str] = mapped_column(String(16))  # sent | acked | refused | partial
    # The speakers it reached, sorted, and how many answered (and said yes): counted as
    # each ack comes, so a batch of acks does not recount a thousand rows.
    devices: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    answered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    answered_ok: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # the commune it was made for: its author's (None: the province's); lists filter on it
    commune: Mapped[str | None] = mapped_column(String(48), index=True)


class BroadcastCommuneRow(Base):
    """A commune a broadcast reached: a province broadcast is seen by every commune it
    played in (read-only), not only by the one it was made for."""

    __tablename__ = "broadcast_communes"

    broadcast_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    commune: Mapped[str] = mapped_column(String(48), primary_key=True, index=True)


class BroadcastAckRow(Base):
    """One device's answer to a broadcast, made by its first ack (none: no answer yet)."""

    __tablename__ = "broadcast_acks"

    broadcast_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True
    )
    device: Mapped[str] = mapped_column(String(48), primary_key=True)
    ok: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(String(500))
    acked_ms: Mapped[int | None] = mapped_column(BigInteger)


class BulletinRow(Base):
    """A bulletin sent down by a province's source-information system (Circular 39)."""

    __tablename__ = "bulletins"
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(100))  # the integration's name
    external_id: Mapped[str] = mapped_column(String(128))  # the sender's id (BanTinID)
    title: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(16))
    clip_sha256: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("clips.sha256", ondelete="RESTRICT")
    )
    stream_url: Mapped[str | None] = mapped_column(String(2048))
    stream_duration_s: Mapped[int | None] = mapped_column(Integer)
    lang: Mapped[str] = mapped_column(String(16), default="vi")
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    received_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending|accepted|declined|aired
    decided_by: Mapped[str | None] = mapped_column(String(64))
    decided_ms: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(String(500), default="")
    schedule_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("schedules.id", ondelete="SET NULL")
    )
    broadcast_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("broadcasts.id", ondelete="SET NULL")
    )
    # the commune it is for (None: the province, every commune's to see)
    commune: Mapped[str | None] = mapped_column(String(48), index=True)
    # a schedule from above (LichPhat): the times it proposes, which accept uses
    # ({"dtstart", "times", "rrule", "until"}); None: the operator chooses
    proposed: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class DownwardBulletinRow(Base):
    """A bulletin from the province's list that is not in the inbox (controller/radio/downward.py):
    ``retry`` after a failure that may pass (network, broker), counted; ``refused`` for its
    content, or after too many failures, and never asked for again."""

    __tablename__ = "downward_bulletins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)  # its id, or its hash
    commune: Mapped[str | None] = mapped_column(String(48), index=True)  # None: the province
    title: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(8))  # retry | refused
    code: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)  # Vietnamese, a new line, English
    attempts: Mapped[int] = mapped_column(Integer)
    first_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    item: Mapped[Any] = mapped_column(JSON, nullable=True)  # as the province sent it


class CommuneSettingRow(Base):
    """A setting the commune's administrator changes on a page, such as approval_required.

    Keyed by commune: today one controller is one commune (``LOCAL_COMMUNE``)."""

    __tablename__ = "commune_settings"

    commune: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(140))
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class ApprovalRow(Base):
    """What waits for a leader before it airs, or an emergency that aired to be reviewed.

    kind: schedule (a schedule entry, ``schedule_id``), play (a play-now broadcast, kept
    whole in ``request`` and sent on approval), emergency (sent at once, ``broadcast_id``).
    state: pending -> approved | rejected | withdrawn; review -> reviewed.
    """

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    commune: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    schedule_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("schedules.id", ondelete="SET NULL"), index=True
    )
    broadcast_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("broadcasts.id", ondelete="SET NULL")
    )
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prepared_by: Mapped[str] = mapped_column(String(140))
    prepared_ms: Mapped[int] = mapped_column(BigInteger)
    decided_by: Mapped[str | None] = mapped_column(String(140))
    decided_ms: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(500), default="")
