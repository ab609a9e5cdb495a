"""The clip library over HTTP: list, upload, text to speech, delete, and a preview.

Devices fetch clips at GET /api/clips/{sha256} (controller.radio.clip_server, device
credentials); people listen through /clips/{sha256}/audio with their session.
The upload reads the multipart body itself, after checking Content-Length, so
an oversized file is refused before a byte of it is stored; preparation
(ffmpeg) runs in a worker thread. The page shows the upload's progress from
XMLHttpRequest events (static/clips.js).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from controller import i18n
from controller.auth.audit import audit
from controller.auth.roles import Permission, Principal
from controller.deps import DbSession, StationDep, require
from controller.radio.clip_library import ClipInfo
from controller.radio.station import Station, refused_as_http
from controller.web.paging import PER_PAGE, Pager, clamp, page_number
from controller.web.routes import ErrorBody, error_responses, render

router = APIRouter(tags=["clips"])
Editor = Annotated[Principal, Depends(require(Permission.MANAGE_CLIPS))]
Sha = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
UPLOAD_OVERHEAD = 64 * 1024  # multipart headers and the title field
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "ogg": "audio/ogg", "wav": "audio/wav"}

i18n.register(
    {
        "nav.clips": ("Thư viện âm thanh", "Clip library"),
        "clips.title": ("Thư viện âm thanh", "Clip library"),
        "clips.upload": ("Tải lên tệp âm thanh", "Upload a clip"),
        "clips.file": ("Tệp (mp3, wav, ogg, m4a…)", "File (mp3, wav, ogg, m4a…)"),
        "clips.name": ("Tên", "Title"),
        "clips.preparing": (
            "Đã tải lên, đang chuẩn hoá âm lượng…",
            "Uploaded; levelling the loudness…",
        ),
        "clips.tts": ("Tạo bản đọc từ văn bản", "Spoken notice from text"),
        "clips.text": ("Văn bản tiếng Việt", "Vietnamese text"),
        "clips.say": ("Tạo bản đọc", "Make the spoken clip"),
        "clips.duration": ("Thời lượng", "Duration"),
        "clips.source": ("Nguồn", "Source"),
        "clips.source.upload": ("Tệp tải lên", "Uploaded file"),
        "clips.source.tts": ("Đọc từ văn bản", "Text to speech"),
        "clips.listen": ("Nghe thử", "Listen"),
        "clips.delete": ("Xoá", "Delete"),
        "clips.empty": ("Thư viện chưa có tệp nào.", "The library is empty."),
        "clips.of_province": (
            "Của cấp tỉnh: xã được phát, không xoá",
            "The province's: yours to play, not to delete",
        ),
        "clips.added": ("Đã thêm «{title}».", "«{title}» added."),
        "clips.deleted": ("Đã xoá tệp âm thanh.", "The clip was deleted."),
        "clips.too_large": (
            "Tệp quá lớn: tối đa {mb} MB.",
            "The file is too large: at most {mb} MB.",
        ),
        "clips.length_required": (
            "Yêu cầu tải lên cần có Content-Length.",
            "An upload needs a Content-Length header.",
        ),
        "clips.no_file": (
            "Gửi tệp trong trường «file» của biểu mẫu multipart/form-data.",
            "Send the file in the «file» field of a multipart/form-data body.",
        ),
    }
)

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "title"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    },
                }
            }
        },
    }
}
UPLOAD_ERRORS = error_responses(401, 403, 422) | {
    411: {"model": ErrorBody, "description": "No Content-Length"},
    413: {"model": ErrorBody, "description": "The file is over the size limit"},
}


class ClipOut(BaseModel):
    sha256: str
    title: str
    duration_ms: int
    format: str
    size_bytes: int
    source: Literal["upload", "tts"]
    text: str | None
    lang: str
    created_by: str
    created_ms: int
    commune: str | None = None  # whose library entry (None: the province's, every commune's)

    @classmethod
    def of(cls, clip: ClipInfo) -> ClipOut:
        return cls(**vars(clip))


class SayIn(BaseModel):
    text: Annotated[str, Field(min_length=1, max_length=5000)]
    title: Annotated[str, Field(max_length=200)] = ""
    lang: Literal["vi", "en"] = "vi"


def _audit(db: DbSession, who: Principal, action: str, clip: ClipInfo) -> None:
    details = {"title": clip.title, "duration_ms": clip.duration_ms, "source": clip.source}
    audit(db, who, action, f"clip:{clip.sha256}", details)
    db.commit()


def upload(
    station: Station, db: DbSession, who: Principal, file: UploadFile, title: str
) -> ClipInfo:
    with refused_as_http():
        clip = station.library.upload(
            file.file,
            title=title,
            created_by=who.name,
            filename=file.filename,
            commune=who.commune,
        )
    _audit(db, who, "clip.upload", clip)
    return clip


def say(station: Station, db: DbSession, who: Principal, body: SayIn) -> ClipInfo:
    with refused_as_http():
        clip = station.library.say(
            body.text, created_by=who.name, title=body.title, lang=body.lang, commune=who.commune
        )
    _audit(db, who, "clip.say", clip)
    return clip


def delete(station: Station, db: DbSession, who: Principal, sha256: str) -> ClipInfo:
    with refused_as_http():
        clip = station.library.get(sha256, who.commune)
        station.library.delete(sha256, who.commune)
    _audit(db, who, "clip.delete", clip)
    return clip


async def _upload_form(request: Request, station: Station) -> tuple[UploadFile, str]:
    """The multipart body's file and title, once its declared size is under the limit."""
    limit = station.library.settings.max_input_bytes
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        raise i18n.Refusal(411, "clips.length_required")
    if int(length) > limit + UPLOAD_OVERHEAD:
        raise i18n.Refusal(413, "clips.too_large", mb=limit // 1_000_000)
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=64 * 1024)
    except (MultiPartException, ValueError, AssertionError):
        raise i18n.Refusal(422, "clips.no_file") from None
    file, title = form.get("file"), form.get("title")
    if not isinstance(file, UploadFile) or not isinstance(title, str):
        raise i18n.Refusal(422, "clips.no_file")
    return file, title


@router.get("/api/clips", response_model=list[ClipOut], responses=error_responses(401, 403))
def api_clips(station: StationDep, who: Editor) -> list[ClipOut]:
    """Every clip of the library, newest first (a commune user: their commune's and the
    province's, which every commune may play)."""
    return [ClipOut.of(c) for c in station.library.clips(who.commune)]


@router.post(
    "/api/clips",
    response_model=ClipOut,
    status_code=201,
    responses=UPLOAD_ERRORS,
    openapi_extra=UPLOAD_BODY,
)
async def api_upload(request: Request, station: StationDep, db: DbSession, who: Editor) -> Any:
    """Upload audio (multipart: file, title); it is prepared for the speakers (loudness,
    format) and named by its sha256. The same audio twice is one clip."""
    file, title = await _upload_form(request, station)
    return ClipOut.of(await run_in_threadpool(upload, station, db, who, file, title))


@router.post(
    "/api/clips/tts",
    response_model=ClipOut,
    status_code=201,
    responses=error_responses(401, 403, 422),
)
def api_say(body: SayIn, station: StationDep, db: DbSession, who: Editor) -> ClipOut:
    """A spoken clip of a text, made offline by the site's speech engine."""
    return ClipOut.of(say(station, db, who, body))


@router.delete(
    "/api/clips/{sha256}",
    response_model=ClipOut,
    responses=error_responses(401, 403, 404, 409, 422),
)
def api_delete(sha256: Sha, station: StationDep, db: DbSession, who: Editor) -> ClipOut:
    """Delete a clip that no schedule entry or bulletin uses (409 otherwise). A commune
    user removes their commune's entry; a province clip is the province's (403)."""
    return ClipOut.of(delete(station, db, who, sha256))


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
    page = page_number(request.query_params.get("page"))
    clips, total = station.library.page(page, PER_PAGE, commune)
    if not clips and total:
        page = clamp(page, PER_PAGE, total)
        clips, total = station.library.page(page, PER_PAGE, commune)
    return render(
        request,
        "clips.html",
        status_code=status_code,
        error=error,
        done=done,
        clips=clips,
        pager=Pager(page, PER_PAGE, total, tuple(request.query_params.items()), path="/clips"),
        max_mb=station.library.settings.max_input_bytes // 1_000_000,
        viewer_commune=commune,
    )


@router.get("/clips", response_class=HTMLResponse, include_in_schema=False)
def clips_page(request: Request, station: StationDep, who: Editor) -> Response:
    return _page(request, station, done=request.query_params.get("done", "")[:20])


@router.get("/clips/{sha256}/audio", include_in_schema=False)
def clip_audio(sha256: Sha, station: StationDep, who: Editor) -> Response:
    """The prepared file, for the page's player (Range works, as for devices)."""
    with refused_as_http():
        clip = station.library.get(sha256, who.commune)
    matches = sorted(station.library.clip_dir.glob(f"{sha256}.*"))
    if not matches:
        raise i18n.Refusal(404, "error.not_found")
    return FileResponse(matches[0], media_type=MEDIA_TYPES.get(clip.format, "audio/mpeg"))


@router.post("/clips/tts", include_in_schema=False)
def page_say(
    *,
    request: Request,
    station: StationDep,
    db: DbSession,
    who: Editor,
    text: Annotated[str, Form(max_length=5000)] = "",
    title: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    try:
        say(station, db, who, SayIn.model_validate({"text": text or " ", "title": title}))
    except i18n.Refusal as refused:
        return _page(request, station, refused.status, refused)
    return RedirectResponse("/clips?done=added", status_code=303)


@router.post("/clips/{sha256}/delete", include_in_schema=False)
def page_delete(
    request: Request, sha256: Sha, station: StationDep, db: DbSession, who: Editor
) -> Response:
    try:
        delete(station, db, who, sha256)
    except i18n.Refusal as refused:
        return _page(request, station, refused.status, refused)
    return RedirectResponse("/clips?done=deleted", status_code=303)
