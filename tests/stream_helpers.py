"""The stream server in tests: a real Icecast asking a real controller about each listener.

``StreamRig`` starts the controller (uvicorn, its services on the given
broker) with a ``[stream]`` section, then Icecast on a free port with its
listener authentication pointed at that controller. Sources are real ffmpeg
processes sending Opus/Ogg, as the controller's live sessions do.
"""

from __future__ import annotations

import subprocess
import time
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
from fastapi import FastAPI

from cli.brokers.icecast import Icecast
from cli.brokers.mosquitto import free_port
from controller.app import create_app
from controller.radio.streams import LISTENER_AUTH_PATH, StreamServer
from controller.settings import load_settings
from controller.site.directory import Site
from tests.broadcast_api_helpers import CHEAP
from tests.http_helpers import serve

SOURCE_PASSWORD = "nguon-chi-bo-dieu-khien-biet"


def device_credentials(site: Site, device: str) -> tuple[str, str]:
    """A device's own user name and password, from its generated agent configuration."""
    data = tomllib.loads(site.device_config_path(device).read_text(encoding="utf-8"))
    return data["mqtt"]["username"], data["mqtt"]["password"]


def stream_app(
    tmp: Path, database_url: str, site: Site, mqtt_port: int, stream_url: str
) -> FastAPI:
    """The controller with a ``[stream]`` section and its source password file."""
    secret = tmp / "icecast.source"
    secret.write_text(SOURCE_PASSWORD + "\n", encoding="utf-8")
    secret.chmod(0o600)
    config = tmp / "controller.toml"
    config.write_text(
        f'{CHEAP}[site]\ndir = "{site.dir}"\nclips_dir = "{tmp / "clips"}"\n'
        f'[database]\nurl = "{database_url}"\n[mqtt]\nport = {mqtt_port}\n'
        f'[stream]\nurl = "{stream_url}"\nsource_password_file = "{secret}"\n',
        encoding="utf-8",
    )
    return create_app(load_settings(config))


class StreamRig:
    """The controller at ``base_url`` and its Icecast (``icecast``, ``streams``)."""

    def __init__(self, tmp: Path, database_url: str, site: Site, mqtt_port: int) -> None:
        self._stack = ExitStack()
        self._sources: list[subprocess.Popen[bytes]] = []
        port = free_port()
        self.app = stream_app(tmp, database_url, site, mqtt_port, f"http://127.0.0.1:{port}")
        self.streams: StreamServer = self.app.state.xaso.streams
        try:
            self.base_url = self._stack.enter_context(serve(self.app))
            self.icecast = Icecast(
                tmp / "icecast",
                self.base_url + LISTENER_AUTH_PATH,
                port,
                source_password=SOURCE_PASSWORD,
            )
            self.icecast.start()
            self._stack.callback(self.icecast.stop)
        except BaseException:
            self.close()
            raise

    def source_tone(self, mount: str, freq_hz: float, seconds: float) -> subprocess.Popen[bytes]:
        """An ffmpeg sending a tone to ``mount`` in real time, Opus in Ogg."""
        argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re"]
        argv += ["-f", "lavfi", "-i", f"sine=f={freq_hz}:d={seconds}:sample_rate=48000"]
        argv += ["-c:a", "libopus", "-b:a", "48k", "-content_type", "audio/ogg"]
        argv += ["-f", "ogg", self.streams.source_url(mount)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._sources.append(proc)
        return proc

    def wait_mount(self, mount: str, auth: tuple[str, str], timeout_s: float = 60) -> None:
        """Until Icecast serves ``mount`` to ``auth`` (its source has connected)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with httpx.stream(
                "GET", self.streams.listener_url(mount), auth=auth, timeout=10
            ) as resp:
                if resp.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{mount} not served within {timeout_s} s")
            time.sleep(0.1)

    def close(self) -> None:
        for proc in self._sources:
            proc.kill()
            proc.wait(30)
        self._stack.close()
        self.app.state.xaso.engine.dispose()


def rig_fixture(tmp: Path, site: Site, mqtt_port: int) -> Iterator[StreamRig]:
    rig = StreamRig(tmp, f"sqlite:///{tmp / 'controller.db'}", site, mqtt_port)
    yield rig
    rig.close()
