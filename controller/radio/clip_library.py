"""The clip library: uploads and spoken notices, prepared once, stored by sha256.

Preparation is broadcast.audio.clips' (probe, two-pass loudnorm, one delivery
format), written straight into the directory that controller.radio.clip_server
hands to devices. A clip's name is the sha256 of the prepared file, so the
same upload twice is one clip and one row. Audio that cannot be a clip is
refused with broadcast.audio.clips' ``ClipError``, whose message is bilingual.

``ServiceError`` (and its kinds) is the error of every broadcasting service
here and in scheduling, broadcasting and bulletins: routes map ``NotFound`` to
404, ``Conflict`` to 409 and ``Invalid`` to 422.

Each clip belongs to a commune's library (``commune``; None: the province's,
which every commune may play but only the province changes; the rule is
controller/auth/tenancy.py's ``reads`` and ``sees``). The store stays
content-addressed: the same audio uploaded by a second commune is the one file
and row, and that commune gets its own library entry (a ``clip_shares`` row,
with its own title); removing an entry removes the file only with the last one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from broadcast.audio.clip_preparation import Progress, prepare
from broadcast.audio.clips import ClipSettings, PreparedClip
from broadcast.audio.tts import EspeakEngine, SpeechEngine, speak_to_clip
from controller.auth import tenancy
from controller.db.broadcast_tables import (
    BulletinRow,
    ClipRow,
    ClipShareRow,
    RelayStationRow,
    ScheduleRow,
)
from plumbing.clock import wall_ms
from protocol.commands import ClipRef

Clock = Callable[[], int]
COPY_CHUNK = 1 << 20
MAX_TITLE = 200
CLIP_CHOICES = 100  # a form's clip list; the library page pages through them all


class ServiceError(Exception):
    """A refused request; ``str()`` is the Vietnamese then the English message."""

    def __init__(self, code: str, message_vi: str, message_en: str) -> None:
        super().__init__(f"{message_vi} / {message_en}")
        self.code = code
        self.message_vi = message_vi
        self.message_en = message_en


class NotFound(ServiceError):
    pass


class Conflict(ServiceError):
    pass


class Invalid(ServiceError):
    pass


class OutOfScope(ServiceError):
    """Outside the caller's commune (controller/auth/tenancy.py): 403."""


def clip_not_found(sha256: str) -> NotFound:
    return NotFound(
        "clip_not_found",
        f"Không có tệp âm thanh {sha256[:12]} trong thư viện",
        f"No clip {sha256[:12]} in the library",
    )


@dataclass(frozen=True)
class ClipInfo:
    sha256: str
    title: str
    duration_ms: int
    format: str
    size_bytes: int
    source: str
    text: str | None
    lang: str
    created_by: str
    created_ms: int
    commune: str | None = None  # whose library entry this is (None: the province's)

    @classmethod
    def of(cls, row: ClipRow, share: ClipShareRow | None = None) -> ClipInfo:
        """The clip as its owner's entry, or as a sharing commune's (``share``)."""
        return cls(
            row.sha256,
            share.title if share else row.title,
            row.duration_ms,
            row.format,
            row.size_bytes,
            row.source,
            row.text,
            row.lang,
            share.created_by if share else row.created_by,
            share.created_ms if share else row.created_ms,
            share.commune if share else row.commune,
        )


def province_clip(sha256: str) -> OutOfScope:
    return OutOfScope(
        "province_clip",
        f"Tệp âm thanh {sha256[:12]} là của cấp tỉnh: xã được phát nhưng không được sửa hoặc "
        "xoá; liên hệ cấp tỉnh",
        f"Clip {sha256[:12]} is the province's: a commune may play it but not change or "
        "delete it; contact the province",
    )


def _readable(commune: str | None) -> Any:
    """The SQL condition of the clips ``commune`` reads (with its share joined)."""
    if commune is None:
        return True
    return or_(
        ClipRow.commune.is_(None), ClipRow.commune == commune, ClipShareRow.sha256.isnot(None)
    )


def _with_share(commune: str | None) -> Any:
    """The clips joined to ``commune``'s own entries for them (none for the province)."""
    return select(ClipRow, ClipShareRow).outerjoin(
        ClipShareRow,
        and_(ClipShareRow.sha256 == ClipRow.sha256, ClipShareRow.commune == (commune or "")),
    )


def clip_url(base_url: str, sha256: str) -> str:
    """Where devices fetch a clip (controller.radio.clip_server's route)."""
    return f"{base_url.rstrip('/')}/api/clips/{sha256}"


class ClipLibrary:
    """Clips in ``clip_dir`` (served at ``/api/clips/{sha256}``) and their rows."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        clip_dir: Path,
        *,
        settings: ClipSettings | None = None,
        speech: SpeechEngine | None = None,
        clock: Clock = wall_ms,
    ) -> None:
        self.sessions = sessions
        self.clip_dir = clip_dir
        self.settings = settings or ClipSettings()
        self.speech = speech or EspeakEngine()
        self.clock = clock

    def upload(
        self,
        source: BinaryIO | Path,
        *,
        title: str,
        created_by: str,
        progress: Progress | None = None,
        filename: str | None = None,
        commune: str | None = None,
    ) -> ClipInfo:
        """Prepare an uploaded file (a path, or a stream such as a request body).

        A stream is spooled to a file first, stopping one byte past the size
        limit so that preparation refuses it with its own message without the
        disk filling up. ``progress`` gets fractions from 0 to 1. A refusal names
        the file as ``filename`` (the uploader's name for it), else by its own name
        or, for a stream, by its title. It goes into ``commune``'s library (the
        uploader's; None: the province's).
        """
        title = _title(title)
        if isinstance(source, Path):
            name = filename or source.name
            prepared = prepare(source, self.clip_dir, self.settings, progress, name=name)
        else:
            with tempfile.TemporaryDirectory(prefix=".upload-", dir=self._dir()) as tmp:
                spooled = Path(tmp) / "upload"
                with spooled.open("wb") as out:
                    _copy_at_most(source, out, self.settings.max_input_bytes + 1)
                prepared = prepare(
                    spooled, self.clip_dir, self.settings, progress, name=filename or title
                )
        return self._record(
            prepared, title=title, source="upload", text=None, by=created_by, commune=commune
        )

    def say(
        self,
        text: str,
        *,
        created_by: str,
        title: str = "",
        lang: str = "vi",
        commune: str | None = None,
    ) -> ClipInfo:
        """A clip of ``text`` spoken by the site's speech engine (offline)."""
        if any(c not in "\n\t" and not c.isprintable() for c in text):
            raise Invalid(
                "text_control_chars",
                "Văn bản có ký tự điều khiển: chỉ dùng chữ, số, dấu câu và xuống dòng",
                "The text has control characters: use letters, digits, punctuation and new lines",
            )
        prepared = speak_to_clip(text, self.speech, self._dir(), self.settings, lang)
        label = _title(title or " ".join(text.split())[:80])
        return self._record(
            prepared, title=label, source="tts", text=text, by=created_by, lang=lang,
            commune=commune,
        )  # fmt: skip

    def _dir(self) -> Path:
        self.clip_dir.mkdir(parents=True, exist_ok=True)
        return self.clip_dir

    def _record(
        self,
        clip: PreparedClip,
        *,
        title: str,
        source: str,
        text: str | None,
        by: str,
        lang: str = "vi",
        commune: str | None = None,
    ) -> ClipInfo:
        with self.sessions.begin() as session:
            row = session.get(ClipRow, clip.sha256, with_for_update=True)
            if row is not None:  # the same audio again is the clip already there
                return self._entry_for(session, row, commune, title=title, by=by)
            row = ClipRow(
                sha256=clip.sha256,
                title=title,
                duration_ms=clip.duration_ms,
                format=clip.codec,
                size_bytes=clip.bytes,
                source=source,
                text=text,
                lang=lang,
                created_by=by,
                created_ms=self.clock(),
                commune=commune,
            )
            session.add(row)
            session.flush()
            return ClipInfo.of(row)

    def _entry_for(
        self, session: Session, row: ClipRow, commune: str | None, *, title: str, by: str
    ) -> ClipInfo:
        """Audio already stored, uploaded again by ``commune``: the entry it reads, made
        when it has none (the province's upload makes the clip the province's, and the
        commune that had it keeps its entry)."""
        share = session.get(ClipShareRow, (row.sha256, commune or ""))
        if share is not None or tenancy.sees(commune, row.commune):
            return ClipInfo.of(row, share)
        now = self.clock()
        if commune is None:  # the province takes it into its library, for every commune
            assert row.commune is not None
            kept = ClipShareRow(sha256=row.sha256, commune=row.commune, title=row.title,
                                created_by=row.created_by, created_ms=row.created_ms)  # fmt: skip
            session.add(kept)
            row.commune, row.title, row.created_by, row.created_ms = None, title, by, now
            session.flush()
            return ClipInfo.of(row)
        if row.commune is None:  # the province's: every commune's already
            return ClipInfo.of(row)
        share = ClipShareRow(sha256=row.sha256, commune=commune, title=title, created_by=by,
                             created_ms=now)  # fmt: skip
        session.add(share)
        session.flush()
        return ClipInfo.of(row, share)

    @staticmethod
    def holders(session: Session, sha256: str) -> list[str | None]:
        """Every commune with a library entry for a clip: its owner, then the shares."""
        owner = session.scalar(select(ClipRow.commune).where(ClipRow.sha256 == sha256))
        shared = session.scalars(select(ClipShareRow.commune).where(ClipShareRow.sha256 == sha256))
        return [owner, *shared]

    def get(self, sha256: str, commune: str | None = None) -> ClipInfo:
        """A clip ``commune`` may play (None: the province, any); another commune's is
        not found, as if it were not there."""
        with self.sessions() as session:
            found = session.execute(
                _with_share(commune).where(ClipRow.sha256 == sha256, _readable(commune))
            ).first()
            if found is None:
                raise clip_not_found(sha256)
            return ClipInfo.of(found[0], found[1])

    def clips(self, commune: str | None = None) -> list[ClipInfo]:
        """The clips ``commune`` may play, newest first (None: every clip)."""
        with self.sessions() as session:
            rows = session.execute(
                _with_share(commune).where(_readable(commune)).order_by(ClipRow.created_ms.desc())
            )
            return [ClipInfo.of(row, share) for row, share in rows]

    def choices(self, commune: str | None = None, limit: int = CLIP_CHOICES) -> list[ClipInfo]:
        """What a form's clip list offers: the newest ``limit`` clips ``commune`` may play,
        its own first (a province's library holds every commune's clips)."""
        own = ClipRow.commune.is_(None) if commune is None else ClipRow.commune == commune
        with self.sessions() as session:
            rows = session.execute(
                _with_share(commune)
                .where(_readable(commune))
                .order_by(case((own, 0), else_=1), ClipRow.created_ms.desc(), ClipRow.sha256)
                .limit(limit)
            )
            return [ClipInfo.of(row, share) for row, share in rows]

    def titles(self, shas: Iterable[str], commune: str | None = None) -> dict[str, str]:
        """The titles of these clips as ``commune`` names them (those it may play)."""
        with self.sessions() as session:
            rows = session.execute(
                _with_share(commune).where(_readable(commune), ClipRow.sha256.in_(set(shas)))
            )
            return {row.sha256: ClipInfo.of(row, share).title for row, share in rows}

    def page(
        self, page: int, per_page: int, commune: str | None = None
    ) -> tuple[list[ClipInfo], int]:
        """One page of the clips ``commune`` may play, newest first, and how many there
        are in all."""
        with self.sessions() as session:
            total = session.scalar(
                select(func.count()).select_from(
                    _with_share(commune).where(_readable(commune)).subquery()
                )
            )
            rows = session.execute(
                _with_share(commune)
                .where(_readable(commune))
                .order_by(ClipRow.created_ms.desc(), ClipRow.sha256)
                .offset((page - 1) * per_page)
                .limit(per_page)
            )
            return [ClipInfo.of(row, share) for row, share in rows], total or 0

    def ref(self, sha256: str, base_url: str, commune: str | None = None) -> ClipRef:
        """The clip as a command or a schedule names it."""
        clip = self.get(sha256, commune)
        return ClipRef(
            sha256=clip.sha256,
            url=clip_url(base_url, clip.sha256),
            bytes=clip.size_bytes,
            duration_ms=clip.duration_ms,
        )

    def delete(self, sha256: str, commune: str | None = None) -> None:
        """Remove ``commune``'s entry for a clip (None: the province removes the clip).

        The file goes with the last entry, and only when no schedule entry, bulletin or
        station names it; broadcasts keep their history. A commune removing its entry
        while another commune keeps one leaves the clip to that commune, refused only
        while its own entries or stations use it. A province clip is refused to a
        commune (403): the province's are the province's to delete."""
        with self.sessions.begin() as session:
            row = session.get(ClipRow, sha256, with_for_update=True)
            if row is None:
                raise clip_not_found(sha256)
            shares = list(
                session.scalars(
                    select(ClipShareRow)
                    .where(ClipShareRow.sha256 == sha256)
                    .order_by(ClipShareRow.created_ms, ClipShareRow.commune)
                )
            )
            own = next((sh for sh in shares if sh.commune == commune), None)
            if commune is not None and own is None and row.commune != commune:
                if row.commune is None:
                    raise province_clip(sha256)
                raise clip_not_found(sha256)
            if commune is not None and (own is not None or len(shares) > 0):
                _refuse_in_use(session, sha256, commune)
                if own is not None:
                    session.delete(own)
                else:  # the next commune's entry becomes the clip's
                    heir = shares[0]
                    row.commune, row.title = heir.commune, heir.title
                    row.created_by, row.created_ms = heir.created_by, heir.created_ms
                    session.delete(heir)
                return
            _refuse_in_use(session, sha256, None)
            session.delete(row)
        for path in self.clip_dir.glob(f"{sha256}.*"):
            path.unlink(missing_ok=True)


def _refuse_in_use(session: Session, sha256: str, commune: str | None) -> None:
    """Refuse while schedule entries, bulletins or a station use the clip (``commune``:
    only that commune's entries, bulletins and stations count, for removing its entry
    alone)."""
    entries = select(func.count()).select_from(ScheduleRow).where(ScheduleRow.clip_sha256 == sha256)
    stations = select(RelayStationRow.name).where(RelayStationRow.fallback_sha256 == sha256)
    bulletins = (
        select(func.count()).select_from(BulletinRow).where(BulletinRow.clip_sha256 == sha256)
    )
    if commune is not None:
        entries = entries.where(ScheduleRow.commune == commune)
        stations = stations.where(RelayStationRow.commune == commune)
        bulletins = bulletins.where(BulletinRow.commune == commune)
    used = session.scalar(entries)
    used_by_bulletin = session.scalar(bulletins)
    by_station = session.scalar(stations.limit(1))
    if by_station is not None:
        raise Conflict(
            "clip_in_use",
            f"Tệp âm thanh đang là tệp phát thay khi mất sóng của đài «{by_station}»: "
            "đổi tệp của đài trước khi xoá",
            f"The clip is the fallback of station «{by_station}»: change the "
            "station's clip before deleting it",
        )
    if used or used_by_bulletin:
        raise Conflict(
            "clip_in_use",
            f"Tệp âm thanh đang được dùng trong {used or 0} lịch phát và "
            f"{used_by_bulletin or 0} bản tin: gỡ khỏi lịch trước khi xoá",
            f"The clip is used by {used or 0} schedule entries and "
            f"{used_by_bulletin or 0} bulletins: remove it from them first",
        )


def _title(title: str) -> str:
    cleaned = " ".join(title.split())
    if not cleaned:
        raise Invalid("empty_title", "Cần đặt tên cho tệp âm thanh", "The clip needs a title")
    if len(cleaned) > MAX_TITLE:
        raise Invalid(
            "title_too_long",
            f"Tên quá dài ({len(cleaned)} ký tự), tối đa {MAX_TITLE}",
            f"The title is too long ({len(cleaned)} characters), at most {MAX_TITLE}",
        )
    return cleaned


def _copy_at_most(src: BinaryIO, dst: BinaryIO, limit: int) -> None:
    left = limit
    while left > 0 and (chunk := src.read(min(COPY_CHUNK, left))):
        dst.write(chunk)
        left -= len(chunk)
    dst.flush()
    os.fsync(dst.fileno())
