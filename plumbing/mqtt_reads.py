"""paho reading its socket in large chunks, for a client that receives a stream.

Stock paho reads one packet per pass of its loop, in three ``recv`` calls (the
command byte, each length byte, the rest) after a ``select``: four system calls
and their Python wrappers for every message, about a third of what receiving a
small message costs. This client reads up to READ_CHUNK bytes at a time and
parses every whole packet in them before its loop goes back to ``select``.

It overrides two of paho's private methods (``_sock_recv`` and ``loop_read``),
so it is used only where the volume pays for it (the controller's ingest) and
only with a paho whose internals it knows (``chunked_reads_work``); the edge's
link keeps stock paho. The socket itself is untouched: TLS, TCP_NODELAY and
``client.socket()`` behave as before.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

READ_CHUNK = 65536
# Socket reads per pass of paho's loop; after them the loop writes what is queued (acks,
# publishes) and checks the keepalive, and select() finds what is left on the socket.
READS_PER_PASS = 16


def chunked_reads_work() -> bool:
    """True when this paho has the internals the chunked client overrides."""
    return all(
        callable(getattr(paho.Client, name, None))
        for name in ("_sock_recv", "_packet_read", "_loop_rc_handle")
    )


class ChunkedReadClient(paho.Client):
    """A paho client whose reads come from a buffer refilled READ_CHUNK bytes at a time.

    Invariant: whenever ``loop_read`` returns, the buffer is empty, so paho's
    ``select`` on the socket never sleeps on bytes already read.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunk = b""
        self._chunk_pos = 0
        self._reads_left = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        chunk, pos = self._chunk, self._chunk_pos
        if pos >= len(chunk):
            if self._reads_left <= 0:
                raise BlockingIOError  # this pass has read enough: paho's loop goes on
            self._reads_left -= 1
            chunk = super()._sock_recv(READ_CHUNK)  # raises BlockingIOError when empty
            if not chunk:
                return chunk  # the peer closed the connection
            self._chunk, pos = chunk, 0
        end = pos + bufsize
        self._chunk_pos = end
        return chunk[pos:end] if pos or end < len(chunk) else chunk

    def _sock_close(self) -> None:
        self._chunk, self._chunk_pos = b"", 0  # bytes of a closed connection are not the next's
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Every whole packet in what READS_PER_PASS reads bring (paho's own reads
        at most one packet per pass for a client that only receives)."""
        self._reads_left = READS_PER_PASS
        while self._sock is not None:
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN and self._chunk_pos >= len(self._chunk):
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return MQTTErrorCode.MQTT_ERR_NO_CONN
