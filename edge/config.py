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

from kiosk.numbering import DEFAULT_TZ, SERVICE_CODE, Service
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
    # the hall speaker of these kiosks: plays their calls (`xaso device add --calls-from`)
    calls_from: list[DeviceId] = []
    # a call delivered later than this (the kiosk's outbox after a network drop) is dropped:
    # said late, it sends people to the wrong counter
    call_max_age_s: Annotated[float, Field(ge=1, le=600)] = 60.0

    @field_validator("calls_from")
    @classmethod
    def _calls_from(cls, value: list[str]) -> list[str]:
        twice = sorted({k for k in value if value.count(k) > 1})
        if twice:
            raise ValueError(f"list each kiosk once; repeated: {', '.join(twice)}")
        return value


def _office_services() -> list[Service]:
    """The usual services of a commune's one-stop office (DOMAIN.md), one letter each."""
    names = (
        ("ho-tich", "Hộ tịch", "Civil status", "A"),
        ("dat-dai", "Đất đai", "Land", "B"),
        ("chung-thuc", "Chứng thực", "Certification", "C"),
        ("ldtbxh", "Lao động - Thương binh và Xã hội", "Labour, invalids and social affairs", "D"),
    )
    return [Service(code=c, name_vi=vi, name_en=en, prefix=p) for c, vi, en, p in names]


class KioskButton(Section):
    """One physical button for a service, and the LED beside it (BCM pin numbers)."""

    service: Annotated[str, Field(pattern=SERVICE_CODE)]
    pin: Annotated[int, Field(ge=0, le=53)]
    led_pin: Annotated[int, Field(ge=0, le=53)] | None = None
    priority: bool = False  # a separate button for priority citizens


class KioskSection(Section):
    """The queue kiosk: services, counters, the thermal printer, buttons, pages, calls."""

    office: Annotated[str, Field(min_length=1, max_length=120)] = "Bộ phận một cửa"
    tz: str = DEFAULT_TZ
    services: Annotated[list[Service], Field(min_length=1, max_length=26)] = Field(
        default_factory=_office_services
    )
    counters: Annotated[int, Field(ge=1, le=99)] = 3
    # counter number (as a string, TOML keys are strings) -> the services it calls; default all
    counter_services: dict[str, list[str]] = {}
    queue_mode: Literal["strict", "interleave"] = "strict"
    interleave_every: Annotated[int, Field(ge=1, le=50)] = 3
    printer_url: str = "/dev/ttyUSB0"  # a device, or any pyserial URL (loop://, a pty)
    printer_baud: Literal[9600, 19200, 38400, 57600, 115200] = 115200
    printer_flow: Literal["rtscts", "xonxoff"] = "rtscts"
    paper_mm: Literal[58, 80] = 80
    printer_dots: Literal[384, 512, 576] | None = None  # default: 384 for 58 mm, 576 for 80 mm
    vietnamese: Literal["raster", "codepage"] = "raster"
    codepage: str | None = None
    native_qr: bool = True
    status_poll_s: Annotated[float, Field(ge=0.05, le=60)] = 2.0
    buttons: list[KioskButton] = []
    bounce_ms: Annotated[int, Field(ge=0, le=5000)] = 300
    web_host: str = "0.0.0.0"  # noqa: S104 - the office network's touchscreens and TV
    web_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    public_url: Annotated[str, Field(pattern=r"^https?://[!-~]+$", max_length=200)] | None = None
    # the hall speaker: on this device's audio out ("alsa", "wav"), another device ("remote":
    # a speaker with `calls_from` this kiosk), or none ("off")
    voice: Literal["off", "alsa", "wav", "remote"] = "alsa"
    alsa_device: str = "default"
    wav_dir: Path | None = None  # voice = "wav": where calls are recorded; default <state>/calls
    call_priority: Annotated[int, Field(ge=1, le=6)] = 4
    call_repeats: Annotated[int, Field(ge=1, le=3)] = 2

    @field_validator("tz")
    @classmethod
    def _tz(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone such as 'Asia/Ho_Chi_Minh'"
            ) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KioskSection:
        codes = [s.code for s in self.services]
        prefixes = [s.prefix for s in self.services]
        for what, values in (("service code", codes), ("prefix", prefixes)):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"each {what} must be unique; repeated: {', '.join(twice)}")
        for b in self.buttons:
            if b.service not in codes:
                raise ValueError(
                    f"button on pin {b.pin}: unknown service {b.service!r}; use one of {codes}"
                )
        pins = [b.pin for b in self.buttons] + [
            b.led_pin for b in self.buttons if b.led_pin is not None
        ]
        if len(pins) != len(set(pins)):
            raise ValueError("buttons and LEDs must each have their own pin")
        for key, served in self.counter_services.items():
            if not key.isdigit() or not 1 <= int(key) <= self.counters:
                raise ValueError(f"counter_services: {key!r} is not a counter (1-{self.counters})")
            unknown = sorted(set(served) - set(codes))
            if unknown or not served:
                raise ValueError(
                    f"counter_services.{key}: give known services, not {unknown or '[]'}"
                )
        if self.vietnamese == "codepage" and not self.codepage:
            raise ValueError("vietnamese = 'codepage' needs codepage, e.g. 'TCVN-3-1'")
        dots = self.printer_dots
        if dots is not None and (self.paper_mm == 58) != (dots == 384):
            raise ValueError(
                f"printer_dots {dots} does not fit {self.paper_mm} mm paper"
                " (384 for 58 mm, 512 or 576 for 80 mm)"
            )
        return self


class AgentConfig(Section):
    device: DeviceSection
    mqtt: MqttSection = MqttSection()
    trust: TrustSection
    state: StateSection = StateSection()
    telemetry: TelemetrySection = TelemetrySection()
    speaker: SpeakerSection = SpeakerSection()
    kiosk: KioskSection = Field(default_factory=KioskSection)

    @model_validator(mode="after")
    def _hall_speaker(self) -> AgentConfig:
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
        return self

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
