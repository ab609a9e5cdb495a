"""The clip library on both databases: real ffmpeg, real espeak-ng, real files."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from broadcast.audio.clips import ClipError
from controller.db.engine import make_engine, session_factory, upgrade
from controller.radio.clip_library import ClipLibrary, Invalid, NotFound
from tests.audio_helpers import dominant_hz, read_samples, tone_file


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def library(sessions: sessionmaker[Session], tmp_path: Path) -> ClipLibrary:
    return ClipLibrary(sessions, tmp_path / "clips")


def test_an_upload_is_prepared_stored_by_hash_and_recorded_once(
    library: ClipLibrary, tmp_path: Path
) -> None:
    src = tone_file(tmp_path / "tone.mp3", 440, 2.0, fmt="mp3", channels=2)
    seen: list[float] = []
    with src.open("rb") as stream:  # as a request body arrives
        clip = library.upload(
            stream, title="  Bản tin  sáng ", created_by="bt-1", progress=seen.append
        )
    path = library.clip_dir / f"{clip.sha256}.mp3"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == clip.sha256
    assert clip.size_bytes == path.stat().st_size and clip.format == "mp3"
    assert clip.title == "Bản tin sáng" and clip.source == "upload" and clip.created_by == "bt-1"
    assert abs(clip.duration_ms - 2000) < 60
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    rate, samples = read_samples(path)
    assert abs(dominant_hz(samples, rate) - 440) < 5
    # the same audio again, from a path this time: the same clip, one row
    again = library.upload(src, title="Another title", created_by="bt-2")
    assert again == clip
    assert [c.sha256 for c in library.clips()] == [clip.sha256]
    ref = library.ref(clip.sha256, "http://ctl:8080/")
    assert ref.url == f"http://ctl:8080/api/clips/{clip.sha256}" and ref.bytes == clip.size_bytes


def test_bad_audio_is_refused_with_its_bilingual_message(
    library: ClipLibrary, tmp_path: Path
) -> None:
    bad = tmp_path / "notice.mp3"
    bad.write_bytes(b"this is a text file with a .mp3 name\n" * 20)
    with pytest.raises(ClipError) as refused:
        library.upload(bad, title="Hỏng", created_by="bt-1")
    assert refused.value.code == "not_audio"
    assert str(refused.value).startswith("Tệp «notice.mp3»: Tệp không phải âm thanh")
    assert "Not an audio file" in str(refused.value)
    assert library.clips() == []
    assert not list(library.clip_dir.glob("*.mp3"))


def test_a_stream_over_the_size_limit_is_refused_without_filling_the_disk(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    from broadcast.audio.clips import ClipSettings

    small = ClipLibrary(sessions, tmp_path / "clips", settings=ClipSettings(max_input_bytes=1000))
    src = tone_file(tmp_path / "tone.wav", 440, 1.0)
    with src.open("rb") as stream, pytest.raises(ClipError) as refused:
        small.upload(stream, title="Lớn", created_by="bt-1")
    assert refused.value.code == "too_large" and "Tệp quá lớn" in str(refused.value)
    assert [p.name for p in small.clip_dir.iterdir()] == []  # the spooled copy is gone


def test_text_to_speech_makes_a_clip_that_keeps_its_text(library: ClipLibrary) -> None:
    text = "Thông báo: sáng mai xã tổ chức tiêm phòng cho gia súc."
    clip = library.say(text, created_by="bt-1")
    assert clip.source == "tts" and clip.text == text and clip.lang == "vi"
    assert clip.title.startswith("Thông báo") and clip.duration_ms > 1000
    assert (library.clip_dir / f"{clip.sha256}.mp3").is_file()
    with pytest.raises(ClipError) as empty:
        library.say("   ", created_by="bt-1")
    assert empty.value.code == "empty_text"
    # a NUL is refused before the speech engine and the database (PostgreSQL text cannot hold it)
    with pytest.raises(Invalid) as control:
        library.say("Thông báo\x00 khẩn", created_by="bt-1")
    assert control.value.code == "text_control_chars" and "điều khiển" in str(control.value)
    lines = "Dòng một\nDòng hai\tcột"
    assert library.say(lines, created_by="bt-1").text == lines


def test_titles_lookups_and_deletion(library: ClipLibrary, tmp_path: Path) -> None:
    src = tone_file(tmp_path / "tone.wav", 660, 1.0)
    with pytest.raises(Invalid) as untitled:
        library.upload(src, title="  ", created_by="bt-1")
    assert untitled.value.code == "empty_title"
    with pytest.raises(Invalid):
        library.upload(src, title="x" * 201, created_by="bt-1")
    clip = library.upload(src, title="Thử", created_by="bt-1")
    library.delete(clip.sha256)
    assert library.clips() == [] and not list(library.clip_dir.glob(f"{clip.sha256}.*"))
    with pytest.raises(NotFound) as gone:
        library.get(clip.sha256)
    assert "Không có tệp âm thanh" in str(gone.value) and "No clip" in str(gone.value)
