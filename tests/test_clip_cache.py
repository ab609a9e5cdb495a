"""The edge's clip cache against a real HTTP server with Range and device auth."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fastapi import FastAPI, Request

from broadcast.cache import ClipCache, ClipUnavailable
from broadcast.fetch import HttpFetcher
from controller.radio.clip_server import clip_router
from protocol.commands import ClipRef
from tests.http_helpers import serve

USERS = {"loa-1": "secret-1"}


@pytest.fixture
def server(tmp_path):
    clips = tmp_path / "served"
    clips.mkdir()
    seen: list[dict[str, str]] = []
    app = FastAPI()

    @app.middleware("http")
    async def record(request: Request, call_next):
        seen.append(dict(request.headers))
        return await call_next(request)

    app.include_router(clip_router(clips, lambda u, p: USERS.get(u) == p))
    with serve(app) as base:
        yield base, clips, seen


def publish_clip(clips: Path, base: str, data: bytes) -> ClipRef:
    sha = hashlib.sha256(data).hexdigest()
    (clips / f"{sha}.mp3").write_bytes(data)
    return ClipRef(sha256=sha, url=f"{base}/api/clips/{sha}", bytes=len(data), duration_ms=1000)


def cache(tmp_path, password="secret-1", budget=10**9, faults=None):
    return ClipCache(
        tmp_path / "cache",
        HttpFetcher("loa-1", password, timeout_s=5),
        budget_bytes=budget,
        on_fault=(lambda sha, why: faults.append(why)) if faults is not None else lambda s, w: None,
    )


def test_download_verify_and_reuse(tmp_path, server):
    base, clips, seen = server
    ref = publish_clip(clips, base, os.urandom(300_000))
    c = cache(tmp_path)
    path = c.ensure(ref)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ref.sha256
    requests = len(seen)
    assert c.ensure(ref) == path and len(seen) == requests  # served from the cache
    assert c.stats() == {"count": 1, "bytes": 300_000}


def test_wrong_credentials_are_refused(tmp_path, server):
    base, clips, _ = server
    ref = publish_clip(clips, base, b"x" * 1000)
    with pytest.raises(ClipUnavailable, match="401"):
        cache(tmp_path, password="wrong").ensure(ref)


def test_broken_download_resumes_with_range(tmp_path, server):
    base, clips, seen = server
    data = os.urandom(200_000)
    ref = publish_clip(clips, base, data)
    c = cache(tmp_path)
    (c.dir / f"{ref.sha256}.part").write_bytes(data[:123_456])  # what a 4G drop left behind
    path = c.ensure(ref)
    assert path.read_bytes() == data
    assert seen[-1]["range"] == "bytes=123456-"


def test_a_partial_file_that_is_not_a_prefix_is_not_kept(tmp_path, server):
    base, clips, _ = server
    data = os.urandom(50_000)
    ref = publish_clip(clips, base, data)
    c = cache(tmp_path)
    (c.dir / f"{ref.sha256}.part").write_bytes(os.urandom(10_000))
    with pytest.raises(ClipUnavailable, match="do not match"):
        c.ensure(ref)
    assert c.ensure(ref).read_bytes() == data  # the next try starts clean


def test_corrupted_cached_clip_is_detected_and_fetched_again(tmp_path, server):
    base, clips, _ = server
    data = os.urandom(100_000)
    ref = publish_clip(clips, base, data)
    faults: list[str] = []
    c = cache(tmp_path, faults=faults)
    path = c.ensure(ref)
    flipped = bytearray(path.read_bytes())
    flipped[5000] ^= 0xFF
    path.write_bytes(bytes(flipped))
    assert c.verified(ref) is None and not path.exists()  # never handed to the player
    assert faults == ["corrupt"]
    assert c.ensure(ref).read_bytes() == data


def test_server_bytes_that_do_not_hash_are_refused(tmp_path, server):
    base, clips, _ = server
    data = os.urandom(5000)
    ref = publish_clip(clips, base, data)
    (clips / f"{ref.sha256}.mp3").write_bytes(os.urandom(5000))  # the server's copy went bad
    faults: list[str] = []
    with pytest.raises(ClipUnavailable):
        cache(tmp_path, faults=faults).ensure(ref)
    assert faults == ["hash_mismatch"]
    assert not list((tmp_path / "cache").glob("*.clip"))


def test_eviction_keeps_the_budget_and_every_scheduled_clip(tmp_path, server):
    base, clips, _ = server
    refs = [publish_clip(clips, base, os.urandom(10_000)) for _ in range(5)]
    c = cache(tmp_path, budget=25_000)
    for i, ref in enumerate(refs):
        p = c.ensure(ref)
        os.utime(p, (1000 + i, 1000 + i))  # oldest first
    keep = {refs[0].sha256, refs[1].sha256}
    removed = c.evict(keep)
    # oldest first, skipping the scheduled ones, until under the budget
    assert removed == [refs[2].sha256, refs[3].sha256, refs[4].sha256]
    assert c.has(refs[0]) and c.has(refs[1])
    assert c.stats()["bytes"] == 20_000 <= c.budget_bytes


def test_prefetch_fetches_in_the_background(tmp_path, server):
    base, clips, _ = server
    refs = [publish_clip(clips, base, os.urandom(20_000)) for _ in range(3)]
    c = cache(tmp_path)
    c.prefetch(refs)
    c.wait_prefetched()
    assert all(c.has(r) for r in refs)
    c.close()


@pytest.mark.parametrize("bad", ["abc", "../../etc/passwd", "A" * 64])
def test_clip_server_refuses_bad_ids(tmp_path, server, bad):
    import urllib.error
    import urllib.request

    base, _, _ = server
    req = urllib.request.Request(
        f"{base}/api/clips/{bad}", headers={"Authorization": "Basic bG9hLTE6c2VjcmV0LTE="}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code in (404, 422)
