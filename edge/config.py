"""The agent's configuration: one TOML file, checked whole at start.

Every error names the file, the key and the fix, and all of them are
reported at once, with the key that was probably meant for a misspelt one.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocol.errors import ProtocolError
from protocol.signing import PublicKey
from protocol.topics import DEFAULT_ROOT, ID_PATTERN, check_root
from protocol.uplink import Role

DeviceId = Annotated[str, Field(pattern=f"^{ID_PATTERN}$")]


class ConfigError(Exception):
    """A configuration file that cannot be used; the message says how to fix it."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSection(Section):
    id: DeviceId
    roles: Annotated[list[Role], Field(min_length=1)] = ["speaker"]
    groups: list[DeviceId] = []
    name: str = ""


class MqttSection(Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    client_id: str | None = None
    root: str = DEFAULT_ROOT
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    tls: bool = False
    ca_file: Path | None = None
    reconnect_min_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    reconnect_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        try:
            return check_root(value)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _password(self) -> MqttSection:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give either 'password' or 'password_file', not both")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("'reconnect_max_s' must be at least 'reconnect_min_s'")
        return self


class TrustSection(Section):
    keys: Annotated[dict[str, str], Field(min_length=1)]

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        for kid, b64 in value.items():
            try:
                PublicKey.from_b64(b64, kid)
            except ProtocolError as exc:
                raise ValueError(f"key {kid!r}: {exc}") from None
        return value


class StateSection(Section):
    dir: Path = Path("/var/lib/xaso")


class TelemetrySection(Section):
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    thermal_zone: Path = Path("/sys/class/thermal/thermal_zone0/temp")


class SpeakerSection(Section):
    """The loudspeaker cluster: where sound goes, the amplifier relay, the clip cache."""

    sink: Literal["alsa", "wav"] = "alsa"
    alsa_device: str = "default"
    wav_dir: Path | None = None  # the "wav" sink's recordings; default: <state dir>/played
    amp_pin: Annotated[int, Field(ge=0, le=53)] | None = None  # BCM number; None: no relay
    amp_active_high: bool = True
    amp_preroll_ms: Annotated[int, Field(ge=0, le=30_000)] = 1500
    amp_hold_s: Annotated[float, Field(ge=0, le=3600)] = 10.0
    cache_budget_mb: Annotated[int, Field(ge=10)] = 2048
    prefetch_days: Annotated[float, Field(gt=0, le=31)] = 3.0
    resume_preempted: bool = False


class AgentConfig(Section):
    device: DeviceSection
    mqtt: MqttSection = MqttSection()
    trust: TrustSection
    state: StateSection = StateSection()
    telemetry: TelemetrySection = TelemetrySection()
    speaker: SpeakerSection = SpeakerSection()

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


_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it",
    "string_pattern_mismatch": "use 1-48 characters of a-z, 0-9 and '-'",
}


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``loc`` (for suggestions on a misspelt key)."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not isinstance(field.annotation, type):
            return []
        current = field.annotation
        if not issubclass(current, BaseModel):
            return []
    return list(current.model_fields)


def _describe(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s) in the agent configuration:"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:]).lstrip(".")
        where = f"[{loc[0]}] {key}" if key else str(loc[0]) if loc else "(file)"
        fix = _FIXES.get(err["type"], "")
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _known_keys(AgentConfig, loc), n=2)
            if close:
                fix = "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  - {where}: {message}" + (f" ({fix})" if fix else ""))
    return "\n".join(lines)


def parse_config(data: dict[str, Any], path: Path) -> AgentConfig:
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from None


def load_config(path: Path) -> AgentConfig:
    """Read and check an agent configuration file; raise ``ConfigError`` with every fault."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path)
