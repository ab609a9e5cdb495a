"""The sd_notify protocol: readiness, watchdog pings and status for systemd.

Hand-written because it is one datagram to the unix socket named by
$NOTIFY_SOCKET; outside systemd (tests, a shell) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        # A leading '@' names a socket in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog_usec = environ.get("WATCHDOG_USEC", "")
        self._watchdog_pid = environ.get("WATCHDOG_PID", "")

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def ready(self) -> bool:
        return self.notify("READY=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        # A newline would start a new assignment.
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def notify(self, message: str) -> bool:
        """Send one message; False when not under systemd or the send failed (logged)."""
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode("utf-8"), self._address)
        except OSError as exc:
            log.warning("cannot notify systemd (%s): %s", message.split("=", 1)[0], exc)
            return False
        return True

    def watchdog_interval_s(self) -> float | None:
        """How often to ping: half the watchdog timeout, or None when no watchdog is ours."""
        if not self._address:
            return None
        try:
            usec = int(self._watchdog_usec)
            if self._watchdog_pid and int(self._watchdog_pid) != os.getpid():
                return None
        except ValueError:
            return None
        return usec / 2_000_000 if usec > 0 else None


AGENT_UNIT = Path(__file__).resolve().parent.parent / "systemd" / "xaso-agent.service"


def unit_environment(unit: Path = AGENT_UNIT) -> dict[str, str]:
    """The variables a unit's `Environment=` lines set, so that tests and benchmarks
    run the agent with exactly what systemd gives it (PYTHONOPTIMIZE, MALLOC_ARENA_MAX)."""
    env: dict[str, str] = {}
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith("Environment="):
            for item in shlex.split(line.removeprefix("Environment=")):
                key, _, value = item.partition("=")
                env[key] = value
    return env
