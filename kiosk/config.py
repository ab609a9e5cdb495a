"""The queue's section of an agent's configuration: ``[kiosk]``.

The feature owns its schema; the agent's configuration (edge/config.py)
composes it with the host's own sections.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from kiosk.numbering import DEFAULT_TZ, Service, ServiceCode
from kiosk.officers import check_pin_hash
from plumbing.config_files import Section
from protocol.topics import ID_PATTERN

WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - recognised, never bound here
HOST = r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}\Z"  # an IP address or a DNS name
PUBLIC_URL = r"^https?://[!-~]+\Z"
QueueId = Annotated[str, Meta(pattern=rf"^{ID_PATTERN}\Z")]


def _loopback(host: str) -> bool:
    """127.0.0.1, ::1, localhost: an address a citizen's phone cannot reach."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unreachable(host: str) -> bool:
    return host.strip("[]") in WILDCARD_HOSTS or _loopback(host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _office_services() -> list[Service]:
    """The usual services of a commune's one-stop office (DOMAIN.md), one letter each."""
    names = (
        ("ho-tich", "Hộ tịch", "Civil status", "A"),
        ("dat-dai", "Đất đai", "Land", "B"),
        ("chung-thuc", "Chứng thực", "Certification", "C"),
        ("ldtbxh", "Lao động - Thương binh và Xã hội", "Labour, invalids and social affairs", "D"),
    )
    return [Service(code=c, name_vi=vi, name_en=en, prefix=p) for c, vi, en, p in names]


class KioskButton(Section, frozen=True, kw_only=True):
    """One physical button for a service, and the LED beside it (BCM pin numbers)."""

    service: ServiceCode
    pin: Annotated[int, Meta(ge=0, le=53)]
    led_pin: Annotated[int, Meta(ge=0, le=53)] | None = None
    priority: bool = False  # a separate button for priority citizens


def _pin_hash(value: str) -> str:
    check_pin_hash(value)
    return value


class KioskOfficer(Section, frozen=True, kw_only=True):
    """A counter officer who signs in with a PIN (or one PIN for a counter: ``counters = [n]``)."""

    id: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,47}\Z")]
    name: Annotated[str, Meta(min_length=1, max_length=80)]
    pin_hash: str  # made by `python -m kiosk.officers`
    counters: list[Annotated[int, Meta(ge=1, le=99)]] = []  # default: every counter
    field_checks = {"pin_hash": _pin_hash}


def _tz(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone such as 'Asia/Ho_Chi_Minh'") from None
    return value


def _reachable(name: str) -> Callable[[str | None], str | None]:
    """The check of ``name``, a URL for citizens' phones: not this machine's own address."""

    def check(value: str | None) -> str | None:
        if value is None:
            return None
        host = urlsplit(value).hostname or ""
        if _unreachable(host):
            raise ValueError(
                f"{name} {value!r} cannot be reached from a citizen's phone: give the "
                "address phones open, such as 'http://192.168.1.10:8080' or the controller's "
                f"public address, or remove {name}"
            )
        return value.rstrip("/")

    return check


def _office_address(value: str | None) -> str | None:
    if value is not None and _unreachable(value):
        raise ValueError(
            f"office_address {value!r} is not this kiosk's address on the office network:"
            " give the address the hall TV and phones on the office Wi-Fi open, such as"
            " '192.168.1.10'"
        )
    return value


class KioskSection(Section, frozen=True, kw_only=True):
    """The queue kiosk: services, counters, the thermal printer, buttons, pages, calls."""

    office: Annotated[str, Meta(min_length=1, max_length=120)] = "Bộ phận một cửa"
    tz: str = DEFAULT_TZ
    services: Annotated[list[Service], Meta(min_length=1, max_length=26)] = msgspec.field(
        default_factory=_office_services
    )
    counters: Annotated[int, Meta(ge=1, le=99)] = 3
    # counter number (as a string, TOML keys are strings) -> the services it calls; default all
    counter_services: dict[str, list[str]] = {}
    queue_mode: Literal["strict", "interleave"] = "strict"
    interleave_every: Annotated[int, Meta(ge=1, le=50)] = 3
    printer_url: str = "/dev/ttyUSB0"  # a device, or any pyserial URL (loop://, a pty)
    printer_baud: Literal[9600, 19200, 38400, 57600, 115200] = 115200
    printer_flow: Literal["rtscts", "xonxoff"] = "rtscts"
    paper_mm: Literal[58, 80] = 80
    printer_dots: Literal[384, 512, 576] | None = None  # default: 384 for 58 mm, 576 for 80 mm
    vietnamese: Literal["raster", "codepage"] = "raster"
    codepage: str | None = None
    native_qr: bool = True
    status_poll_s: Annotated[float, Meta(ge=0.05, le=60)] = 2.0
    buttons: list[KioskButton] = []
    bounce_ms: Annotated[int, Meta(ge=0, le=5000)] = 300
    web_host: str = "0.0.0.0"  # noqa: S104 - the office network's touchscreens and TV
    web_port: Annotated[int, Meta(ge=1, le=65535)] = 8080
    # the ticket's QR code: public_url if given (an address citizens' phones reach from anywhere,
    # such as the controller's public address forwarding to this kiosk), else this kiosk on the
    # office network: office_address, or web_host when it is one address (ticket_base_url)
    public_url: Annotated[str, Meta(pattern=PUBLIC_URL, max_length=200)] | None = None
    office_address: Annotated[str, Meta(pattern=HOST)] | None = None
    # the controller's public address: when set, the QR code opens the ticket's page there
    # (/ve/<device>/<ticket>, from the events it holds), reachable off the office Wi-Fi
    controller_url: Annotated[str, Meta(pattern=PUBLIC_URL, max_length=200)] | None = None
    # the hall TV: one announcement line under the numbers, Vietnamese text as it is to be read
    hall_notice: Annotated[str, Meta(max_length=300)] = ""
    # the hall speaker: on this device's audio out ("alsa", "wav"), another device ("remote":
    # a speaker with `calls_from` this kiosk), or none ("off")
    voice: Literal["off", "alsa", "wav", "remote"] = "alsa"
    alsa_device: str = "default"
    wav_dir: Path | None = None  # voice = "wav": where calls are recorded; default <state>/calls
    call_priority: Annotated[int, Meta(ge=1, le=6)] = 4
    call_repeats: Annotated[int, Meta(ge=1, le=3)] = 2
    # who may open the counter pages and switch on a counter's rating device (docs/kiosk.md)
    officers: list[KioskOfficer] = []
    session_hours: Annotated[float, Meta(gt=0, le=24)] = 12.0
    pin_attempts: Annotated[int, Meta(ge=1, le=20)] = 5  # wrong PINs in a row before a lockout
    pin_lockout_s: Annotated[float, Meta(ge=1, le=900)] = 60.0  # doubles with each lockout
    # one number series and queue with the other kiosks of the office (`xaso device add
    # --queue`): the office queue's id and every kiosk of it, this one included; the order
    # gives each its own numbers (docs/kiosk.md, "Several kiosks, one queue")
    queue: QueueId | None = None
    queue_kiosks: Annotated[list[QueueId], Meta(max_length=9)] = []
    # a booked citizen later than this after their slot's start waits as a walk-in (kiosk/booked.py)
    booking_grace_min: Annotated[float, Meta(ge=0, le=120)] = 15.0
    field_checks = {
        "tz": _tz,
        "public_url": _reachable("public_url"),
        "controller_url": _reachable("controller_url"),
        "office_address": _office_address,
    }

    @property
    def ticket_base_url(self) -> str | None:
        """Where the ticket's QR code points (without ``/ve/...``); None: nowhere reachable.

        A kiosk bound to every interface (0.0.0.0, ::) has no one address of its
        own to print, so it needs public_url or office_address; a kiosk bound to
        loopback only (a bench, the demo) prints its loopback address.
        """
        if self.public_url is not None:
            return self.public_url
        host = self.office_address or self.web_host
        if host.strip("[]") in WILDCARD_HOSTS:
            return None
        return f"http://{_url_host(host)}:{self.web_port}"

    def status_url(self, device_id: str | None, ticket_id: str) -> str:
        """The ticket's page for its QR code: on the controller when its address is given
        (and the kiosk knows its device id), else on the office network (ticket_base_url)."""
        if self.controller_url is not None and device_id is not None:
            return f"{self.controller_url}/ve/{device_id}/{ticket_id}"
        base = self.ticket_base_url or f"http://127.0.0.1:{self.web_port}"
        return f"{base}/ve/{ticket_id}"

    def check_ticket_address(self) -> None:
        """Refuses a kiosk whose tickets would carry a QR code no phone can open."""
        if self.ticket_base_url is None and self.controller_url is None:
            raise ValueError(
                f"[kiosk] web_host = {self.web_host!r} listens on every interface, so the "
                "ticket's QR code has no address to link to: set [kiosk] office_address to "
                "this kiosk's address on the office network (e.g. '192.168.1.10', fixed in "
                "the router), or [kiosk] controller_url to the controller's public address "
                "(e.g. 'https://tanphu.xaso.vn'), or [kiosk] public_url to an address "
                "phones reach, or web_host to that one address"
            )

    def check(self) -> None:
        self._consistent()
        self._queue()
        self._officers()

    def _consistent(self) -> None:
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
            raise ValueError("vietnamese = 'codepage' needs codepage, e.g. 'CP1258'")
        dots = self.printer_dots
        if dots is not None and (self.paper_mm == 58) != (dots == 384):
            raise ValueError(
                f"printer_dots {dots} does not fit {self.paper_mm} mm paper"
                " (384 for 58 mm, 512 or 576 for 80 mm)"
            )

    def _queue(self) -> None:
        if self.queue_kiosks and self.queue is None:
            raise ValueError("queue_kiosks needs queue, the office queue's id")
        if self.queue is not None and not self.queue_kiosks:
            raise ValueError(f"queue {self.queue!r}: list its kiosks in queue_kiosks")
        twice = sorted({k for k in self.queue_kiosks if self.queue_kiosks.count(k) > 1})
        if twice:
            raise ValueError(f"queue_kiosks: list each kiosk once; repeated: {', '.join(twice)}")

    def _officers(self) -> None:
        ids = [o.id for o in self.officers]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"officers: each id must be unique; repeated: {', '.join(twice)}")
        for o in self.officers:
            if any(c > self.counters for c in o.counters):
                raise ValueError(
                    f"officers.{o.id}.counters: counters are numbered 1 to {self.counters}"
                )

    def queue_slot(self, device_id: str) -> tuple[int, int]:
        """This kiosk's place among the kiosks of its queue, and how many they are."""
        if device_id not in self.queue_kiosks:
            raise ValueError(
                f"queue_kiosks {self.queue_kiosks} does not list this kiosk ({device_id!r}):"
                " add it, or provision it again with `xaso device add --queue`"
            )
        return self.queue_kiosks.index(device_id), len(self.queue_kiosks)
