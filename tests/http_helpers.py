"""A real uvicorn server in a thread, for tests that need HTTP."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from cli.brokers.mosquitto import free_port


@contextmanager
def serve(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """``app`` under uvicorn on ``port`` (a free one if None); its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("the test HTTP server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def first_answer(
    url: str, server: subprocess.Popen[bytes], timeout_s: float = 120
) -> httpx.Response:
    """The first answer of ``server`` (a process starting up) at ``url``; fails with its
    output if it exits or does not answer in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the server did not start:\n{server.communicate()[0]!r}")
            time.sleep(0.2)
