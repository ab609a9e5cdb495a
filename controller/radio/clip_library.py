"""The clip library: uploads and spoken notices, prepared once, stored by sha256.

Preparation is broadcast.audio.clips' (probe, two-pass loudnorm, one delivery
format), written straight into the directory that controller.radio.clip_server
hands to devices. A clip's name is the sha256 of the prepared file, so the
same upload twice is one clip and one row. Audio that cannot be a clip is
refused with broadcast.audio.clips' ``ClipError``, whose message is bilingual.

``ServiceError`` (and its kinds) is the error of every broadcasting service
here and in scheduling, broadcasting and bulletins: routes map ``NotFound`` to
404, ``Conflict`` to 409 and ``Invalid`` to 422.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from broadcast.audio.clip_preparation import Progress, prepare
from broadcast.audio.clips import ClipSettings, PreparedClip
from broadcast.audio.tts import EspeakEngine, SpeechEngine, speak_to_clip
from controller.db.broadcast_tables import BulletinRow, ClipRow, RelayStationRow, ScheduleRow
from plumbing.clock import wall_ms
from protocol.commands import ClipRef

Clock = Callable[[], int]
COPY_CHUNK = 1 << 20
MAX_TITLE = 200


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

    @classmethod
    def of(cls, row: ClipRow) -> ClipInfo:
        return cls(
            row.sha256,
            row.title,
            row.duration_ms,
            row.format,
            row.size_bytes,
            row.source,
            row.text,
            row.lang,
            row.created_by,
            row.created_ms,
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
    ) -> ClipInfo:
        """Prepare an uploaded file (a path, or a stream such as a request body).

        A stream is spooled to a file first, stopping one byte past the size
        limit so that preparation refuses it with its own message without the
        disk filling up. ``progress`` gets fractions from 0 to 1. A refusal names
        the file as ``filename`` (the uploader's name for it), else by its own name
        or, for a stream, by its title.
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
        return self._record(prepared, title=title, source="upload", text=None, by=created_by)

    def say(self, text: str, *, created_by: str, title: str = "", lang: str = "vi") -> ClipInfo:
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
            prepared, title=label, source="tts", text=text, by=created_by, lang=lang
        )

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
    ) -> ClipInfo:
        with self.sessions.begin() as session:
            row = session.get(ClipRow, clip.sha256)
            if row is None:  # the same audio again is the clip already there
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
                )
                session.add(row)
                session.flush()
            return ClipInfo.of(row)

    def get(self, sha256: str) -> ClipInfo:
        with self.sessions() as session:
            row = session.get(ClipRow, sha256)
            if row is None:
                raise clip_not_found(sha256)
            return ClipInfo.of(row)

    def clips(self) -> list[ClipInfo]:
        with self.sessions() as session:
            rows = session.scalars(select(ClipRow).order_by(ClipRow.created_ms.desc()))
            return [ClipInfo.of(row) for row in rows]

    def page(self, page: int, per_page: int) -> tuple[list[ClipInfo], int]:
        """One page of the clips, newest first, and how many there are in all."""
        with self.sessions() as session:
            total = session.scalar(select(func.count()).select_from(ClipRow)) or 0
            rows = session.scalars(
                select(ClipRow)
                .order_by(ClipRow.created_ms.desc(), ClipRow.sha256)
                .offset((page - 1) * per_page)
                .limit(per_page)
            )
            return [ClipInfo.of(row) for row in rows], total

    def ref(self, sha256: str, base_url: str) -> ClipRef:
        """The clip as a command or a schedule names it."""
        clip = self.get(sha256)
        return ClipRef(
            sha256=clip.sha256,
            url=clip_url(base_url, clip.sha256),
            bytes=clip.size_bytes,
            duration_ms=clip.duration_ms,
        )

    def delete(self, sha256: str) -> None:
        """Delete a clip no schedule entry or bulletin names; broadcasts keep their history."""
        with self.sessions.begin() as session:
            row = session.get(ClipRow, sha256)
            if row is None:
                raise clip_not_found(sha256)
            used = session.scalar(
                select(func.count())
                .select_from(ScheduleRow)
                .where(ScheduleRow.clip_sha256 == sha256)
            )
            used_by_bulletin = session.scalar(
                select(func.count())
                .select_from(BulletinRow)
                .where(BulletinRow.clip_sha256 == sha256)
            )
            by_station = session.scalar(
                select(RelayStationRow.name).where(RelayStationRow.fallback_sha256 == sha256)
            )
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
            session.delete(row)
        for path in self.clip_dir.glob(f"{sha256}.*"):
            path.unlink(missing_ok=True)


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
