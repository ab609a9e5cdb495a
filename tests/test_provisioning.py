"""The site directory: keys, the device registry and each device's configuration, hall speakers.

The broker's files (password hashes, ACL text) are in test_broker_files.py,
the `xaso keys` and `xaso device` commands in test_site_cli.py.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from controller.site.broker_files import mosquitto_hash
from controller.site.devices import add_device, list_devices, remove_device
from controller.site.directory import ProvisioningError, Site, open_site
from controller.site.keys import init_site, new_key
from edge.config import ConfigError, load_config
from protocol.signing import Keyring
from tests.site_helpers import add, run


def device_paths(site: Site) -> list[Path]:
    return sorted(p for p in site.dir.rglob("*") if p.is_file() and p.name != ".lock")


def snapshot(site: Site) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in device_paths(site)}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the site directory ------------------------------------------------------------------


def test_init_site_writes_private_files(site: Site) -> None:
    (kid,) = site.signing_keys()
    assert site.active_kid() == kid == site.signing_key().kid
    assert mode(site.keys_dir / f"{kid}.pem") == 0o600
    assert mode(site.controller_password_path) == 0o600
    assert mode(site.dir / "site.json") == 0o600
    assert mode(site.keys_dir) == 0o700
    user, password = site.controller_credentials()
    assert user == "controller" and len(password) >= 32
    assert site.passwd_path.read_text().startswith("controller:$7$101$")
    assert "user controller\ntopic readwrite xaso/#" in site.acl_path.read_text()
    assert site.devices() == []


def test_init_site_again_changes_nothing(site: Site) -> None:
    before = snapshot(site)
    again = init_site(site.dir)
    assert again == site and snapshot(site) == before
    with pytest.raises(ProvisioningError, match="already uses the topic root 'xaso'"):
        init_site(site.dir, root="other")


def test_not_a_site(tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match=r"not a site directory.*xaso keys new"):
        add(Site(tmp_path))


def test_generated_config_loads(site: Site) -> None:
    path = add(site, name="Loa thôn 1, xã An Phú", tls=True)
    assert path == site.devices_dir / "loa-1.toml" and mode(path) == 0o600
    config = load_config(path)
    assert config.device.id == "loa-1" and config.device.name == "Loa thôn 1, xã An Phú"
    assert config.device.roles == ["speaker"] and config.device.groups == ["thon-1"]
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("10.0.0.2", 1883, True)
    assert config.username == "loa-1" and config.mqtt.root == "xaso"
    assert config.state.dir == site.dir / "state"
    assert dict(config.trust.keys) == site.trusted_keys()
    assert len(Keyring.from_mapping(config.trust.keys)) == 1
    # the broker's password file holds the hash of exactly that password
    (entry,) = site.devices()
    salt = base64.b64decode(entry.password_hash.split("$")[3])
    password = config.password()
    assert password is not None
    assert mosquitto_hash(password, salt=salt) == entry.password_hash
    assert f"loa-1:{entry.password_hash}" in site.passwd_path.read_text().splitlines()
    assert "user loa-1\ntopic read xaso/grp/thon-1/cmd" in site.acl_path.read_text()


def test_duplicate_device_is_refused_and_nothing_changes(site: Site) -> None:
    add(site)
    before = snapshot(site)
    with pytest.raises(ProvisioningError, match=r"'loa-1' already exists.*--force"):
        add(site, groups=("thon-2",))
    assert snapshot(site) == before


def test_force_gives_a_new_password_and_keeps_the_creation_time(site: Site) -> None:
    first = load_config(add(site)).password()
    (old,) = site.devices()
    config = load_config(add(site, groups=("thon-2",), force=True))
    (new,) = site.devices()
    assert config.password() != first and new.password_hash != old.password_hash
    assert new.created_ms == old.created_ms and new.groups == ("thon-2",)
    assert old.password_hash not in site.passwd_path.read_text()


@pytest.mark.parametrize(
    ("device_id", "roles", "groups", "message"),
    [
        ("Loa-1", ["speaker"], [], "device id 'Loa-1' is not valid"),
        ("-loa", ["speaker"], [], "device id '-loa' is not valid"),
        ("loa/1", ["speaker"], [], "device id 'loa/1' is not valid"),
        ("loa+", ["speaker"], [], "device id 'loa\\+' is not valid"),
        ("x" * 49, ["speaker"], [], "is not valid"),
        ("loa-1", ["speaker"], ["thôn-1"], "group id 'thôn-1' is not valid"),
        ("loa-1", ["radio"], [], "roles \\['radio'\\] are not valid"),
        ("loa-1", [], [], "are not valid"),
        ("controller", ["speaker"], [], "controller's user name"),
    ],
)
def test_bad_devices_are_refused(site, device_id, roles, groups, message) -> None:
    before = snapshot(site)
    with pytest.raises(ProvisioningError, match=message):
        add_device(site.dir, device_id, roles, groups, broker_host="h", broker_port=1883)
    assert snapshot(site) == before


def test_bad_broker_or_name_is_refused(site: Site) -> None:
    for kw, message in (
        ({"broker_host": "", "broker_port": 1883}, "broker host"),
        ({"broker_host": "h", "broker_port": 0}, "broker port"),
        ({"broker_host": "h", "broker_port": 1883, "name": "a\nb"}, "control characters"),
        ({"broker_host": "h", "broker_port": 1883, "root": "other"}, "topic root 'xaso'"),
    ):
        with pytest.raises(ProvisioningError, match=message):
            add_device(site.dir, "loa-1", ["speaker"], **kw)
    assert site.devices() == []


def test_a_crash_mid_write_leaves_the_old_files(site, monkeypatch) -> None:
    add(site)
    before = snapshot(site)

    def crash(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        add(site, "loa-2")
    monkeypatch.undo()
    assert snapshot(site) == before  # no half file, no temp file left behind
    assert [d.id for d in site.devices()] == ["loa-1"]


def test_new_key_rotates_and_devices_trust_both(site: Site) -> None:
    path = add(site)
    first = site.active_kid()
    second = new_key(site.dir)
    assert second != first and site.active_kid() == second
    assert set(site.trusted_keys()) == {first, second}
    assert site.signing_key().kid == second
    config = load_config(path)
    assert dict(config.trust.keys) == site.trusted_keys()
    assert config.device.groups == ["thon-1"]  # the rest is kept


def test_remove_device(site: Site) -> None:
    path = add(site)
    add(site, "loa-2")
    remove_device(site.dir, "loa-1")
    assert [d.id for d in list_devices(site.dir)] == ["loa-2"]
    assert not path.exists()
    assert "loa-1" not in site.passwd_path.read_text() + site.acl_path.read_text()
    with pytest.raises(ProvisioningError, match="no device 'loa-1'"):
        remove_device(site.dir, "loa-1")


def test_damaged_registry_is_reported(site: Site) -> None:
    (site.dir / "devices.json").write_text("{not json")
    with pytest.raises(ProvisioningError, match=r"devices\.json: damaged"):
        list_devices(site.dir)


# --- the hall speaker of a kiosk -----------------------------------------------------------


def hall_acl(site: Site, user: str) -> list[str]:
    """The ACL lines under ``user`` in the generated file."""
    lines = site.acl_path.read_text().splitlines()
    start = lines.index(f"user {user}") + 1
    rest = lines[start:]
    return rest[: rest.index("")] if "" in rest else rest


def test_calls_from_lets_the_speaker_read_that_kiosks_calls_only(tmp_path, capsys) -> None:
    site_dir = str(tmp_path / "site")
    assert run("keys", "new", "--site", site_dir) == 0
    common = ["--site", site_dir, "--broker-host", "10.0.0.2"]
    for i, kiosk in enumerate(("kiosk-1", "kiosk-2"), start=21):
        address = ["--office-address", f"192.168.1.{i}"]
        assert run("device", "add", kiosk, "--role", "kiosk", *address, *common) == 0
    argv = ["device", "add", "loa-hall", "--role", "speaker", "--calls-from", "kiosk-1"]
    assert run(*argv, "--group", "thon-1", *common) == 0
    site = open_site(Path(site_dir))
    assert hall_acl(site, "loa-hall") == [
        "topic read xaso/grp/thon-1/cmd",
        "topic read xaso/grp/thon-1/schedule",
        "topic read xaso/dev/kiosk-1/calls",
    ]
    assert "kiosk-2/" not in site.acl_path.read_text()
    config = load_config(site.device_config_path("loa-hall"))
    assert config.speaker.calls_from == ["kiosk-1"]
    assert {d.id: d.calls_from for d in site.devices()}["loa-hall"] == ("kiosk-1",)
    kiosk_config = load_config(site.device_config_path("kiosk-1"))
    assert kiosk_config.speaker.calls_from == []
    assert kiosk_config.kiosk.ticket_base_url == "http://192.168.1.21:8080"


def test_a_kiosk_without_its_office_address_is_refused_until_it_is_set(tmp_path, capsys) -> None:
    """Issue 15: a kiosk on every interface printed a QR code to 127.0.0.1."""
    site_dir = str(tmp_path / "site")
    assert run("keys", "new", "--site", site_dir) == 0
    common = ["--site", site_dir, "--broker-host", "10.0.0.2"]
    assert run("device", "add", "kiosk-1", "--role", "kiosk", *common) == 0
    assert "[kiosk] office_address" in capsys.readouterr().out
    path = open_site(Path(site_dir)).device_config_path("kiosk-1")
    with pytest.raises(ConfigError, match=r"set \[kiosk\] office_address"):
        load_config(path)
    argv = ["device", "add", "loa-1", "--role", "speaker", "--office-address", "10.0.0.9"]
    assert run(*argv, *common) == 2
    assert "kiosk's address" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("device_id", "roles", "calls_from", "message"),
    [
        ("loa-hall", ["kiosk"], ["kiosk-1"], "needs the speaker role"),
        ("loa-hall", ["speaker"], ["kiosk-9"], "no kiosk 'kiosk-9'"),
        ("loa-hall", ["speaker"], ["loa-1"], "no kiosk 'loa-1'"),
        ("kiosk-1", ["speaker", "kiosk"], ["kiosk-1"], "from itself"),
    ],
)
def test_bad_calls_from_is_refused(site, device_id, roles, calls_from, message) -> None:
    add(site, "loa-1")
    add_device(site.dir, "kiosk-1", ["kiosk"], broker_host="10.0.0.2", broker_port=1883)
    before = snapshot(site)
    with pytest.raises(ProvisioningError, match=message):
        add_device(
            site.dir,
            device_id,
            roles,
            broker_host="10.0.0.2",
            broker_port=1883,
            calls_from=calls_from,
            force=True,
        )
    assert snapshot(site) == before
