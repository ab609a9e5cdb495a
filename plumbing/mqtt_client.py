"""How every Xaso MQTT client is set up: the agent's link, the controller's bus
and the demo's narrator.

One place for the choices each must make the same way: MQTT 3.1.1 with
paho's v2 callbacks, verified TLS (the system's CAs when no CA file is given),
TCP_NODELAY on every socket, callbacks that cannot kill paho's network thread,
and a full-jitter reconnect delay set before each attempt (paho's own doubles
without jitter, PITFALLS #871).
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from plumbing.backoff import Backoff
from plumbing.mqtt_reads import ChunkedReadClient, chunked_reads_work

log = logging.getLogger(__name__)


def no_delay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    """paho's on_socket_open: small MQTT packets must not wait for Nagle and the
    peer's delayed ACK (~40 ms)."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """A paho callback that logs its exception: one escaping would kill paho's
    network thread silently."""

    def guard(*args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("error in MQTT callback %s", fn.__name__)

    guard.__name__ = getattr(fn, "__name__", "callback")
    return guard


def new_client(
    client_id: str,
    username: str | None,
    password: str | None,
    *,
    clean_session: bool,
    tls: bool = False,
    ca_file: Path | None = None,
    max_inflight: int = 20,
    manual_ack: bool = False,
    chunked_reads: bool = False,
) -> paho.Client:
    """A paho client with credentials, verified TLS when ``tls`` (against ``ca_file``, or
    the system's CAs without one), and TCP_NODELAY; it reconnects by itself once started.
    With ``manual_ack`` a received QoS 1 message is acknowledged only by ``client.ack``.
    ``chunked_reads``: a client that receives a stream reads it in large chunks
    (plumbing/mqtt_reads.py), where this paho allows."""
    kind = ChunkedReadClient if chunked_reads and chunked_reads_work() else paho.Client
    client = kind(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        reconnect_on_failure=True,
        manual_ack=manual_ack,
    )
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=str(ca_file) if ca_file else None, cert_reqs=ssl.CERT_REQUIRED)
    client.max_inflight_messages_set(max_inflight)
    client.on_socket_open = guarded(no_delay)
    return client


def arm_backoff(client: paho.Client, backoff: Backoff) -> None:
    """Set the delay before paho's next attempt; this also resets paho's doubling."""
    delay = backoff.next_delay()
    client.reconnect_delay_set(min_delay=delay, max_delay=delay)  # type: ignore[arg-type]
