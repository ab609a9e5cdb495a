"""The controller's configuration: one TOML file, checked whole at start.

Like the agent's (`edge/config.py`), every error names the file, the key and
the fix, all at once. Relative paths are taken from the configuration file's
directory, so a site can be moved as one folder. The session secret lives in
its own file, created mode 0600 on first run, so the configuration itself can
be shared or kept in version control.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from plumbing.config_files import ConfigFileError, Section, read_toml, validate
from protocol.commands import check_tz
from protocol.topics import ID_PATTERN

SECRET_BYTES = 32


class SettingsError(ConfigFileError):
    """A controller configuration that cannot be used; the message says how to fix it."""


Port = Annotated[int, Meta(ge=1, le=65535)]
MAX_WORKERS = 32
CLIENT_ID_MAX = 64


class SiteSection(Section, frozen=True, kw_only=True):
    """The provisioning site directory (keys, device registry, broker files)."""

    dir: Path = Path("xaso-site")
    clips_dir: Path = Path("clips")


def _database_url(value: str) -> str:
    if value and not value.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg://")):
        raise ValueError("use 'sqlite:////absolute/path.db' or 'postgresql://user:pass@host/db'")
    return value


def _http_url(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("give an http:// or https:// URL, or leave it empty")
    return value.rstrip("/")


def _http_url_as_given(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("give an http:// or https:// URL, or leave it empty")
    return value


def _commune_webhooks(value: dict[str, str]) -> dict[str, str]:
    for commune, url in value.items():
        if not re.fullmatch(ID_PATTERN, commune):
            raise ValueError(f"{commune!r} is not a commune id (such as phu-an)")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"give {commune} an http:// or https:// URL")
    return value


class DatabaseSection(Section, frozen=True, kw_only=True):
    # Empty: a SQLite file `controller.db` next to the configuration file.
    url: str = ""
    # False: refuse to start unless `xaso controller migrate` has brought the schema to head.
    migrate_at_start: bool = True

    field_checks = {"url": _database_url}


class HttpSection(Section, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Port = 8080
    # Proxies whose X-Forwarded-For / -Proto are believed (uvicorn's forwarded_allow_ips).
    forwarded_allow_ips: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1"])
    # Where devices reach this controller (clip downloads); empty: http://{host}:{port}.
    public_url: Annotated[str, Meta(pattern=r"^(https?://[!-~]+)?\Z", max_length=200)] = ""
    # Server processes on the one port (controller/serving.py), each a replica with its own
    # MQTT client id, <client id>-1 ... -N; 1: one process, as it always was.
    workers: Annotated[int, Meta(ge=1, le=MAX_WORKERS)] = 1


class StreamSection(Section, frozen=True, kw_only=True):
    """The stream server (Icecast) live voice goes through (controller/radio/streams.py)."""

    # Where devices pull and the controller sources, http://host:port; empty: no live voice.
    url: Annotated[str, Meta(pattern=r"^(http://[!-~]+)?\Z", max_length=200)] = ""
    # The Icecast source password, alone in this file (mode 0600), known to no device.
    source_password_file: Path = Path("icecast.source")


class MqttSection(Section, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Port = 1883
    tls: bool = False
    ca_file: Path | None = None
    # The controller's MQTT client id, the same across restarts: the broker keeps its
    # session and queues what devices send while it is away. Each replica its own.
    # Empty: xaso-controller-<host name>.
    client_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]*\Z", max_length=CLIENT_ID_MAX)] = ""
    # How the controller makes the broker re-read its password and ACL files after
    # a device is added or removed from the web UI: SIGHUP to the pid in this
    # file, or else this command (run without a shell); neither: reload by hand.
    reload_pid_file: Path | None = None
    reload_command: list[str] = []


class SecuritySection(Section, frozen=True, kw_only=True):
    secret_file: Path = Path("controller.secret")
    session_hours: Annotated[float, Meta(gt=0, le=24 * 30)] = 12.0
    session_idle_min: Annotated[float, Meta(gt=0, le=24 * 60)] = 120.0
    login_max_failures: Annotated[int, Meta(ge=1, le=100)] = 5
    login_ip_max_failures: Annotated[int, Meta(ge=1, le=10_000)] = 30
    login_window_min: Annotated[float, Meta(gt=0, le=24 * 60)] = 15.0
    lockout_min: Annotated[float, Meta(gt=0, le=24 * 60)] = 15.0
    argon2_time_cost: Annotated[int, Meta(ge=1, le=20)] = 3
    argon2_memory_kib: Annotated[int, Meta(ge=8, le=4 * 1024 * 1024)] = 65536
    argon2_parallelism: Annotated[int, Meta(ge=1, le=16)] = 4


class AlertsSection(Section, frozen=True, kw_only=True):
    offline_after_min: Annotated[float, Meta(gt=0, le=7 * 24 * 60)] = 10.0
    temp_high_c: Annotated[float, Meta(gt=0, le=150)] = 75.0
    disk_low_pct: Annotated[float, Meta(ge=0, le=100)] = 10.0
    webhook_url: str = ""  # the province's receiver: every alert
    # a commune's receiver, by commune id: that commune's devices' alerts only
    commune_webhooks: dict[str, str] = {}
    webhook_timeout_s: Annotated[float, Meta(gt=0, le=120)] = 5.0
    webhook_max_attempts: Annotated[int, Meta(ge=1, le=100)] = 10  # then marked failed
    webhook_retry_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0  # the first retry's bound
    webhook_retry_max_s: Annotated[float, Meta(gt=0, le=86400)] = 1800.0  # doubling up to
    check_every_s: Annotated[float, Meta(ge=0.1, le=3600)] = 15.0  # how often rules run

    field_checks = {"webhook_url": _http_url_as_given, "commune_webhooks": _commune_webhooks}

    def check(self) -> None:
        if self.webhook_retry_max_s < self.webhook_retry_s:
            raise ValueError("webhook_retry_max_s must be at least webhook_retry_s")


class UpwardSection(Section, frozen=True, kw_only=True):
    """The province's source-information system (controller/fleet/upward.py, docs/upward.md)."""

    url: str = ""  # its base address; empty: nothing is sent upward
    token: str = ""  # the Bearer token it gave this commune
    commune: str = ""  # the site's code in its records (MaXa); its communes' are below
    # a commune's code in the province's records, by commune id (one not listed: its id)
    commune_codes: dict[str, str] = {}
    ping_every_s: Annotated[float, Meta(ge=5, le=3600)] = 60.0
    timeout_s: Annotated[float, Meta(gt=0, le=120)] = 10.0
    retry_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0  # the first retry's bound
    retry_max_s: Annotated[float, Meta(gt=0, le=86400)] = 300.0  # doubling up to
    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 50  # then that record is set aside
    keep_days: Annotated[int, Meta(ge=1, le=365)] = 7  # sent records kept this long
    # bulletins and schedules from above (controller/radio/downward.py): asked for this often
    bulletins_every_s: Annotated[float, Meta(ge=5, le=3600)] = 30.0
    download_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 300.0  # one audio file, whole

    field_checks = {"url": _http_url}

    def check(self) -> None:
        if self.url and not (self.token and self.commune):
            raise ValueError("with a url, give the token and the commune's code too")
        if self.retry_max_s < self.retry_s:
            raise ValueError("retry_max_s must be at least retry_s")


class TelemetrySection(Section, frozen=True, kw_only=True):
    # raw samples; roll-ups are kept longer (controller/fleet/rollups.py, Retention)
    retention_days: Annotated[int, Meta(ge=1, le=3650)] = 7
    maintain_every_min: Annotated[float, Meta(ge=0.01, le=24 * 60)] = 5.0  # roll-ups, deletes


class DocumentsSection(Section, frozen=True, kw_only=True):
    """Signed documents resent to devices that report an older version (self-healing)."""

    check_every_s: Annotated[float, Meta(ge=0.1, le=3600)] = 30.0  # how often to look
    # seen behind this long: resent; then the wait doubles, up to backoff_max_s
    resend_after_s: Annotated[float, Meta(ge=1, le=7 * 86400)] = 120.0
    backoff_max_s: Annotated[float, Meta(ge=1, le=7 * 86400)] = 3600.0


BOOKING_HOURS = (("07:00", "11:15"), ("13:15", "16:30"))
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")


def _booking_hours(hours: list[tuple[str, str]]) -> list[tuple[str, str]]:
    if not hours:
        raise ValueError("a service needs at least one window of hours")
    for start, end in hours:
        if not (_HHMM.fullmatch(start) and _HHMM.fullmatch(end)):
            raise ValueError(f"window {start}-{end}: use HH:MM, 24-hour clock, e.g. 07:30")
        if start >= end:
            raise ValueError(f"window {start}-{end} ends before it starts")
    return hours


class BookingService(Section, frozen=True, kw_only=True):
    """A service of an office that takes bookings, as in its kiosk's ``[kiosk]`` section."""

    code: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,39}\Z")]
    name_vi: Annotated[str, Meta(min_length=1, max_length=100)]
    name_en: Annotated[str, Meta(min_length=1, max_length=100)]
    hours: list[tuple[str, str]] = msgspec.field(default_factory=lambda: list(BOOKING_HOURS))
    weekdays: list[Annotated[int, Meta(ge=0, le=6)]] = msgspec.field(
        default_factory=lambda: [0, 1, 2, 3, 4]  # 0 = Monday
    )
    field_checks = {"hours": _booking_hours}


class BookingOffice(Section, frozen=True, kw_only=True):
    """One office, named by the device id of the kiosk that issues its numbers."""

    kiosk: Annotated[str, Meta(pattern=rf"^{ID_PATTERN}\Z")]
    name: Annotated[str, Meta(min_length=1, max_length=120)]
    tz: str = "Asia/Ho_Chi_Minh"
    slot_min: Annotated[int, Meta(ge=5, le=120)] = 15
    capacity: Annotated[int, Meta(ge=1, le=50)] = 2  # citizens per slot and service
    services: Annotated[list[BookingService], Meta(min_length=1, max_length=26)]

    field_checks = {"tz": check_tz}

    def service(self, code: str) -> BookingService | None:
        return next((s for s in self.services if s.code == code), None)


class BookingSection(Section, frozen=True, kw_only=True):
    """``[booking]``: the offices whose citizens may book a number ahead (controller/queue/)."""

    offices: list[BookingOffice] = []
    days_ahead: Annotated[int, Meta(ge=1, le=30)] = 7
    per_phone_per_day: Annotated[int, Meta(ge=1, le=10)] = 2  # Hà Nội's iHanoi rule
    # the public page: attempts (booked or refused, and cancels) per address in a window
    attempts_per_ip: Annotated[int, Meta(ge=1, le=10_000)] = 20
    attempt_window_min: Annotated[float, Meta(gt=0, le=24 * 60)] = 10.0
    # the ticket status page (/ve/...): views per address a minute; a phone reloads every 15 s
    status_views_per_ip_per_min: Annotated[int, Meta(ge=1, le=1_000_000)] = 240

    def check(self) -> None:
        kiosks = [o.kiosk for o in self.offices]
        if len(kiosks) != len(set(kiosks)):
            raise ValueError("each kiosk may be named by one office only")

    def office(self, kiosk: str) -> BookingOffice | None:
        return next((o for o in self.offices if o.kiosk == kiosk), None)


class ControllerSettings(Section, frozen=True, kw_only=True):
    site: SiteSection = msgspec.field(default_factory=SiteSection)
    database: DatabaseSection = msgspec.field(default_factory=DatabaseSection)
    http: HttpSection = msgspec.field(default_factory=HttpSection)
    mqtt: MqttSection = msgspec.field(default_factory=MqttSection)
    security: SecuritySection = msgspec.field(default_factory=SecuritySection)
    alerts: AlertsSection = msgspec.field(default_factory=AlertsSection)
    telemetry: TelemetrySection = msgspec.field(default_factory=TelemetrySection)
    documents: DocumentsSection = msgspec.field(default_factory=DocumentsSection)
    upward: UpwardSection = msgspec.field(default_factory=UpwardSection)
    booking: BookingSection = msgspec.field(
        default_factory=BookingSection
    )  # bookings ahead (controller/queue/)
    stream: StreamSection = msgspec.field(default_factory=StreamSection)
    # The directory relative paths are taken from; set by `load_settings`.
    base_dir: Path = Path()

    def path(self, value: Path) -> Path:
        return value if value.is_absolute() else self.base_dir / value

    @property
    def site_dir(self) -> Path:
        return self.path(self.site.dir)

    @property
    def clips_dir(self) -> Path:
        return self.path(self.site.clips_dir)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.path(Path('controller.db'))}"

    @property
    def secret_path(self) -> Path:
        return self.path(self.security.secret_file)

    @property
    def mqtt_client_id(self) -> str:
        """The MQTT client id this process connects with: the configured one, or
        xaso-controller-<host name>; the same on every start."""
        return self.mqtt.client_id or f"xaso-controller-{socket.gethostname()}"[:CLIENT_ID_MAX]

    def for_worker(self, index: int) -> ControllerSettings:
        """Worker ``index``'s settings (1 to ``[http] workers``): the same, but for its own
        stable client id, ``<client id>-<index>``, which a restarted worker takes again."""
        suffix = f"-{index}"
        base = self.mqtt_client_id[: CLIENT_ID_MAX - len(suffix)]
        mqtt = msgspec.structs.replace(self.mqtt, client_id=base + suffix)
        return msgspec.structs.replace(self, mqtt=mqtt)


def parse_settings(data: dict[str, Any], path: Path) -> ControllerSettings:
    if "base_dir" in data:
        raise SettingsError(f"{path}: [base_dir] is not a setting (remove it)")
    return validate(
        ControllerSettings,
        {**data, "base_dir": path.resolve().parent},
        path,
        what="controller configuration",
        error=SettingsError,
        hidden=frozenset({"base_dir"}),
    )


def load_settings(path: Path) -> ControllerSettings:
    """Read and check a controller configuration; raise `SettingsError` with every fault."""
    data = read_toml(path, SettingsError)
    return parse_settings(data, path)


def load_secret(settings: ControllerSettings) -> bytes:
    """The session-signing secret: read, or created (mode 0600) on the first run."""
    path = settings.secret_path
    where = f"{path} ([security] secret_file)"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SettingsError(f"{where}: cannot create the secret: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(SECRET_BYTES) + "\n")
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{where}: cannot read the secret: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"{where}: readable by others; run `chmod 600 {path}`")
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < SECRET_BYTES:
        raise SettingsError(
            f"{where}: not {SECRET_BYTES * 2} hex digits; delete the file to have a new one made"
        )
    return secret
