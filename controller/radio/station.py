"""The broadcasting station inside the web app: the MQTT bus and the services routes call.

`create_app` builds one `Station` (clip library, scheduling, its calendar,
broadcasting, bulletin inbox, the approval gate and the leaders' desk) before
the app serves anything, so every route works with no broker: reading answers
from the database, sending answers a bilingual 503.
`Station.running` (in the app's `SERVICES`) connects the bus in the background
for as long as the app runs: it keeps trying until the broker answers. Ingest
(controller/fleet/ingest.py) is subscribed before the bus connects, since the
bus's persistent session (a stable client id, `[mqtt] client_id`) has the
broker deliver what it kept right after CONNACK. Ingest's writer records
broadcasts' acks with `Broadcasting.record_acks_in` in its own transactions:
one MQTT client per controller process. From then on paho reconnects by itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from broadcast.audio.clips import ClipError
from controller import i18n
from controller.bus import Bus, BusError
from controller.fleet.ingest import Ingest, share_group_for
from controller.radio.approval_gate import ApprovalGate
from controller.radio.approvals import ApprovalDesk
from controller.radio.broadcasting import Broadcasting
from controller.radio.bulletins import BulletinInbox
from controller.radio.clip_library import (
    ClipLibrary,
    Conflict,
    NotFound,
    OutOfScope,
    ServiceError,
)
from controller.radio.relay_stations import StationList
from controller.radio.schedule_calendar import ScheduleCalendar
from controller.radio.scheduling import Scheduling
from controller.radio.station_pulls import StationPulls, relay_documents
from controller.radio.streams import StreamServer
from controller.settings import ControllerSettings
from controller.site.directory import ProvisioningError, Site, open_site
from protocol.commands import ScheduleSet
from protocol.topics import Topics

log = logging.getLogger(__name__)

CONNECT_ATTEMPT_S = 3.0
RETRY_S = 2.0
Services = tuple[Scheduling, Broadcasting, BulletinInbox, ScheduleCalendar, ApprovalDesk]

i18n.register(
    {
        "station.service": ("{vi}", "{en}"),
        "station.no_broker": (
            "Bộ điều khiển chưa kết nối được máy chủ MQTT nên chưa gửi được tới các cụm loa. "
            "Kiểm tra máy chủ MQTT rồi thử lại; chưa có gì thay đổi.",
            "The controller is not connected to the MQTT broker, so nothing can reach the "
            "speakers. Check the broker and try again; nothing was changed.",
        ),
        "station.broker_failed": (
            "Máy chủ MQTT không xác nhận đã nhận lệnh: {reason}. "
            "Kiểm tra máy chủ MQTT rồi thử lại.",
            "The MQTT broker did not confirm the message: {reason}. Check the broker and retry.",
        ),
        "station.no_site": (
            "Chưa khởi tạo hệ thống (khóa ký, danh sách thiết bị): chạy `xaso keys new` trước.",
            "The site is not set up (signing keys, device registry): run `xaso keys new` first.",
        ),
    }
)


class ServiceRefusal(i18n.Refusal):
    """A service's bilingual refusal (ServiceError, ClipError) as the app answers it."""

    def __init__(self, status: int, code: str, message_vi: str, message_en: str) -> None:
        super().__init__(status, "station.service", vi=message_vi, en=message_en)
        self.key = code  # the JSON `code`: the service's own
        self._texts = {"vi": message_vi, "en": message_en}

    def text(self, lang: i18n.Lang) -> str:
        return self._texts[lang]


def refusal(exc: ServiceError | ClipError) -> i18n.Refusal:
    """NotFound 404, Conflict 409, OutOfScope 403, anything else a service refuses 422."""
    status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 422
    if isinstance(exc, OutOfScope):
        status = 403
    if exc.code == "no_broker":
        return i18n.Refusal(503, "station.no_broker")
    return ServiceRefusal(status, exc.code, exc.message_vi, exc.message_en)


def invalid_input(exc: ValidationError) -> i18n.Refusal:
    """A form that does not fit the API's model, told as the API tells it."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
    )
    return i18n.Refusal(422, "error.invalid", problems=problems)


@contextmanager
def refused_as_http() -> Iterator[None]:
    """Turn the services' errors into refusals the app answers in both languages."""
    try:
        yield
    except (ServiceError, ClipError) as exc:
        raise refusal(exc) from None
    except ProvisioningError:
        raise i18n.Refusal(503, "station.no_site") from None


class Station:
    """The services over one database and site, publishing through the current bus."""

    def __init__(
        self,
        settings: ControllerSettings,
        sessions: sessionmaker[Session],
        streams: StreamServer | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.streams = streams  # relays of a station go through its mount there
        self.site = Site(settings.site_dir)  # read on use: the site may be set up later
        http = settings.http
        self.clip_base_url = http.public_url or f"http://{http.host}:{http.port}"
        self.bus: Bus | None = None
        self.library = ClipLibrary(sessions, settings.clips_dir)
        self.stations = StationList(sessions, self.library, streams=streams)
        # one pull per station on air, into its mount (none without a stream server)
        self.pulls = (
            StationPulls(sessions, streams, self._relay_documents) if streams is not None else None
        )
        self.gate = ApprovalGate(sessions)
        self._lock = threading.Lock()
        self._services: Services | None = None

    def _built(self) -> Services:
        """The site's services, made once the site exists (they read its topic root)."""
        with self._lock:
            if self._services is None:
                self.check_site()
                scheduling = Scheduling(
                    self.sessions,
                    self.site,
                    clip_base_url=self.clip_base_url,
                    publisher=self,
                    gate=self.gate,
                    streams=self.streams,
                )
                broadcasting = Broadcasting(
                    self.sessions,
                    self.site,
                    self.library,
                    self,
                    clip_base_url=self.clip_base_url,
                    gate=self.gate,
                )
                if self.pulls is not None:
                    broadcasting.on_relay = self.pulls.hold
                    broadcasting.on_stop = self.pulls.release
                inbox = BulletinInbox(self.sessions, scheduling, broadcasting)
                calendar = ScheduleCalendar(scheduling)
                desk = ApprovalDesk(self.sessions, scheduling, broadcasting)
                self._services = (scheduling, broadcasting, inbox, calendar, desk)
            return self._services

    def _relay_documents(self, session: Session) -> list[tuple[str, ScheduleSet]]:
        """The documents relaying a station, for the pulls; none before the site exists."""
        try:
            scheduling = self.scheduling
        except i18n.Refusal:
            return []
        return relay_documents(scheduling)(session)

    @property
    def scheduling(self) -> Scheduling:
        return self._built()[0]

    @property
    def broadcasting(self) -> Broadcasting:
        return self._built()[1]

    @property
    def inbox(self) -> BulletinInbox:
        return self._built()[2]

    @property
    def calendar(self) -> ScheduleCalendar:
        return self._built()[3]

    @property
    def approvals(self) -> ApprovalDesk:
        return self._built()[4]

    @property
    def connected(self) -> bool:
        return self.bus is not None and self.bus.connected

    def check_site(self) -> None:
        try:
            open_site(self.site.dir)
        except ProvisioningError:
            raise i18n.Refusal(503, "station.no_site") from None

    def check_can_send(self) -> None:
        """Before a change that must reach the speakers: refuse it whole while offline."""
        self.check_site()
        if not self.connected:
            raise i18n.Refusal(503, "station.no_broker")

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 10,
    ) -> None:
        """The services' Publisher: the bus, or a 503 when there is none."""
        bus = self.bus
        if bus is None or not bus.connected:
            raise i18n.Refusal(503, "station.no_broker")
        try:
            bus.publish(topic, payload, qos=qos, retain=retain, timeout_s=timeout_s)
        except BusError as exc:
            raise i18n.Refusal(503, "station.broker_failed", reason=str(exc)) from None

    @contextmanager
    def running(self) -> Iterator[None]:
        """Connect in the background until the app stops; never blocks the start."""
        stop = threading.Event()
        thread = threading.Thread(target=self._connect, args=(stop,), name="station", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(CONNECT_ATTEMPT_S + 5)

    def _connect(self, stop: threading.Event) -> None:
        ingest: Ingest | None = None
        while not stop.is_set():
            try:
                site = open_site(self.site.dir)
                broadcasting = self.broadcasting
                user, password = site.controller_credentials()
                bus = self._new_bus(user, password)
            except (ProvisioningError, i18n.Refusal, OSError) as exc:
                log.warning("station: not connected yet (%s); retrying", exc)
                stop.wait(RETRY_S)
                continue
            ingest = Ingest(
                bus,
                self.sessions,
                Topics(site.root),
                share_group=share_group_for(password),
                on_acks=broadcasting.record_acks_in,
            )
            try:
                ingest.start()  # subscribed before the broker hands over what it kept
                bus.start(timeout_s=CONNECT_ATTEMPT_S)
            except Exception as exc:
                log.warning("station: not connected yet (%s); retrying", exc)
                ingest.close()
                ingest = None
                bus.close()
                stop.wait(RETRY_S)
                continue
            self.bus = bus
            log.info("station: connected to the MQTT broker, ingest running")
            break
        stop.wait()
        if ingest is not None:
            ingest.close()  # writes and acknowledges what it holds, while still connected
        if self.bus is not None:
            self.bus.close()
            self.bus = None

    def _new_bus(self, user: str, password: str) -> Bus:
        mqtt = self.settings.mqtt
        ca = self.settings.path(mqtt.ca_file) if mqtt.tls and mqtt.ca_file else None
        return Bus(
            mqtt.host,
            mqtt.port,
            user,
            password,
            client_id=self.settings.mqtt_client_id,
            tls=mqtt.tls,
            tls_ca=ca,
            clean_session=False,
        )
