"""Installs by role: each role's dependencies alone, in a fresh virtual environment.

The project is installed as a wheel (not from this checkout), with the locked
versions of only the base dependencies and that role's extra, and every
command runs outside the repository, so an import that a role needs but does
not declare fails here as it would on a Pi.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from controller.radio.clip_server import clip_router, site_authenticator
from tests.audio_helpers import tone_file
from tests.broadcast_api_helpers import CHEAP
from tests.fleet import ROOT, AgentProcess
from tests.http_helpers import first_answer, serve

pytestmark = pytest.mark.slow

WEB_AND_DATABASE = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "amqtt", "jinja2")


def _uv() -> str:
    """The uv that ./xaso installed (or the machine's)."""
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is missing: run ./xaso test, which installs it"
    return found


def _run(*argv: str | Path, cwd: Path, timeout: float = 600) -> str:
    out = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, f"{argv}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run(_uv(), "build", "--wheel", "--out-dir", dist, ROOT, cwd=dist)
    (built,) = dist.glob("xaso-*.whl")
    return built


def role_venv(wheel: Path, role: str, where: Path) -> Path:
    """A fresh venv with the base dependencies, ``role``'s extra (locked) and the wheel."""
    uv = _uv()
    venv = where / f"venv-{role}"
    requirements = where / f"{role}.txt"
    _run(uv, "venv", "--quiet", "--python", sys.executable, venv, cwd=where)
    _run(
        uv, "export", "--frozen", "--quiet", "--no-dev", "--no-emit-project",
        "--extra", role, "--project", ROOT, "--output-file", requirements,
        cwd=where,
    )  # fmt: skip
    python = venv / "bin" / "python"
    _run(uv, "pip", "install", "--quiet", "--python", python, "-r", requirements, cwd=where)
    _run(uv, "pip", "install", "--quiet", "--python", python, "--no-deps", wheel, cwd=where)
    return venv


def importable(venv: Path, modules: tuple[str, ...], cwd: Path) -> list[str]:
    code = (
        "import importlib.util, json, sys; "
        f"print(json.dumps([m for m in {modules!r} if importlib.util.find_spec(m)]))"
    )
    return list(json.loads(_run(venv / "bin" / "python", "-c", code, cwd=cwd)))


@pytest.fixture(scope="session")
def speaker_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return role_venv(wheel, "speaker", tmp_path_factory.mktemp("speaker-role"))


@pytest.fixture
def clip_site(site, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    clips = tmp_path / "clips-served"
    clips.mkdir()
    app = FastAPI()
    app.include_router(clip_router(clips, site_authenticator(site.dir)))
    with serve(app) as base:
        yield base, clips


def test_a_speaker_role_alone_plays_end_to_end_with_no_web_or_database_stack(
    speaker_venv: Path, fleet, probe, clip_site, tmp_path: Path
) -> None:
    assert importable(speaker_venv, WEB_AND_DATABASE, tmp_path) == []
    # Ed25519 through libsodium: no second OpenSSL on a Pi (only the controller reads PEM)
    assert importable(speaker_venv, ("cryptography",), tmp_path) == []
    needed = ("paho", "msgspec", "nacl", "gpiozero", "pydub")
    assert importable(speaker_venv, needed, tmp_path) == list(needed)
    # the contract and the configs are msgspec: pydantic is not installed, and the agent below
    # still plays (issue 16: pydantic's 22 MiB are too much for a Pi Zero 2 W)
    assert importable(speaker_venv, ("pydantic", "pydantic_core"), tmp_path) == []
    xaso = speaker_venv / "bin" / "xaso"
    assert "--config" in _run(xaso, "agent", "--help", cwd=tmp_path)

    base, clips = clip_site
    tone = tone_file(tmp_path / "tone.wav", 660, 1.0, fmt="wav")
    data = tone.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    (clips / f"{sha}.wav").write_bytes(data)
    played = tmp_path / "played"
    config = fleet.config("loa-1", sections={"speaker": {"sink": "wav", "wav_dir": str(played)}})
    agent = AgentProcess(config, tmp_path / "role-agent.log", [str(xaso), "agent", "--config",
                                                               str(config)]).start()  # fmt: skip
    fleet.processes.append(agent)
    probe.status_is("loa-1", "online")
    clip = {"sha256": sha, "url": f"{base}/api/clips/{sha}", "bytes": len(data),
            "duration_ms": 1000}  # fmt: skip
    probe.publish(
        "xaso/dev/loa-1/cmd",
        fleet.seal(
            "broadcast.play",
            {"clip": clip, "priority": 5},
            cmd_id="role-play",
            to="xaso/dev/loa-1/cmd",
        ),
    )
    assert probe.ack_for("loa-1", "role-play", timeout=60)["ok"]
    probe.wait_for(
        lambda m: m.topic == "xaso/dev/loa-1/event" and m.json()["type"] == "play.finished",
        timeout=60,
    )
    log = (played / "played.jsonl").read_text().splitlines()
    assert len(log) == 1 and json.loads(log[0])["file"]
    assert agent.alive and "Traceback" not in agent.output()
    # the agent ran from the venv's wheel, not from this checkout
    assert str(speaker_venv) in Path(f"/proc/{agent.proc.pid}/cmdline").read_text()  # type: ignore[union-attr]


def test_a_speakers_agent_never_imports_pydantic_even_where_it_is_installed(
    tmp_path: Path,
) -> None:
    """This checkout's venv holds every role: a speaker's agent (a hall speaker's too) still
    loads none of pydantic, as `xaso agent` runs it (cli.main, then edge.main)."""
    code = (
        "import sys, cli.main, edge.main, broadcast.speaker, kiosk.hall_calls; "
        "from edge.config import load_config; from pathlib import Path; "
        "load_config(Path(sys.argv[1])); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'pydantic_core', 'annotated_types')))"
    )
    example = ROOT / "config" / "agent.example.toml"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(example)], cwd=tmp_path, capture_output=True,
        text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[]", out.stderr


def test_a_speakers_help_lists_its_commands_and_names_the_missing_ones(
    speaker_venv: Path, tmp_path: Path
) -> None:
    out = _run(speaker_venv / "bin" / "xaso", "--help", cwd=tmp_path)
    assert "    agent " in out and "    clip " in out
    assert "not installed here" in out and "keys" in out.split("not installed here")[1]
    for argv in (("device", "list", "--site", str(tmp_path)), ("keys", "list"), ("demo",)):
        refused = subprocess.run(
            [str(speaker_venv / "bin" / "xaso"), *argv],
            cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            timeout=120, check=False,
        )  # fmt: skip
        assert refused.returncode == 2, (argv, refused.stderr)
        assert "install the role" in refused.stderr and "Traceback" not in refused.stderr


def test_the_controller_command_on_a_speaker_says_which_role_is_missing(
    speaker_venv: Path, tmp_path: Path
) -> None:
    config = tmp_path / "controller.toml"
    config.write_text(f'{CHEAP}[site]\ndir = "site"\n', encoding="utf-8")
    out = subprocess.run(
        [str(speaker_venv / "bin" / "xaso"), "controller", "--config", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert out.returncode == 2
    assert "install the role" in out.stderr and "Traceback" not in out.stderr


def test_a_kiosk_role_alone_has_its_pages_and_printer_but_no_database(
    wheel: Path, tmp_path: Path
) -> None:
    venv = role_venv(wheel, "kiosk", tmp_path)
    assert importable(venv, ("sqlalchemy", "alembic", "amqtt"), tmp_path) == []
    code = "import kiosk.web, kiosk.printer, kiosk.receipt, kiosk.buttons, kiosk.voice; print('ok')"
    assert _run(venv / "bin" / "python", "-c", code, cwd=tmp_path).strip() == "ok"
    assert "--config" in _run(venv / "bin" / "xaso", "agent", "--help", cwd=tmp_path)


def test_the_controller_role_alone_starts_and_serves_login(wheel: Path, tmp_path: Path) -> None:
    from cli.brokers.mosquitto import free_port

    venv = role_venv(wheel, "controller", tmp_path)
    assert importable(venv, ("amqtt", "gpiozero", "serial", "escpos"), tmp_path) == []
    port = free_port()
    config = tmp_path / "controller.toml"
    config.write_text(f'{CHEAP}[http]\nport = {port}\n[site]\ndir = "site"\n', encoding="utf-8")
    xaso = venv / "bin" / "xaso"
    _run(xaso, "user", "add", "quan-tri", "--role", "admin", "--config", config, cwd=tmp_path)
    server = subprocess.Popen(
        [str(xaso), "controller", "--config", str(config)],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        login = first_answer(f"http://127.0.0.1:{port}/login", server)
        assert login.status_code == 200
        assert re.search(r'name="csrf_token" value="[^"]+"', login.text)
        assert "Đăng nhập" in login.text
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0]
    assert server.returncode in (0, -signal.SIGTERM), output
