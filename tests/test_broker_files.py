"""The broker's files: Mosquitto 2 password hashes, the ACL text, and their regeneration."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest

from controller.site.broker_files import (
    DEVICE_READS,
    DEVICE_WRITES,
    QUEUE_LEAVES,
    acl_text,
    mosquitto_hash,
    regenerate_broker_files,
)
from controller.site.directory import DeviceEntry, Site
from protocol.topics import DEVICE_LEAVES
from tests.site_helpers import add

SALT = bytes(range(12))


# --- password hashes -------------------------------------------------------------------


def test_hash_has_mosquitto_2_format() -> None:
    line = mosquitto_hash("secret", salt=SALT)
    _, seven, iterations, salt, digest = line.split("$")
    assert (seven, iterations) == ("7", "101")
    assert base64.b64decode(salt) == SALT
    expected = hashlib.pbkdf2_hmac("sha512", b"secret", SALT, 101)
    assert base64.b64decode(digest) == expected and len(expected) == 64
    assert mosquitto_hash("secret", salt=SALT) == line
    assert mosquitto_hash("secret") != mosquitto_hash("secret")  # a fresh salt


def test_hash_iterations_are_part_of_the_line() -> None:
    line = mosquitto_hash("secret", salt=SALT, iterations=1000)
    assert line.startswith("$7$1000$")
    assert line != mosquitto_hash("secret", salt=SALT)


def test_hash_refuses_what_mosquitto_would_silently_refuse() -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        mosquitto_hash("secret", salt=b"0123456789abcdef")
    with pytest.raises(ValueError, match="iterations"):
        mosquitto_hash("secret", iterations=0)


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(path), "dev", "mật khẩu"],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=10,
    )
    theirs = path.read_text().strip().split(":", 1)[1]
    salt = base64.b64decode(theirs.split("$")[3])
    assert mosquitto_hash("mật khẩu", salt=salt) == theirs


# --- ACL text ----------------------------------------------------------------------------


def test_acl_text() -> None:
    devices = [
        DeviceEntry("loa-2", ("speaker",), ("thon-2", "all")),
        DeviceEntry("kiosk-1", ("kiosk",)),
        DeviceEntry("loa-1", ("speaker",), ("thon-1",)),
    ]
    text = acl_text("xaso", devices, ["controller"])
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert rules == [
        "pattern write xaso/dev/%u/status",
        "pattern write xaso/dev/%u/telemetry",
        "pattern write xaso/dev/%u/event",
        "pattern write xaso/dev/%u/calls",
        "pattern write xaso/dev/%u/ack",
        "pattern read xaso/dev/%u/cmd",
        "pattern read xaso/dev/%u/config",
        "pattern read xaso/dev/%u/schedule",
        "pattern read xaso/dev/%u/bookings",
        "pattern read xaso/dev/%u/receipt",
        "pattern read xaso/dev/%u/status",
        "user loa-1",
        "topic read xaso/grp/thon-1/cmd",
        "topic read xaso/grp/thon-1/schedule",
        "user loa-2",
        "topic read xaso/grp/thon-2/cmd",
        "topic read xaso/grp/thon-2/schedule",
        "topic read xaso/grp/all/cmd",
        "topic read xaso/grp/all/schedule",
        "user controller",
        "topic readwrite xaso/#",
    ]
    # %u always fills a whole level (mosquitto #209, #1155)
    for line in rules:
        if "%u" in line:
            assert "/%u/" in line


def test_acl_covers_every_device_topic_once() -> None:
    assert sorted(DEVICE_WRITES + DEVICE_READS + QUEUE_LEAVES) == sorted(DEVICE_LEAVES)


def test_acl_refuses_a_bad_root() -> None:
    with pytest.raises(Exception, match="root"):
        acl_text("xaso/#", [], ["controller"])


def test_regenerate_broker_files_restores_them(site: Site) -> None:
    add(site)
    passwd, acl = site.passwd_path.read_text(), site.acl_path.read_text()
    site.passwd_path.write_text("spoiled\n")
    site.acl_path.unlink()
    regenerate_broker_files(site.dir)
    assert (site.passwd_path.read_text(), site.acl_path.read_text()) == (passwd, acl)
