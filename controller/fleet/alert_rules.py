"""Alert rules: from the fleet's latest state and recent events, the alerts that should be open.

Pure: no I/O, the time is an argument. The engine (controller/fleet/alerts.py)
compares this set with the open alerts in the database, raises what is new
and clears what is no longer here. An alert is identified by (kind, device),
so a condition that stays true stays one alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.events import AudioFault, PlayFinished, PlayInterrupted, PlayMissed

MINUTE_MS = 60_000

OFFLINE = "device.offline"
TEMP_HIGH = "temp.high"
DISK_LOW = "disk.low"
CLOCK_UNSYNCED = "clock.unsynced"
PAPER_OUT = "printer.paper_out"
COVER_OPEN = "printer.cover_open"
PRINTER_OFFLINE = "printer.offline"
PAPER_LOW = "printer.paper_low"
UNPRINTABLE = "printer.unprintable"
PLAY_MISSED = "play.missed"
PLAY_FAILED = "play.failed"
DEAD_AIR = "stream.dead_air"  # a relayed stream connected but silent (broadcast.audio.relay)
UNREACHABLE = "stream.unreachable"  # a relay's stream never came: its fallback aired, or none
IDENTITY_DUPLICATE = "identity.duplicate"  # raised by controller/fleet/identity_rules.py
KINDS = (
    OFFLINE,
    TEMP_HIGH,
    DISK_LOW,
    CLOCK_UNSYNCED,
    PAPER_OUT,
    COVER_OPEN,
    PLAY_MISSED,
    PLAY_FAILED,
    DEAD_AIR,
    UNREACHABLE,
    PRINTER_OFFLINE,
    PAPER_LOW,
    UNPRINTABLE,
    IDENTITY_DUPLICATE,
)
# Not a fault: the operator's own quiet hours keep a normal item from playing.
EXPECTED_MISS_REASONS = frozenset({"quiet_hours"})
PLAY_DETAILS_MAX = 10


@dataclass(frozen=True)
class Thresholds:
    offline_after_min: float = 5.0
    temp_high_c: float = 75.0
    disk_low_pct: float = 10.0  # used when the device reports disk_free_pct
    disk_low_mb: float = 500.0  # what every agent reports today
    play_window_min: float = 60.0  # a missed or failed play stays alerted this long


@dataclass(frozen=True)
class DeviceSnapshot:
    """What the rules read about one device (from device_state and devices)."""

    device_id: str
    state: str | None = None  # online | offline | None (never said)
    changed_ms: int | None = None  # when `state` last changed (controller clock)
    last_seen_ms: int | None = None  # last message of any kind (controller clock)
    cpu_temp_c: float | None = None
    disk_free_mb: float | None = None
    disk_free_pct: float | None = None
    clock_synced: bool | None = None
    printer: Mapping[str, Any] | None = None  # latest printer.status body


@dataclass(frozen=True)
class PlayEvent:
    """A play.missed, play.finished, play.interrupted or audio.fault event (received_ms on
    the controller's clock)."""

    device_id: str
    event_id: str
    type: str
    received_ms: int
    # read as its model (protocol.events)
    body: PlayMissed | PlayFinished | PlayInterrupted | AudioFault


@dataclass(frozen=True)
class AlertSpec:
    kind: str
    device_id: str
    severity: str  # warning | critical
    message_vi: str
    message_en: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.device_id)


def active_alerts(
    devices: Iterable[DeviceSnapshot],
    play_events: Iterable[PlayEvent],
    thresholds: Thresholds,
    now_ms: int,
) -> dict[tuple[str, str], AlertSpec]:
    """Every alert that should be open at ``now_ms``, by (kind, device)."""
    found: list[AlertSpec] = []
    for device in devices:
        down = _offline(device, thresholds, now_ms)
        if down is not None:
            found.append(down)
        else:  # an offline device's last readings are stale: its offline alert says enough
            found += _health(device, thresholds)
    play_events = list(play_events)
    found += _plays(play_events, thresholds, now_ms)
    found += _dead_air(play_events, thresholds, now_ms)
    found += _unreachable(play_events, thresholds, now_ms)
    return {a.key: a for a in found}


def _offline(d: DeviceSnapshot, t: Thresholds, now_ms: int) -> AlertSpec | None:
    limit_ms = t.offline_after_min * MINUTE_MS
    if d.state == "offline" and d.changed_ms is not None and now_ms - d.changed_ms >= limit_ms:
        since = d.changed_ms
    elif d.last_seen_ms is not None and now_ms - d.last_seen_ms >= limit_ms:
        since = d.last_seen_ms  # no Will yet (a half-open TCP link), but silent
    else:
        return None
    minutes = int((now_ms - since) // MINUTE_MS)
    return AlertSpec(
        OFFLINE,
        d.device_id,
        "critical",
        f"Thiết bị {d.device_id} mất kết nối {minutes} phút",
        f"Device {d.device_id} offline for {minutes} min",
        {"since_ms": since},
    )


def _health(d: DeviceSnapshot, t: Thresholds) -> list[AlertSpec]:
    found = []
    dev = d.device_id
    if d.cpu_temp_c is not None and d.cpu_temp_c >= t.temp_high_c:
        found.append(
            AlertSpec(
                TEMP_HIGH,
                dev,
                "warning",
                f"Nhiệt độ {dev} cao: {d.cpu_temp_c:.0f} °C",
                f"{dev} temperature high: {d.cpu_temp_c:.0f} °C",
                {"cpu_temp_c": d.cpu_temp_c, "limit_c": t.temp_high_c},
            )
        )
    low_pct = d.disk_free_pct is not None and d.disk_free_pct < t.disk_low_pct
    low_mb = d.disk_free_mb is not None and d.disk_free_mb < t.disk_low_mb
    if low_pct or low_mb:
        free = f"{d.disk_free_mb:.0f} MB" if d.disk_free_mb is not None else f"{d.disk_free_pct}%"
        found.append(
            AlertSpec(
                DISK_LOW,
                dev,
                "warning",
                f"Bộ nhớ {dev} sắp đầy: còn {free}",
                f"{dev} disk low: {free} free",
                {"disk_free_mb": d.disk_free_mb, "disk_free_pct": d.disk_free_pct},
            )
        )
    if d.clock_synced is False:
        found.append(
            AlertSpec(
                CLOCK_UNSYNCED,
                dev,
                "warning",
                f"Đồng hồ {dev} chưa đồng bộ: phát theo lịch có thể lệch giờ",
                f"{dev} clock not synced: scheduled plays may start at the wrong time",
            )
        )
    return found + _printer(dev, d.printer or {})


def printer_state(body: Mapping[str, Any]) -> str:
    """The one-word state of a printer.status body, also for agents that send no ``state``
    (their offline printer said paper "ok": offline is what it was)."""
    if body.get("state"):
        return str(body["state"])
    if body.get("cover") == "open":
        return "cover_open"
    if body.get("paper") == "out":
        return "paper_out"
    if body.get("online") is False:
        return "offline"
    return "near_end" if body.get("paper") == "near_end" else "ready"


_PRINTER_ALERTS = {  # state -> kind, severity, Vietnamese, English (what to do)
    "paper_out": (
        PAPER_OUT,
        "critical",
        "Máy in {dev} hết giấy: thay cuộn giấy mới, các số đã giữ sẽ được in",
        "{dev} printer out of paper: load a new roll, kept numbers will print",
    ),
    "cover_open": (
        COVER_OPEN,
        "critical",
        "Máy in {dev} đang mở nắp: đóng nắp máy in để in tiếp",
        "{dev} printer cover open: close it to go on printing",
    ),
    "offline": (
        PRINTER_OFFLINE,
        "critical",
        "Máy in {dev} không trả lời: kiểm tra dây cáp và nguồn điện của máy in",
        "{dev} printer not answering: check its cable and power",
    ),
    "error": (
        PRINTER_OFFLINE,
        "critical",
        "Máy in {dev} báo lỗi: tắt máy in rồi bật lại",
        "{dev} printer reports an error: switch it off and on again",
    ),
    "near_end": (
        PAPER_LOW,
        "warning",
        "Máy in {dev} sắp hết giấy: chuẩn bị cuộn giấy mới",
        "{dev} printer paper low: get a new roll ready",
    ),
}


def _printer(dev: str, printer: Mapping[str, Any]) -> list[AlertSpec]:
    if not printer:
        return []
    found = []
    pending = list(printer.get("pending", []))
    alert = _PRINTER_ALERTS.get(printer_state(printer))
    if alert is not None:
        kind, severity, vi, en = alert
        details: dict[str, Any] = {"pending": pending}
        if printer.get("fault"):
            details["fault"] = printer["fault"]
        found.append(
            AlertSpec(kind, dev, severity, vi.format(dev=dev), en.format(dev=dev), details)
        )
    unprintable = list(printer.get("unprintable", []))
    if unprintable:
        numbers = ", ".join(unprintable)
        found.append(
            AlertSpec(
                UNPRINTABLE,
                dev,
                "warning",
                f"Máy in {dev} không in được vé số {numbers}: mời công dân báo số tại quầy",
                f"{dev} could not print ticket {numbers}: citizens say their number at the counter",
                {"unprintable": unprintable},
            )
        )
    return found


def _failed(body: PlayMissed | PlayFinished | PlayInterrupted) -> bool:
    """A play that failed, or was cut off with the agent (a power cut, a crash)."""
    return isinstance(body, PlayInterrupted) or (
        isinstance(body, PlayFinished) and body.outcome == "failed"
    )


def _plays(events: Iterable[PlayEvent], t: Thresholds, now_ms: int) -> list[AlertSpec]:
    since = now_ms - t.play_window_min * MINUTE_MS
    problems: dict[tuple[str, str], list[PlayEvent]] = {}
    for e in events:
        if not since < e.received_ms <= now_ms or isinstance(e.body, AudioFault):
            continue
        if isinstance(e.body, PlayMissed) and e.body.reason not in EXPECTED_MISS_REASONS:
            problems.setdefault((PLAY_MISSED, e.device_id), []).append(e)
        elif _failed(e.body):
            problems.setdefault((PLAY_FAILED, e.device_id), []).append(e)
    found = []
    for (kind, dev), evs in sorted(problems.items()):
        evs.sort(key=lambda e: e.received_ms)
        n = len(evs)
        recent = [
            {
                "event_id": e.event_id,
                "label": getattr(e.body, "label", ""),
                "reason": e.body.outcome if isinstance(e.body, PlayFinished) else e.body.reason,
                "received_ms": e.received_ms,
            }
            for e in evs[-PLAY_DETAILS_MAX:]
        ]
        what_vi, what_en = ("bị bỏ lỡ", "missed") if kind == PLAY_MISSED else ("lỗi", "failed")
        found.append(
            AlertSpec(
                kind,
                dev,
                "warning",
                f"{dev}: {n} lượt phát {what_vi} trong {t.play_window_min:.0f} phút qua",
                f"{dev}: {n} plays {what_en} in the last {t.play_window_min:.0f} min",
                {"count": n, "recent": recent},
            )
        )
    return found


def _dead_air(events: Iterable[PlayEvent], t: Thresholds, now_ms: int) -> list[AlertSpec]:
    """A relay whose stream went silent: the station's feed, not the speaker, needs a look."""
    since = now_ms - t.play_window_min * MINUTE_MS
    by_device: dict[str, list[PlayEvent]] = {}
    for e in events:
        body = e.body
        fault = isinstance(body, AudioFault) and body.reason == "dead_air"
        if fault and since < e.received_ms <= now_ms:
            by_device.setdefault(e.device_id, []).append(e)
    found = []
    for dev, evs in sorted(by_device.items()):
        evs.sort(key=lambda e: e.received_ms)
        n, w = len(evs), f"{t.play_window_min:.0f}"
        recent = [
            {"event_id": e.event_id, "key": getattr(e.body, "key", None),
             "received_ms": e.received_ms}
            for e in evs[-PLAY_DETAILS_MAX:]
        ]  # fmt: skip
        found.append(
            AlertSpec(
                DEAD_AIR,
                dev,
                "warning",
                f"{dev}: luồng tiếp sóng mất tiếng {n} lần trong {w} phút qua."
                " Hãy kiểm tra nguồn phát của đài.",
                f"{dev}: the relayed stream went silent {n} times in the last {w} min."
                " Check the station's feed.",
                {"count": n, "recent": recent},
            )
        )
    return found


def _unreachable(events: Iterable[PlayEvent], t: Thresholds, now_ms: int) -> list[AlertSpec]:
    """A relay whose stream could not be reached: its fallback clip aired (audio.fault
    ``unreachable``) or nothing did (play.missed ``stream_unreachable``)."""
    since = now_ms - t.play_window_min * MINUTE_MS
    by_device: dict[str, list[PlayEvent]] = {}
    for e in events:
        body = e.body
        fell_back = isinstance(body, AudioFault) and body.reason == "unreachable"
        missed = isinstance(body, PlayMissed) and body.reason == "stream_unreachable"
        if (fell_back or missed) and since < e.received_ms <= now_ms:
            by_device.setdefault(e.device_id, []).append(e)
    found = []
    for dev, evs in sorted(by_device.items()):
        evs.sort(key=lambda e: e.received_ms)
        n, w = len(evs), f"{t.play_window_min:.0f}"
        fallback = sum(isinstance(e.body, AudioFault) for e in evs)
        recent = [
            {"event_id": e.event_id, "key": getattr(e.body, "key", None),
             "received_ms": e.received_ms}
            for e in evs[-PLAY_DETAILS_MAX:]
        ]  # fmt: skip
        found.append(
            AlertSpec(
                UNREACHABLE,
                dev,
                "warning",
                f"{dev}: không kết nối được luồng tiếp sóng {n} lần trong {w} phút qua "
                f"({fallback} lần đã phát tệp thay thế). Hãy kiểm tra địa chỉ luồng trong trang "
                "«Đài tiếp sóng» và mạng của cụm loa.",
                f"{dev}: the relayed stream could not be reached {n} times in the last {w} min "
                f"(the fallback clip aired {fallback} times). Check the stream address on the "
                "«Relayed stations» page and the speaker's network.",
                {"count": n, "fallback": fallback, "recent": recent},
            )
        )
    return found
