"""Provisioning from the web UI: the site directory's operations, then the broker's reload.

`controller.site.devices` writes the registry and the agent configuration,
`controller.site.broker_files` the broker's password and ACL files; Mosquitto
reads the last two only when told to. `reload_broker` tells it: SIGHUP to the pid in `[mqtt]
reload_pid_file`, or else `[mqtt] reload_command` (e.g. `["systemctl",
"reload", "mosquitto"]`). With neither configured the answer says so and the
operator reloads by hand.

Key rotation (docs/controller-data.md, "Signing-key rotation"): stage a key
that every generated configuration trusts, deploy the configurations, check
which devices already trust it (a `device.ping` signed with the staged key:
an agent that does not know the key acks `unknown_kid`), then activate it.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from controller import i18n
from controller.db.fleet_tables import AckRecord
from controller.settings import ControllerSettings
from controller.site import keys
from controller.site.directory import ProvisioningError, Site, open_site
from controller.site.documents import Signed, sign_next
from protocol.commands import ConfigSet
from protocol.envelope import seal
from protocol.topics import Topics

log = logging.getLogger(__name__)

RELOAD_TIMEOUT_S = 20
KEYCHECK = "keycheck-"  # command ids of trust checks: keycheck-<kid>-<random>

i18n.register(
    {
        "fleet.provisioning": (
            "Không thực hiện được: {detail}",
            "This cannot be done: {detail}",
        ),
        "fleet.provisioning_said": ("{vi}", "{en}"),
        "site.device_exists": (
            "Đã có thiết bị {id}: chọn mã khác, hoặc xóa thiết bị cũ trước.",
            "Device {id} already exists: choose another id, or remove the old one first.",
        ),
        "site.reserved_id": (
            "{id} là tên đăng nhập MQTT của máy chủ điều khiển: chọn mã khác.",
            "{id} is the controller's MQTT user name: choose another id.",
        ),
        "site.no_staged_key": (
            "Chưa có khóa mới đang chờ: hãy tạo khóa mới trước.",
            "No key is staged: stage a new key first.",
        ),
        "site.key_not_staged": (
            "Khóa {kid} không phải khóa mới đang chờ: hãy tạo khóa mới trước.",
            "Key {kid} is not the staged key: stage a new key first.",
        ),
        "fleet.reload_failed": (
            "Đã ghi tệp mật khẩu và ACL nhưng máy chủ MQTT chưa nạp lại: {detail}. "
            "Nạp lại bằng tay (systemctl reload mosquitto).",
            "The password and ACL files are written but the MQTT broker did not reload: "
            "{detail}. Reload it by hand (systemctl reload mosquitto).",
        ),
    }
)

Reload = Literal["signal", "command", "manual"]


def refusal(exc: ProvisioningError, status: int = 409) -> i18n.Refusal:
    """What the web says of a site refusal: its own words for one it knows by code, the
    two languages of one written "vi / en", else the message (never a path: those
    the web can meet have codes)."""
    if exc.code:
        return i18n.Refusal(status, f"site.{exc.code}", None, **exc.params)
    vi, said, en = str(exc).partition(" / ")
    if said:
        return i18n.Refusal(status, "fleet.provisioning_said", vi=vi, en=en)
    return i18n.Refusal(status, "fleet.provisioning", detail=str(exc))


def reload_broker(settings: ControllerSettings) -> Reload:
    """Make Mosquitto re-read its password and ACL files; say how, or that nobody did."""
    mqtt = settings.mqtt
    try:
        if mqtt.reload_pid_file is not None:
            pid_text = settings.path(mqtt.reload_pid_file).read_text(encoding="ascii").strip()
            os.kill(int(pid_text), signal.SIGHUP)
            return "signal"
        if mqtt.reload_command:
            subprocess.run(  # a list from the operator's own configuration, no shell
                mqtt.reload_command, check=True, capture_output=True, timeout=RELOAD_TIMEOUT_S
            )
            return "command"
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        log.error("broker reload failed: %s", exc)
        raise i18n.Refusal(502, "fleet.reload_failed", detail=str(exc)) from None
    return "manual"


@dataclass(frozen=True)
class KeyStatus:
    active: str
    staged: str | None
    trusted: list[str]


def key_status(site: Site) -> KeyStatus:
    meta = site.meta()
    return KeyStatus(meta["active_key"], meta.get("staged_key"), sorted(site.signing_keys()))


def staged_key_check(site: Site, now_ms: int) -> list[tuple[str, bytes]]:
    """One `device.ping` per registered device, signed with the staged key: (topic, payload)."""
    status = key_status(site)
    if status.staged is None:
        raise ProvisioningError("no key is staged: stage one first", "no_staged_key")
    key = site.signing_keys()[status.staged]
    topics = Topics(site.root)
    return [
        (
            topics.cmd(d.id),
            seal(
                "device.ping",
                {},
                key,
                now_ms,
                to=topics.cmd(d.id),
                cmd_id=f"{KEYCHECK}{status.staged}-{secrets.token_hex(6)}",
            ),
        )
        for d in site.devices()
    ]


def trust_answers(session: Session, kid: str) -> dict[str, str]:
    """Per device, what its agents answered to the staged key's pings: "ok" or the error."""
    rows = session.execute(
        select(AckRecord.device_id, AckRecord.ok, AckRecord.error)
        .where(AckRecord.cmd.startswith(f"{KEYCHECK}{kid}-"))
        .order_by(AckRecord.ts_ms)
    )
    answers: dict[str, str] = {}
    for device_id, ok, error in rows:
        if answers.get(device_id) != "ok":  # once trusted, an older failure does not matter
            answers[device_id] = "ok" if ok else (error or "refused")
    return answers


def site_of(settings: ControllerSettings) -> Site:
    try:
        return open_site(settings.site_dir)
    except ProvisioningError:
        raise i18n.Refusal(503, "station.no_site") from None


def stage_key(settings: ControllerSettings) -> str:
    try:
        return keys.stage_key(settings.site_dir)
    except ProvisioningError as exc:
        raise refusal(exc) from None


def activate_key(settings: ControllerSettings, kid: str) -> None:
    try:
        keys.activate_key(settings.site_dir, kid)
    except ProvisioningError as exc:
        raise refusal(exc) from None


def signed_groups(
    sessions: sessionmaker[Session], site: Site, device_id: str, groups: list[str], now_ms: int
) -> Signed:
    """The device's next `config.set` with ``groups``, signed and kept (not yet sent).

    The agent subscribes to its groups' topics from this document; the other
    fields stay as the controller last sent them (defaults the first time).
    """

    def build(version: int, last: dict[str, Any] | None) -> ConfigSet:
        return msgspec.convert({**(last or {}), "version": version, "groups": groups}, ConfigSet)

    topic = Topics(site.root).dev(device_id, "config")
    with sessions.begin() as session:
        return sign_next(
            session, topic, "config.set", build=build, key=site.signing_key(), now_ms=now_ms
        )
