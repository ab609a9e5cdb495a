"""The operator commands: `xaso keys` and `xaso device` on a site directory, and their refusals."""

from __future__ import annotations

import json

from edge.config import load_config
from tests.site_helpers import run

# --- the operator commands -----------------------------------------------------------------


def test_cli_provisions_a_site(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("XASO_SITE", str(tmp_path / "site"))
    assert run("keys", "new") == 0
    assert "Created the site" in capsys.readouterr().out
    assert (
        run(
            "device",
            "add",
            "loa-1",
            "--role",
            "speaker",
            "--role",
            "kiosk",
            "--office-address",
            "192.168.1.10",
            "--group",
            "thon-1",
            "--name",
            "Loa 1",
            "--broker-host",
            "10.0.0.2",
            "--state-dir",
            str(tmp_path / "state"),
        )
        == 0
    )
    out = capsys.readouterr().out
    config_path = tmp_path / "site" / "devices" / "loa-1.toml"
    assert str(config_path) in out and "systemctl reload mosquitto" in out
    config = load_config(config_path)
    assert config.device.roles == ["speaker", "kiosk"] and config.mqtt.port == 1883
    assert config.kiosk.ticket_base_url == "http://192.168.1.10:8080"

    assert run("device", "list") == 0
    assert "loa-1" in capsys.readouterr().out
    assert run("keys", "new") == 0
    assert run("keys", "list") == 0
    listed = capsys.readouterr().out.splitlines()[-2:]
    assert [line.split()[1] for line in listed].count("active") == 1
    assert run("device", "remove", "loa-1") == 0
    assert not config_path.exists()


def test_cli_refusals_are_one_line(tmp_path, capsys) -> None:
    site = str(tmp_path / "site")
    assert run("device", "list", "--site", site) == 2
    err = capsys.readouterr().err
    assert err.startswith("xaso: ") and err.count("\n") == 1 and "xaso keys new" in err
    assert run("keys", "new", "--site", site) == 0
    argv = ["device", "add", "loa-1", "--role", "speaker", "--broker-host", "h", "--site", site]
    assert run(*argv) == 0
    capsys.readouterr()
    for bad in (
        argv,
        [*argv[:2], "Loa_1", *argv[3:]],
        ["device", "remove", "nope", "--site", site],
    ):
        assert run(*bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("xaso: ") and err.count("\n") == 1 and "Traceback" not in err
    assert run(*argv, "--force") == 0
    registry = json.loads((tmp_path / "site" / "devices.json").read_text())
    assert [d["id"] for d in registry["devices"]] == ["loa-1"]
