"""A real HTTP receiver for webhook tests: http.server on a thread, on a free port.

It records every POST (its Idempotency-Key and JSON body), answers 503 to the
first `fail_first`, and with `hang` set, holds each request until `release()`.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Clock:
    """Epoch milliseconds moved by hand, for a sender's `clock_ms`."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@dataclass(frozen=True)
class Post:
    key: str
    body: dict[str, Any]
    accepted: bool

    @property
    def what(self) -> tuple[str, str, str]:
        return (self.body["action"], self.body["alert"]["kind"], self.body["alert"]["device_id"])


class Receiver:
    def __init__(self, fail_first: int = 0, hang: bool = False) -> None:
        self.fail_first = fail_first
        self.posts: list[Post] = []
        self.waiting = 0  # requests held by `hang` right now
        self._lock = threading.Lock()
        self._released = threading.Event()
        if not hang:
            self._released.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Idempotency-Key", "")
                with receiver._lock:
                    receiver.waiting += 1
                receiver._released.wait(120)
                with receiver._lock:
                    receiver.waiting -= 1
                    accepted = receiver.fail_first <= 0
                    receiver.fail_first -= 1
                    receiver.posts.append(Post(key, body, accepted))
                self.send_response(204 if accepted else 503)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def accepted(self) -> list[Post]:
        with self._lock:
            return [p for p in self.posts if p.accepted]

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
