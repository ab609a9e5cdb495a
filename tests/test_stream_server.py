"""The stream server: a real Icecast that admits devices with their own credentials alone.

Icecast asks the controller about every listener (URL listener
authentication on its default mount); the controller checks the device's
user name and password against the site's registry, as it does for clip
downloads. A real ffmpeg sources a tone as the controller's live sessions
do; listeners are plain HTTP clients and the speaker's own relay.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from broadcast.audio.request import PlayRequest
from broadcast.fetch import basic_authorization
from cli.brokers.icecast import Icecast, IcecastError
from controller.radio.streams import (
    LISTENER_AUTH_PATH,
    StreamServer,
    StreamServerError,
    configured_stream_server,
)
from controller.settings import SettingsError, load_settings
from controller.site.directory import Site
from tests.audio_helpers import dominant_hz, read_samples
from tests.broadcast_api_helpers import Ctl
from tests.player_helpers import Rig
from tests.stream_helpers import StreamRig, device_credentials, rig_fixture

TONE_HZ = 660.0


@pytest.fixture
def rig(tmp_path: Path, site: Site, broker: Any) -> Iterator[StreamRig]:
    yield from rig_fixture(tmp_path, site, broker.port)


def pull(rig: StreamRig, mount: str, auth: tuple[str, str] | None, out: Path) -> int:
    """GET the mount as a listener; keep about a second of what it sends in ``out``."""
    with httpx.stream("GET", rig.streams.listener_url(mount), auth=auth, timeout=30) as resp:
        if resp.status_code == 200:
            with out.open("wb") as f:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
                    if f.tell() > 12_000:
                        break
        return resp.status_code


def test_a_device_is_admitted_and_anonymous_or_wrong_listeners_are_refused(
    rig: StreamRig, site: Site, tmp_path: Path
) -> None:
    mount = rig.streams.new_mount()
    rig.source_tone(mount, TONE_HZ, 120)
    loa1 = device_credentials(site, "loa-1")
    rig.wait_mount(mount, loa1)

    heard = tmp_path / "heard.ogg"
    assert pull(rig, mount, loa1, heard) == 200
    rate, x = read_samples(heard)
    assert abs(dominant_hz(x[rate // 10 :], rate) - TONE_HZ) < 5  # the source's own audio

    user, password = loa1
    refused = {
        "anonymous": None,
        "wrong password": (user, password + "x"),
        "no such device": ("loa-99", password),
        "another device's password": ("loa-2", password),
        "the controller's broker account": site.controller_credentials(),
        "the source password": ("source", rig.icecast.source_password),
    }
    for why, auth in refused.items():
        assert pull(rig, mount, auth, tmp_path / "refused.ogg") == 401, why
    assert pull(rig, mount, device_credentials(site, "loa-2"), heard) == 200


def test_the_source_password_is_the_controllers_alone(rig: StreamRig, site: Site) -> None:
    """A source with a device's password (or none) is refused: only the controller airs."""
    _, password = device_credentials(site, "loa-1")
    mount = rig.streams.new_mount()
    for wrong in (password, ""):
        bad = StreamServer(rig.streams.url, wrong or "x")
        argv = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=d=2"]
        argv += ["-c:a", "libopus", "-content_type", "audio/ogg", "-f", "ogg"]
        argv += [bad.source_url(mount)]
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
        )
        assert done.returncode != 0
        assert b"401" in done.stderr or b"Unauthorized" in done.stderr, done.stderr


def test_the_speakers_relay_pulls_with_the_devices_credentials(
    rig: StreamRig, site: Site, tmp_path: Path
) -> None:
    """``broadcast.stream`` with ``device_auth``: the player's ffmpeg sends the device's
    Basic credentials and airs the mount; without them it is refused and airs nothing."""
    mount = rig.streams.new_mount()
    rig.source_tone(mount, TONE_HZ, 120)
    creds = device_credentials(site, "loa-1")
    rig.wait_mount(mount, creds)
    url = rig.streams.listener_url(mount)
    player = Rig(tmp_path / "player")
    try:
        player.player.submit(
            PlayRequest("none", "command", 2, 3000, stream_url=url, stream_auth=None)
        )
        kind, body = player.events.ended("none", timeout_s=60)
        assert kind == "play.missed" and body["reason"] == "stream_unreachable"
        assert "401" in body["error"]

        auth = basic_authorization(*creds)
        player.player.submit(
            PlayRequest("dev", "command", 2, 10_000, stream_url=url, stream_auth=auth)
        )
        kind, body = player.events.ended("dev", timeout_s=60)
        assert kind == "play.finished" and body["outcome"] == "completed", body
    finally:
        player.player.close()
    _, x = player.recording("dev")
    # its end stays at submit + 10 s however long the connection took: seconds aired
    assert body["relayed_ms"] > 3000 and abs(len(x) / 48 - body["played_ms"]) < 100
    assert abs(dominant_hz(np.asarray(x[4800:], dtype=np.float64), 48_000) - TONE_HZ) < 5


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"action=listener_add",
        b"action=listener_add&user=loa-1",
        b"action=mount_add&user=loa-1&pass=whatever",
        b"action=listener_add&user=loa-1&user=loa-2&pass=x",
        b"action=listener_add&" + b"x=1&" * 3000,
        b"%%%&&&===",
    ],
)
def test_listener_auth_refuses_bad_requests_without_an_error(offline: Ctl, body: bytes) -> None:
    resp = offline.client.post(
        LISTENER_AUTH_PATH,
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200  # Icecast reads the headers; a 500 would be logged as one
    assert "icecast-auth-user" not in resp.headers
    assert resp.headers["icecast-auth-message"]


def test_listener_auth_admits_a_registered_device(offline: Ctl, site: Site) -> None:
    user, password = device_credentials(site, "loa-3")
    form = {"action": "listener_add", "mount": "/live-1.ogg", "user": user, "pass": password}
    resp = offline.client.post(LISTENER_AUTH_PATH, data=form)
    assert resp.headers["icecast-auth-user"] == "1"
    resp = offline.client.post(LISTENER_AUTH_PATH, data={**form, "pass": password[:-1]})
    assert "icecast-auth-user" not in resp.headers


def test_stream_settings_refuse_what_cannot_work(tmp_path: Path) -> None:
    config = tmp_path / "controller.toml"
    config.write_text('[stream]\nurl = "ftp://radio.example"\n', encoding="utf-8")
    with pytest.raises(SettingsError, match=r"\[stream\].*url|url"):
        load_settings(config)
    config.write_text('[stream]\nurl = "http://127.0.0.1:8000"\n', encoding="utf-8")
    settings = load_settings(config)
    with pytest.raises(SettingsError, match=r"icecast\.source.*source_password_file"):
        configured_stream_server(settings)
    (tmp_path / "icecast.source").write_bytes(b"\xff\xfe")
    with pytest.raises(SettingsError, match="not text"):
        configured_stream_server(settings)
    (tmp_path / "icecast.source").write_text("\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="password is empty"):
        configured_stream_server(settings)
    (tmp_path / "icecast.source").write_text("bi-mat\n", encoding="utf-8")
    server = configured_stream_server(settings)
    assert server is not None and server.source_password == "bi-mat"
    config.write_text("", encoding="utf-8")
    assert configured_stream_server(load_settings(config)) is None


def test_mount_names_and_urls() -> None:
    server = StreamServer("http://10.0.0.5:8000", "p@ss/w:rd")
    mount = server.new_mount()
    assert mount.startswith("/live-") and mount.endswith(".ogg")
    assert mount != server.new_mount()
    assert server.listener_url(mount) == "http://10.0.0.5:8000" + mount
    assert server.source_url(mount) == f"icecast://source:p%40ss%2Fw%3Ard@10.0.0.5:8000{mount}"
    for bad in ("live.ogg", "/../admin", "/a b.ogg", "/x?y=1"):
        with pytest.raises(StreamServerError, match="mount"):
            server.listener_url(bad)
    with pytest.raises(StreamServerError, match="letters and digits"):
        server.new_mount("../x")
    for url in ("https://x:1", "http://", "http://h:1/path", "icecast://h:1"):
        with pytest.raises(StreamServerError, match="http://host:port"):
            StreamServer(url, "p")


def test_the_runner_refuses_a_bad_auth_url_and_says_why_it_cannot_start(
    tmp_path: Path, rig: StreamRig
) -> None:
    with pytest.raises(IcecastError, match="listener-auth"):
        Icecast(tmp_path, "controller:8080/api/streams/listener-auth")
    taken = Icecast(tmp_path / "second", rig.base_url + LISTENER_AUTH_PATH, rig.icecast.port)
    with pytest.raises(IcecastError, match=r"icecast (exited|did not start)[\s\S]*--- "):
        taken.start(timeout_s=30)
    assert not taken.running
