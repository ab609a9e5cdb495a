"""Reads the device's health for the telemetry sample (the only user of psutil).

A Pi without chrony, a container without thermal zones or a command that
hangs must not stop telemetry: every reading that cannot be had is None or
"unknown", never an exception. The parsers are pure so they are tested on
captured output.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import psutil

from protocol.uplink import ClockState, NetworkState

log = logging.getLogger(__name__)
T = TypeVar("T")
Runner = Callable[[list[str]], str | None]
MIB = 1024 * 1024
COMMAND_TIMEOUT_S = 2.0
CLOCK_TTL_S = 60.0
# chrony's reference ids that mean "no real source": none yet, or its own local clock.
_NO_REFERENCE = {"00000000", "7F7F0101"}
_SYSTEM_TIME = re.compile(r"^\s*([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s+seconds\s+(fast|slow)\b")


def parse_thermal(text: str) -> float | None:
    """°C from a sysfs thermal zone, which reports millidegrees."""
    try:
        return round(int(text.strip()) / 1000, 1)
    except ValueError:
        return None


def _fields(text: str, sep: str) -> dict[str, str]:
    pairs = (line.partition(sep) for line in text.splitlines())
    return {key.strip(): value.strip() for key, found, value in pairs if found}


def parse_chronyc_tracking(text: str) -> ClockState:
    """`chronyc -n tracking`: synced on a normal leap status with a real reference.

    ``offset_ms`` is positive when the system clock is ahead of NTP time ("fast").
    """
    fields = _fields(text, ":")
    leap = fields.get("Leap status")
    if leap is None:
        return ClockState()
    reference = fields.get("Reference ID", "").split(" ", 1)[0].upper()
    offset_ms = None
    match = _SYSTEM_TIME.match(fields.get("System time", ""))
    if match:
        seconds = abs(float(match.group(1)))
        offset_ms = round((seconds if match.group(2) == "fast" else -seconds) * 1000, 3)
    synced = leap == "Normal" and bool(reference) and reference not in _NO_REFERENCE
    return ClockState(synced=synced, offset_ms=offset_ms, source="chrony")


def parse_timedatectl(text: str) -> ClockState:
    """`timedatectl show` (key=value) or `show -p NTPSynchronized --value` (a bare yes/no)."""
    stripped = text.strip()
    value = stripped if "=" not in stripped else _fields(text, "=").get("NTPSynchronized")
    if value not in ("yes", "no"):
        return ClockState()
    return ClockState(synced=value == "yes", source="timedatectl")


def parse_proc_net_wireless(text: str) -> dict[str, float]:
    """Signal level in dBm per interface from /proc/net/wireless.

    Drivers that report a relative level (0 or more) rather than dBm are left out.
    """
    signals: dict[str, float] = {}
    for line in text.splitlines()[2:]:
        iface, found, rest = line.partition(":")
        columns = rest.split()
        if not found or len(columns) < 3:
            continue
        try:
            level = float(columns[2].rstrip("."))
        except ValueError:
            continue
        if level < 0:
            signals[iface.strip()] = level
    return signals


def parse_proc_net_route(text: str) -> str | None:
    """The interface of the default route (lowest metric) from /proc/net/route."""
    best: tuple[int, str] | None = None
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8 or cols[1] != "00000000" or cols[7] != "00000000":
            continue
        try:
            up = int(cols[3], 16) & 0x1
            metric = int(cols[6])
        except ValueError:
            continue
        if up and (best is None or metric < best[0]):
            best = (metric, cols[0])
    return best[1] if best else None


def run_command(argv: list[str]) -> str | None:
    """Stdout of a short command, or None when it is missing, fails or hangs."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            text=True,
            errors="replace",
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


class Footprint(NamedTuple):
    rss_mb: float
    cpu_s: float


def process_footprint() -> Footprint:
    """Resident memory and cumulative CPU time (user + system) of this process."""
    proc = psutil.Process()
    times = proc.cpu_times()
    return Footprint(proc.memory_info().rss / MIB, times.user + times.system)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _uptime_s() -> float:
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)  # immune to the wall clock jumping
    except (AttributeError, OSError):
        return time.time() - float(psutil.boot_time())


class SystemProbe:
    """One telemetry sample of the system and of this process."""

    def __init__(
        self,
        *,
        thermal_zone: Path = Path("/sys/class/thermal/thermal_zone0/temp"),
        disk_path: Path = Path("/"),
        run: Runner | None = None,
        proc_net: Path = Path("/proc/net"),
        clock_ttl_s: float = CLOCK_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.thermal_zone = thermal_zone
        self.disk_path = disk_path
        self.proc_net = proc_net
        self._run = run or run_command
        self._clock_ttl_s = clock_ttl_s
        self._monotonic = monotonic
        self._clock: tuple[float, ClockState] | None = None
        self._warned: set[str] = set()
        self._process = psutil.Process()
        self._guard("cpu_pct", lambda: self._process.cpu_percent(None), None)  # starts the count

    def sample(self) -> dict[str, Any]:
        return {
            "uptime_s": round(self._guard("uptime_s", _uptime_s, 0.0), 1),
            "cpu_temp_c": self._guard("cpu_temp_c", self.cpu_temp_c, None),
            "load1": self._guard("load1", lambda: round(os.getloadavg()[0], 2), None),
            "mem_used_pct": self._guard(
                "mem_used_pct", lambda: round(psutil.virtual_memory().percent, 1), None
            ),
            "disk_free_mb": self._guard("disk_free_mb", self.disk_free_mb, None),
            "rss_mb": self._guard(
                "rss_mb", lambda: round(self._process.memory_info().rss / MIB, 1), None
            ),
            # Percent of one core since the previous sample.
            "cpu_pct": self._guard(
                "cpu_pct", lambda: round(self._process.cpu_percent(None), 1), None
            ),
            "network": self._guard("network", self.network, NetworkState()),
            "clock": self._guard("clock", self.clock, ClockState()),
        }

    def cpu_temp_c(self) -> float | None:
        text = _read(self.thermal_zone)
        return None if text is None else parse_thermal(text)

    def disk_free_mb(self) -> float | None:
        try:
            return round(float(psutil.disk_usage(str(self.disk_path)).free) / MIB, 1)
        except OSError:
            return None

    def network(self) -> NetworkState:
        route = _read(self.proc_net / "route")
        iface = parse_proc_net_route(route) if route else None
        if iface is None:
            return NetworkState()
        wireless = _read(self.proc_net / "wireless")
        signal = parse_proc_net_wireless(wireless).get(iface) if wireless else None
        return NetworkState(iface=iface, signal_dbm=signal)

    def clock(self) -> ClockState:
        """Chrony first, then timedatectl; cached, since each try forks a command."""
        now = self._monotonic()
        if self._clock is not None and now - self._clock[0] < self._clock_ttl_s:
            return self._clock[1]
        state = ClockState()
        chrony = self._run(["chronyc", "-n", "tracking"])
        if chrony is not None:
            state = parse_chronyc_tracking(chrony)
        if state.synced == "unknown":
            timedatectl = self._run(["timedatectl", "show"])
            if timedatectl is not None:
                state = parse_timedatectl(timedatectl)
        self._clock = (now, state)
        return state

    def _guard(self, name: str, read: Callable[[], T], default: T) -> T:
        """A reading that fails unexpectedly is logged once and reported as missing."""
        try:
            return read()
        except Exception:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("cannot read %s for telemetry", name, exc_info=True)
            return default
