"""`xaso controller` as its own process for end-to-end tests: started, killed with
SIGKILL, started again on the same config."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from cli.brokers.mosquitto import free_port
from tests.broadcast_api_helpers import CHEAP
from tests.fleet import ROOT

SETTLE_S = 90  # how long a condition may take to come true before the test fails


def xaso(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=120,
    )


def until(what: str, check: Any) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {SETTLE_S} s: {what}")
        time.sleep(0.25)


class ControllerProcess:
    """`xaso controller` that a test can kill -9 and start again on the same config."""

    def __init__(self, config: Path, log: Path, url: str) -> None:
        self.config, self.log, self.url = config, log, url
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.starts} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "controller", "--config", str(self.config)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        until(f"the controller answers (start {self.starts})", self.healthy)

    def healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def broadcaster_controller(
    tmp: Path, database_url: str, broker_port: int, mqtt: str = ""
) -> tuple[ControllerProcess, str]:
    """A controller on ``database_url`` with a broadcaster "phat-thanh", started; and the
    broadcaster's password. ``mqtt``: more lines for its [mqtt] section."""
    port = free_port()
    config = tmp / "controller.toml"
    config.write_text(
        f'{CHEAP}[site]\ndir = "{tmp / "site"}"\nclips_dir = "{tmp / "clips"}"\n'
        f'[database]\nurl = "{database_url}"\n[http]\nport = {port}\n'
        f"[mqtt]\nport = {broker_port}\n{mqtt}",
        encoding="utf-8",
    )
    added = xaso("user", "add", "phat-thanh", "--role", "broadcaster", "--config", str(config))
    assert added.returncode == 0, added.stderr
    password = added.stdout.split("Password: ", 1)[1].split()[0]
    ctl = ControllerProcess(config, tmp / "controller.log", f"http://127.0.0.1:{port}")
    ctl.start()
    return ctl, password
