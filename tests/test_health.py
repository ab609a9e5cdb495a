"""edge.health: parsers on captured command output, and the probe on this machine."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from edge.health import (
    SystemProbe,
    parse_chronyc_tracking,
    parse_proc_net_route,
    parse_proc_net_wireless,
    parse_thermal,
    parse_timedatectl,
    process_footprint,
    run_command,
)
from protocol.uplink import ClockState, NetworkState, Telemetry

CHRONY_SYNCED_FAST = """\
Reference ID    : C0248F8A (192.36.143.138)
Stratum         : 2
Ref time (UTC)  : Thu Nov 20 08:31:12 2025
System time     : 0.000012345 seconds fast of NTP time
Last offset     : -0.000004567 seconds
RMS offset      : 0.000023456 seconds
Frequency       : 12.345 ppm slow
Residual freq   : -0.001 ppm
Skew            : 0.012 ppm
Root delay      : 0.012345678 seconds
Root dispersion : 0.000456789 seconds
Update interval : 64.2 seconds
Leap status     : Normal
"""

CHRONY_SYNCED_SLOW = """\
Reference ID    : 0A000001 (10.0.0.1)
Stratum         : 3
Ref time (UTC)  : Thu Nov 20 08:40:03 2025
System time     : 0.253000000 seconds slow of NTP time
Last offset     : +0.001234567 seconds
RMS offset      : 0.004567890 seconds
Frequency       : 3.210 ppm fast
Residual freq   : +0.120 ppm
Skew            : 1.042 ppm
Root delay      : 0.045678901 seconds
Root dispersion : 0.012345678 seconds
Update interval : 129.5 seconds
Leap status     : Normal
"""

# chronyd just started with no reachable server (a Pi without network after boot).
CHRONY_UNSYNCED = """\
Reference ID    : 00000000 ()
Stratum         : 0
Ref time (UTC)  : Thu Jan 01 00:00:00 1970
System time     : 0.000000000 seconds fast of NTP time
Last offset     : +0.000000000 seconds
RMS offset      : 0.000000000 seconds
Frequency       : 0.000 ppm slow
Residual freq   : +0.000 ppm
Skew            : 0.000 ppm
Root delay      : 1.000000000 seconds
Root dispersion : 1.000000000 seconds
Update interval : 0.0 seconds
Leap status     : Not synchronised
"""

# `local stratum 10` with no server: a normal leap status, but only its own clock.
CHRONY_LOCAL_ONLY = CHRONY_UNSYNCED.replace("00000000 ()", "7F7F0101 ()").replace(
    "Not synchronised", "Normal"
)

TIMEDATECTL_SHOW = """\
Timezone=Asia/Ho_Chi_Minh
LocalRTC=no
CanNTP=yes
NTP=yes
NTPSynchronized={}
TimeUSec=Thu 2025-11-20 15:31:12 +07
RTCTimeUSec=n/a
"""

PROC_NET_ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t202\t00000000\t0\t0\t0
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t303\t00000000\t0\t0\t0
wlan0\t0001A8C0\t00000000\t0001\t0\t0\t303\t00FFFFFF\t0\t0\t0
"""

PROC_NET_WIRELESS = """\
Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 wlan0: 0000   58.  -52.  -256        0      0      0      0     12        0
  wlp2: 0000   40    60      0        0      0      0      0      0        0
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [("48312\n", 48.3), ("-5000", -5.0), ("", None), ("n/a\n", None)],
)
def test_parse_thermal(text: str, expected: float | None) -> None:
    assert parse_thermal(text) == expected


def test_chrony_synced_fast_is_a_positive_offset() -> None:
    state = parse_chronyc_tracking(CHRONY_SYNCED_FAST)
    assert state.synced is True
    assert state.offset_ms == pytest.approx(0.012, abs=1e-3)
    assert state.source == "chrony"


def test_chrony_synced_slow_is_a_negative_offset() -> None:
    state = parse_chronyc_tracking(CHRONY_SYNCED_SLOW)
    assert state.synced is True
    assert state.offset_ms == pytest.approx(-253.0)


def test_chrony_without_a_reference_is_not_synced() -> None:
    assert parse_chronyc_tracking(CHRONY_UNSYNCED).synced is False
    assert parse_chronyc_tracking(CHRONY_LOCAL_ONLY).synced is False


def test_chrony_garbage_is_unknown() -> None:
    assert parse_chronyc_tracking("506 Cannot talk to daemon\n") == ClockState()


@pytest.mark.parametrize(
    ("text", "synced"),
    [
        ("yes\n", True),
        ("no\n", False),
        ("NTPSynchronized=yes\n", True),
        (TIMEDATECTL_SHOW.format("yes"), True),
        (TIMEDATECTL_SHOW.format("no"), False),
        ("", "unknown"),
        ("Timezone=UTC\n", "unknown"),
    ],
)
def test_parse_timedatectl(text: str, synced: bool | str) -> None:
    state = parse_timedatectl(text)
    assert state.synced == synced
    assert state.offset_ms is None


def test_parse_proc_net_wireless() -> None:
    assert parse_proc_net_wireless(PROC_NET_WIRELESS) == {"wlan0": -52.0}
    assert parse_proc_net_wireless("") == {}


def test_parse_proc_net_route_takes_the_lowest_metric_default() -> None:
    assert parse_proc_net_route(PROC_NET_ROUTE) == "eth0"
    assert parse_proc_net_route(PROC_NET_ROUTE.replace("\t202\t", "\t404\t")) == "wlan0"
    header_only = PROC_NET_ROUTE.splitlines()[0]
    assert parse_proc_net_route(header_only) is None


def test_sample_on_this_machine_is_a_valid_telemetry() -> None:
    probe = SystemProbe()
    sample = probe.sample()
    telemetry = msgspec.convert({**sample, "ts": 0}, Telemetry)
    assert telemetry.uptime_s > 0
    assert telemetry.rss_mb is not None and telemetry.rss_mb > 0
    assert telemetry.disk_free_mb is not None and telemetry.disk_free_mb > 0
    assert 0 <= (telemetry.mem_used_pct or 0) <= 100
    assert isinstance(telemetry.clock, ClockState)
    assert isinstance(telemetry.network, NetworkState)
    assert isinstance(sample["cpu_pct"], float)


def test_thermal_file_in_millidegrees(tmp_path: Path) -> None:
    zone = tmp_path / "temp"
    zone.write_text("48312\n")
    assert SystemProbe(thermal_zone=zone, run=lambda argv: None).sample()["cpu_temp_c"] == 48.3


def test_missing_thermal_file_and_disk_are_none(tmp_path: Path) -> None:
    probe = SystemProbe(
        thermal_zone=tmp_path / "absent", disk_path=tmp_path / "absent", run=lambda argv: None
    )
    sample = probe.sample()
    assert sample["cpu_temp_c"] is None
    assert sample["disk_free_mb"] is None


def test_no_clock_commands_means_unknown() -> None:
    clock = SystemProbe(run=lambda argv: None).sample()["clock"]
    assert clock.synced == "unknown"
    assert clock.offset_ms is None


def test_clock_falls_back_to_timedatectl() -> None:
    outputs = {"timedatectl": "NTPSynchronized=yes\n"}
    clock = SystemProbe(run=lambda argv: outputs.get(argv[0])).clock()
    assert clock == ClockState(synced=True, source="timedatectl")


def test_chrony_answer_wins_even_unsynced() -> None:
    outputs = {"chronyc": CHRONY_UNSYNCED, "timedatectl": "yes\n"}
    clock = SystemProbe(run=lambda argv: outputs.get(argv[0])).clock()
    assert clock.synced is False
    assert clock.source == "chrony"


def test_clock_is_cached_for_a_minute() -> None:
    calls: list[list[str]] = []
    now = [1000.0]

    def run(argv: list[str]) -> str | None:
        calls.append(argv)
        return CHRONY_SYNCED_FAST

    probe = SystemProbe(run=run, monotonic=lambda: now[0])
    probe.clock()
    now[0] += 59
    probe.clock()
    assert len(calls) == 1
    now[0] += 2
    probe.clock()
    assert len(calls) == 2


def test_network_from_proc_files(tmp_path: Path) -> None:
    (tmp_path / "route").write_text(PROC_NET_ROUTE.replace("\t202\t", "\t404\t"))
    (tmp_path / "wireless").write_text(PROC_NET_WIRELESS)
    network = SystemProbe(proc_net=tmp_path, run=lambda argv: None).network()
    assert network == NetworkState(iface="wlan0", signal_dbm=-52.0)


def test_wired_or_no_route(tmp_path: Path) -> None:
    probe = SystemProbe(proc_net=tmp_path, run=lambda argv: None)
    assert probe.network() == NetworkState()
    (tmp_path / "route").write_text(PROC_NET_ROUTE)
    assert probe.network() == NetworkState(iface="eth0", signal_dbm=None)


def test_a_failing_reading_is_reported_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> float:
        raise RuntimeError("psutil surprise")

    monkeypatch.setattr("edge.health.psutil.virtual_memory", broken)
    assert SystemProbe(run=lambda argv: None).sample()["mem_used_pct"] is None


def test_default_runner_survives_missing_failing_and_slow_commands() -> None:
    assert run_command(["xaso-no-such-command-here"]) is None
    assert run_command(["false"]) is None
    assert run_command(["echo", "hi"]) == "hi\n"
    assert run_command(["sleep", "5"]) is None


def test_process_footprint() -> None:
    rss_mb, cpu_s = process_footprint()
    assert rss_mb > 1
    assert cpu_s > 0
