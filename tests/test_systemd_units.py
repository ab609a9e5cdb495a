"""The systemd unit files: the lines the agent's behaviour relies on are there."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.systemd import unit_environment

UNITS = Path(__file__).resolve().parent.parent / "systemd"


def load_unit(name: str) -> configparser.RawConfigParser:
    # Unit files repeat keys (DeviceAllow=): keep the last, we only check presence.
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name, encoding="utf-8")
    return parser


def all_values(name: str, key: str) -> list[str]:
    """Every value of a key that may repeat, which configparser would collapse."""
    lines = (UNITS / name).read_text(encoding="utf-8").splitlines()
    return [line.split("=", 1)[1] for line in lines if line.startswith(key + "=")]


def test_agent_unit_is_notify_with_a_watchdog() -> None:
    service = load_unit("xaso-agent.service")["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "60"
    assert service["Restart"] == "always"
    assert service["RestartSec"] == "5"
    assert service["TimeoutStopSec"] == "15"
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/opt/xaso/.venv/bin/xaso"
    assert argv[1:] == ["agent", "--config", "/etc/xaso/agent.toml"]


def test_agent_unit_user_and_directories() -> None:
    service = load_unit("xaso-agent.service")["Service"]
    assert service["User"] == "xaso"
    assert set(service["SupplementaryGroups"].split()) == {"gpio", "audio", "dialout"}
    assert service["StateDirectory"] == "xaso"
    assert service["ConfigurationDirectory"] == "xaso"
    assert service["ReadWritePaths"] == "/var/lib/xaso"
    # lgpio writes its notification pipes into the working directory.
    assert service["WorkingDirectory"] == "/var/lib/xaso"


def test_agent_unit_hardening_keeps_its_devices() -> None:
    service = load_unit("xaso-agent.service")["Service"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "DevicePolicy": "closed",
    }.items():
        assert service[key] == value, key
    assert service["RestrictAddressFamilies"].split() == [
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
    ]
    allowed = {value.split()[0] for value in all_values("xaso-agent.service", "DeviceAllow")}
    assert {"char-gpiochip", "char-alsa", "char-ttyUSB", "char-ttyAMA"} <= allowed
    # Would hide the devices; MemoryDenyWriteExecute breaks libffi closures.
    assert "PrivateDevices" not in service
    assert "MemoryDenyWriteExecute" not in service


def test_controller_unit() -> None:
    unit = load_unit("xaso-controller.service")
    service = unit["Service"]
    assert service["Type"] == "simple"
    assert shlex.split(service["ExecStart"])[1:] == [
        "controller",
        "--config",
        "/etc/xaso/controller.toml",
    ]
    assert service["User"] == "xaso-controller"
    assert service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # The real ExecStart is not installed here; verify the rest with /bin/true.
    copies = []
    for unit in sorted(UNITS.glob("*.service")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/xaso/.venv/bin/xaso", "/bin/true"))
        copies.append(str(copy))
    done = subprocess.run(
        ["systemd-analyze", "verify", *copies],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_agent_unit_environment_is_what_tests_and_benchmarks_run_with() -> None:
    env = unit_environment()
    assert env["PYTHONOPTIMIZE"] == "2"  # no docstrings loaded: memory on a Pi
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_the_example_controller_config_writes_only_where_its_unit_may() -> None:
    """ProtectSystem=strict: the database, clips, site and secret must sit in ReadWritePaths."""
    from controller.settings import load_settings

    writable = Path(load_unit("xaso-controller.service")["Service"]["ReadWritePaths"])
    settings = load_settings(UNITS.parent / "config" / "controller.toml")
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    for path in (database, settings.clips_dir, settings.site_dir, settings.secret_path):
        assert path.is_relative_to(writable), path
