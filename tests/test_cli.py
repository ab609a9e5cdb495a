"""The `xaso` command: lean for the agent, clear on bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fleet import ROOT

HEAVY = ("fastapi", "starlette", "uvicorn", "pydub", "sqlalchemy", "amqtt", "alembic")


def test_the_agent_command_loads_no_web_or_audio_stack_and_nothing_of_the_controller():
    code = (
        "import sys; from cli.main import build_parser; "
        "build_parser(['agent', '--config', 'x']).parse_args(['agent', '--config', 'x']); "
        f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r} + ('controller',)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bad_config_path_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "agent", "--config", str(tmp_path / "missing.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert out.returncode == 2
    assert "cannot read the configuration" in out.stderr and "Traceback" not in out.stderr


def test_a_config_with_faults_lists_them_all(tmp_path):
    bad = tmp_path / "agent.toml"
    bad.write_text('[device]\nid = "Loa 1"\n[mqtt]\nprot = 1883\n', encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "agent", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert out.returncode == 2
    for expected in ("[device] id", "did you mean", "[trust]: Field required"):
        assert expected in out.stderr


def test_help_lists_every_program():
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("agent", "controller", "user", "keys", "device", "demo", "clip"):
        assert f"    {command} " in out.stdout


def test_a_speaker_without_a_relay_loads_no_gpiozero():
    """gpiozero is imported by the amplifier only when a relay pin is configured."""
    code = (
        "import sys; import edge.main, broadcast.speaker; "
        "print([m for m in sys.modules if m.split('.')[0] == 'gpiozero'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_missing_module_of_ours_is_a_bug_not_a_missing_role():
    from cli.main import _lacking

    assert _lacking(ModuleNotFoundError("no fastapi", name="fastapi")) == "fastapi"
    with pytest.raises(ModuleNotFoundError):
        _lacking(ModuleNotFoundError("no module", name="controller.nowhere"))
