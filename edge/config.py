"""The agent's configuration: one TOML file, checked whole at start.

Every error names the file, the key and the fix, and all of them are
reported at once, with the key that was probably meant for a misspelt one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from broadcast.config import SpeakerSection
from kiosk.config import KioskSection
from plumbing.config_files import ConfigFileError, Section, read_toml, validate
from protocol.commands import DeviceOrGroupId as DeviceId
from protocol.errors import ProtocolError
from protocol.signing import PublicKey
from protocol.topics import DEFAULT_ROOT, check_root
from protocol.uplink import Role


class ConfigError(ConfigFileError):
    """An agent configuration that cannot be used; the message says how to fix it."""


class DeviceSection(Section, frozen=True, kw_only=True):
    id: DeviceId
    roles: Annotated[list[Role], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["speaker"]
    )
    groups: list[DeviceId] = []
    name: str = ""


def _root(value: str) -> str:
    try:
        return check_root(value)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None


class MqttSection(Section, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 1883
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    client_id: str | None = None
    root: str = DEFAULT_ROOT
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 30
    tls: bool = False
    ca_file: Path | None = None
    reconnect_min_s: Annotated[float, Meta(gt=0, le=60)] = 1.0
    reconnect_max_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    # The local address to connect from (a Pi on two networks); empty: the system's choice.
    bind_address: Annotated[str, Meta(max_length=64)] = ""
    # Thrown off twice in a row within takeover_stable_s of connecting: another device
    # holds this identity. Wait takeover_hold_s, four times longer each time, at most
    # takeover_hold_max_s (docs/broker-security.md).
    takeover_stable_s: Annotated[float, Meta(gt=0, le=86400)] = 300.0
    takeover_hold_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    takeover_hold_max_s: Annotated[float, Meta(gt=0, le=86400)] = 1800.0
    # Keep each event until the controller's receipt names it, sending it again after
    # receipt_timeout_s, doubling up to receipt_timeout_max_s (docs/delivery.md). Off only
    # for a controller older than receipts, which would let the outbox grow for ever.
    receipts: bool = True
    receipt_timeout_s: Annotated[float, Meta(ge=1, le=86400)] = 60.0
    receipt_timeout_max_s: Annotated[float, Meta(ge=1, le=604800)] = 3600.0
    field_checks = {"root": _root}

    def check(self) -> None:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either 'password' or 'password_file', not both")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("'reconnect_max_s' must be at least 'reconnect_min_s'")
        if self.takeover_hold_max_s < self.takeover_hold_s:
            raise ValueError("'takeover_hold_max_s' must be at least 'takeover_hold_s'")
        if self.receipt_timeout_max_s < self.receipt_timeout_s:
            raise ValueError("'receipt_timeout_max_s' must be at least 'receipt_timeout_s'")


def _keys(value: dict[str, str]) -> dict[str, str]:
    for kid, b64 in value.items():
        try:
            PublicKey.from_b64(b64, kid)
        except ProtocolError as exc:
            raise ValueError(f"key {kid!r}: {exc}") from None
    return value


class TrustSection(Section, frozen=True, kw_only=True):
    keys: Annotated[dict[str, str], Meta(min_length=1)]
    field_checks = {"keys": _keys}


class StateSection(Section, frozen=True, kw_only=True):
    dir: Path = Path("/var/lib/xaso")


class TelemetrySection(Section, frozen=True, kw_only=True):
    interval_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    thermal_zone: Path = Path("/sys/class/thermal/thermal_zone0/temp")


class AgentConfig(Section, frozen=True, kw_only=True):
    device: DeviceSection
    mqtt: MqttSection = msgspec.field(default_factory=MqttSection)
    trust: TrustSection
    state: StateSection = msgspec.field(default_factory=StateSection)
    telemetry: TelemetrySection = msgspec.field(default_factory=TelemetrySection)
    speaker: SpeakerSection = msgspec.field(default_factory=SpeakerSection)
    kiosk: KioskSection = msgspec.field(default_factory=KioskSection)

    def check(self) -> None:
        calls_from = self.speaker.calls_from
        if calls_from and "speaker" not in self.device.roles:
            raise ValueError(
                "[speaker] calls_from needs the speaker role: add 'speaker' to [device] roles, "
                "or remove calls_from"
            )
        if self.device.id in calls_from:
            raise ValueError(
                f"[speaker] calls_from lists this device ({self.device.id!r}): a kiosk that is "
                "also a speaker calls through its own player; remove it"
            )
        # after the role checks: a kiosk's tickets need a QR code a phone can open
        if "kiosk" in self.device.roles:
            self.kiosk.check_ticket_address()

    @property
    def username(self) -> str:
        return self.mqtt.username or self.device.id

    @property
    def client_id(self) -> str:
        """Unique and stable per device: two clients with one id kick each other off."""
        return self.mqtt.client_id or f"xaso-{self.device.id}"

    def password(self) -> str | None:
        if self.mqtt.password_file is not None:
            return self.mqtt.password_file.read_text(encoding="utf-8").strip()
        return self.mqtt.password


def parse_config(data: dict[str, Any], path: Path) -> AgentConfig:
    return validate(AgentConfig, data, path, what="agent configuration", error=ConfigError)


def load_config(path: Path) -> AgentConfig:
    """Read and check an agent configuration file; raise ``ConfigError`` with every fault."""
    return parse_config(read_toml(path, ConfigError), path)
