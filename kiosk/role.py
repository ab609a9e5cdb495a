"""The kiosk role: the kiosk service bound to the agent that carries it.

Everything the office needs is on the device: the ticket file, the printer on
its serial line, the buttons, the local web server for the touchscreen, the
counters and the hall TV, and the hall speaker. The network only carries the
records (``ticket.*``, ``counter.state``, ``printer.status``) home through the
host's durable outbox, so the office works the same with no network at all.
The kiosks of one office queue (``[kiosk] queue``) also exchange their acts on
the queue over the broker, and each goes on alone through a cut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiosk.service import Kiosk
from protocol.events import Body, TicketCalled
from protocol.uplink import uplink_json

if TYPE_CHECKING:
    from broadcast.audio.player import Player
    from kiosk.config import KioskSection
    from kiosk.web import WebServer
    from protocol.host import RoleHost


def serve_pages(kiosk: Kiosk) -> WebServer:
    """The kiosk's web server (FastAPI is imported only where a kiosk runs)."""
    from kiosk.web import WebServer

    return WebServer(kiosk, kiosk.cfg.web_host, kiosk.cfg.web_port)


def attach(
    host: RoleHost,
    cfg: KioskSection,
    *,
    player: Player | None = None,
    pin_factory: Any = None,
) -> Kiosk:
    """Wire a kiosk into its host: its records go through the host's outbox.

    With ``voice = "remote"`` each call goes out once more, on this kiosk's
    ``calls`` topic, which only its hall speakers may read (docs/kiosk.md).
    """
    remote = cfg.voice == "remote"
    calls_topic = host.topics.calls(host.device_id)

    def emit(body: Body) -> None:
        event = host.emit(body)
        if remote and isinstance(body, TicketCalled):
            host.send(calls_topic, uplink_json(event))

    shared = None
    if cfg.queue is not None:  # one queue with the office's other kiosks (docs/kiosk.md)
        from kiosk.shared_queue import SharedQueue

        cfg.queue_slot(host.device_id)  # listed, or refused saying how to fix it
        shared = SharedQueue(
            host.state_dir / "office.sqlite",
            queue=cfg.queue,
            kiosk=host.device_id,
            kiosks=cfg.queue_kiosks,
            topics=host.topics,
        )
    kiosk = Kiosk(
        cfg,
        host.state_dir,
        emit,
        host.now_ms,
        pin_factory=pin_factory,
        player=player,
        serve=serve_pages,
        shared=shared,
        device_id=host.device_id,
    )
    host.on_document("bookings.set", kiosk.bookings.apply)  # booked ahead on the controller
    host.add_telemetry(kiosk.telemetry)
    host.add_health(kiosk.alive)
    host.on_start(kiosk.start)
    if shared is not None:
        login = host.broker_login()
        host.on_start(
            lambda: shared.connect(
                login.host, login.port, login.username, login.password, tls=login.tls,
                ca_file=login.ca_file,
            )
        )  # fmt: skip
    host.on_close(kiosk.close)
    return kiosk
