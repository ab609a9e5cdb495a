"""The controller's settings, its command, and its app over real HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from cli.brokers.mosquitto import free_port
from controller.app import create_app
from controller.i18n import both, keys, register, t
from controller.settings import SettingsError, load_secret, load_settings, parse_settings
from tests.fleet import ROOT
from tests.http_helpers import first_answer, serve

EXAMPLE = ROOT / "config" / "controller.toml"
CHEAP = "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"


def test_the_example_configuration_loads() -> None:
    settings = load_settings(EXAMPLE)
    assert settings.site_dir == Path("/var/lib/xaso-controller/site")
    assert settings.database_url == "sqlite:////var/lib/xaso-controller/controller.db"
    assert settings.secret_path == Path("/var/lib/xaso-controller/controller.secret")
    assert settings.http.port == 8080 and settings.mqtt.port == 1883
    assert settings.alerts.offline_after_min == 10 and settings.telemetry.retention_days == 7


def test_defaults_live_next_to_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "controller.toml"
    config.write_text("", encoding="utf-8")
    settings = load_settings(config)
    assert settings.database_url == f"sqlite:///{tmp_path / 'controller.db'}"
    assert settings.site_dir == tmp_path / "xaso-site"
    assert settings.clips_dir == tmp_path / "clips"


def test_every_fault_is_named_with_its_key_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "controller.toml"
    bad.write_text(
        '[http]\nprot = 80\n[database]\nurl = "mysql://x"\n[security]\nsession_hours = 0\n'
        '[alerts]\nwebhook_url = "ftp://x"\ntemp_high_c = "hot"\n[telemetri]\n',
        encoding="utf-8",
    )
    with pytest.raises(SettingsError) as caught:
        load_settings(bad)
    text = str(caught.value)
    assert text.startswith(f"{bad}: 6 problem(s)")
    for expected in (
        "[http] prot: Extra inputs are not permitted (did you mean 'port'?)",
        "[database] url: use 'sqlite:////absolute/path.db' or 'postgresql://",
        "[security] session_hours: Input should be greater than 0 (use a larger number)",
        "[alerts] webhook_url: give an http:// or https:// URL",
        "[alerts] temp_high_c: Input should be a valid number",
        "[telemetri]: Extra inputs are not permitted (did you mean 'telemetry'?)",
    ):
        assert expected in text, text
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(_write(tmp_path, "[http\n"))
    with pytest.raises(SettingsError, match="cannot read the configuration"):
        load_settings(tmp_path / "missing.toml")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "other.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_secret_is_made_once_private_and_checked(tmp_path: Path) -> None:
    settings = parse_settings({}, tmp_path / "controller.toml")
    secret = load_secret(settings)
    path = tmp_path / "controller.secret"
    assert len(secret) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_secret(settings) == secret
    path.chmod(0o644)
    with pytest.raises(SettingsError, match=r"readable by others; run `chmod 600"):
        load_secret(settings)
    path.chmod(0o600)
    path.write_text("short\n", encoding="ascii")
    with pytest.raises(SettingsError, match="delete the file to have a new one made"):
        load_secret(settings)


def test_i18n_holds_both_languages_for_every_key() -> None:
    assert t("vi", "login.title") == "Đăng nhập" and t("en", "login.title") == "Sign in"
    assert both("login.locked", minutes=3).endswith("Please try again in 3 minutes.")
    register({"test.extra": ("Thử", "Try")})
    register({"test.extra": ("Thử", "Try")})  # the same text again is fine
    with pytest.raises(ValueError, match="already registered"):
        register({"test.extra": ("Khác", "Other")})
    with pytest.raises(ValueError, match="needs a Vietnamese and an English"):
        register({"test.half": ("Chỉ tiếng Việt", "")})
    for key in keys():
        assert t("vi", key) and t("en", key)


@pytest.fixture
def app_url(tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "controller.toml"
    config.write_text(CHEAP, encoding="utf-8")
    with serve(create_app(load_settings(config))) as url:
        yield url


def test_pages_switch_language_and_remember_it(app_url: str) -> None:
    with httpx.Client(base_url=app_url) as client:
        vi = client.get("/login")
        assert '<html lang="vi">' in vi.text and "Đăng nhập" in vi.text
        en = client.get("/login?lang=en")
        assert '<html lang="en">' in en.text and "Sign in" in en.text
        assert "xaso_lang=en" in en.headers["set-cookie"]
        assert '<html lang="en">' in client.get("/login").text  # remembered
        assert '<html lang="vi">' in client.get("/login?lang=vi").text
        for name in ("X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy"):
            assert name in vi.headers
        css = client.get("/static/xaso.css")
        assert css.status_code == 200 and "http" not in css.text  # self-contained, no CDN
        assert "cdn" not in vi.text.lower()


def test_metrics_count_requests_per_route(app_url: str) -> None:
    with httpx.Client(base_url=app_url) as client:
        assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
        client.get("/api/users")
        client.get("/no/such/page")
        text = client.get("/metrics").text
    assert 'xaso_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert 'route="/api/users",status="401"' in text
    assert 'route="(unmatched)",status="404"' in text
    assert 'xaso_http_request_duration_seconds_count{method="GET",route="/healthz"} 1.0' in text


def test_junk_methods_and_paths_do_not_grow_the_metrics(app_url: str) -> None:
    """10,000 requests with new method names and paths: a bounded `/metrics`."""
    parts = urlsplit(app_url)
    answered = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        for batch in range(50):  # pipelined, 200 at a time
            requests = b"".join(
                f"JUNK{batch}X{i} /junk/{batch}/{i} HTTP/1.1\r\nHost: c\r\n\r\n".encode()
                for i in range(200)
            )
            sock.sendall(requests)
            seen = b""
            while seen.count(b"HTTP/1.1 ") < 200:
                more = sock.recv(1 << 16)
                assert more, "the server closed the connection"
                seen += more
            answered += seen.count(b"HTTP/1.1 ")
    assert answered == 10_000
    text = httpx.get(f"{app_url}/metrics").text
    assert len(text.encode()) < 100_000, len(text)
    assert 'method="other",route="(unmatched)",status="404"} 10000.0' in text
    assert "JUNK" not in text and "/junk/" not in text


def _run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        check=False,
        timeout=120,
    )


def test_xaso_controller_serves_and_xaso_user_add_makes_an_admin(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "controller.toml"
    config.write_text(f'{CHEAP}[http]\nport = {port}\n[site]\ndir = "site"\n', encoding="utf-8")
    added = _run_cli("user", "add", "quan-tri", "--role", "admin", "--config", str(config))
    assert added.returncode == 0, added.stderr
    password = re.search(r"Password: (\S+)", added.stdout)
    assert password
    again = _run_cli("user", "add", "quan-tri", "--role", "admin", "--config", str(config))
    assert again.returncode == 2 and "The username quan-tri is taken" in again.stderr
    weak = _run_cli(
        "user", "add", "lan", "--role", "officer", "--config", str(config), "--password-stdin",
        stdin="short\n",
    )  # fmt: skip
    assert weak.returncode == 2 and "at least 10 characters" in weak.stderr
    listed = _run_cli("user", "list", "--config", str(config))
    assert listed.stdout.startswith("quan-tri\tadmin\tactive")

    server = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "controller", "--config", str(config)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        health = first_answer(f"{url}/healthz", server)
        assert health.json() == {"status": "ok", "database": "ok"}
        with httpx.Client(base_url=url, follow_redirects=True) as client:
            form = client.get("/login").text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
            assert csrf
            signed = client.post(
                "/login",
                data={"username": "quan-tri", "password": password.group(1),
                      "csrf_token": csrf.group(1)},
            )  # fmt: skip
            assert signed.status_code == 200 and "quan-tri" in signed.text
            assert client.get("/api/me").json()["role"] == "admin"
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    # uvicorn shuts down cleanly, then re-raises SIGTERM so that it dies of it (as systemd expects)
    assert server.returncode in (0, -signal.SIGTERM), output
    assert b"Application shutdown complete" in output
    assert (tmp_path / "controller.secret").stat().st_mode & 0o777 == 0o600


def test_a_bad_configuration_stops_the_command_with_the_fix(tmp_path: Path) -> None:
    config = tmp_path / "controller.toml"
    config.write_text("[http]\nport = 0\n", encoding="utf-8")
    out = _run_cli("controller", "--config", str(config))
    assert out.returncode == 2
    assert "[http] port: Input should be greater than or equal to 1" in out.stderr
    assert "Traceback" not in out.stderr
