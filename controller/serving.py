"""`[http] workers = N`: N server processes on one listening socket, and their supervisor.

One process serves pages with one GIL, whatever the cores (docs/benchmarks.md,
"The dashboard with two server processes"). Here the parent binds the port
once, then starts N workers (the ``spawn`` context: a fresh interpreter each,
nothing forked from a process with threads). Each worker is a replica as two
controllers on one database are (docs/controller-data.md, "Several
replicas"): its own app from `create_app`, its own MQTT client id,
``<client id>-<i>`` (the same on every start, so the broker keeps its
session), and the kernel deals it its share of the connections.

The parent only waits: a worker that dies is started again, after a pause
that doubles while it keeps dying (0.5 s up to 30 s), so a crash loop does
not spin; a worker that dies before any worker has ever served is a start-up
fault (a bad database, a missing site), and the command stops with its exit
code, as one process would. SIGTERM or SIGINT is passed on to every worker as
SIGTERM (a second SIGINT would make uvicorn skip its graceful shutdown); the
parent exits 0 once they have all stopped cleanly, and 1 if one had to be
killed or had failed.

Migrations: each worker's `create_app` upgrades (or only checks) the schema
under the migration lock (controller/db/engine.py), so N workers starting at
once on a fresh database apply it once.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG, STARTUP_FAILURE

from controller.settings import ControllerSettings

# The app's factory, by name: each worker imports it; the parent never does, so it stays
# small (the whole app is 100 MB of a worker's memory), and the app may import this module.
APP_FACTORY = "controller.app:create_app"

log = logging.getLogger(__name__)

STOP_WAIT_S = 10.0  # for every worker's graceful stop; within the unit's TimeoutStopSec=15
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
STEADY_S = 60.0  # a worker that ran this long starts again after the shortest pause
CLEAN_EXITS = (0, -signal.SIGTERM, -signal.SIGINT)  # stopped during its start-up: also clean
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def uvicorn_options(settings: ControllerSettings) -> dict[str, Any]:
    """How uvicorn serves the app, one process or each of N."""
    return {
        "host": settings.http.host,
        "port": settings.http.port,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.http.forwarded_allow_ips,
        "log_level": "info",
        "timeout_graceful_shutdown": 5,  # the live pages' streams would hold a stop for minutes
    }


class _Worker:
    """One slot of the N: its index (for the client id and the logs) and its process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: BaseProcess | None = None
        self.ready: Connection | None = None  # readable once its server is listening
        self.served = False
        self.started_at = 0.0
        self.backoff_s = BACKOFF_MIN_S
        self.due = 0.0  # when to start it again, once dead

    def __str__(self) -> str:
        pid = self.proc.pid if self.proc is not None else None
        return f"worker {self.index} (pid {pid})"


class Supervisor:
    def __init__(
        self, settings: ControllerSettings, factory: str, sock: socket.socket, count: int
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.sock = sock
        self.workers = [_Worker(i) for i in range(1, count + 1)]
        self.context = multiprocessing.get_context("spawn")
        self.log_level = logging.getLogger().getEffectiveLevel()
        self.stopping = False
        self.failed: int | None = None  # a start-up fault's exit code
        self.signalled = ""
        self._wake_r, self._wake_w = socket.socketpair()

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; the command's exit code."""
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        previous_fd = signal.set_wakeup_fd(self._wake_w.fileno())
        try:
            for worker in self.workers:
                self._start(worker)
            while not self.stopping:
                self._step()
            return self._stop_all()
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._wake_r.close()
            self._wake_w.close()

    def _on_signal(self, sig: int, _frame: FrameType | None) -> None:
        self.signalled = self.signalled or signal.Signals(sig).name  # logged by the loop
        self.stopping = True

    def _start(self, worker: _Worker) -> None:
        ready, ready_w = self.context.Pipe(duplex=False)
        worker.proc = self.context.Process(
            target=run_worker,
            args=(self.factory, self.settings.for_worker(worker.index), worker.index),
            kwargs={"sock": self.sock, "ready": ready_w, "log_level": self.log_level},
            name=f"xaso-controller-worker-{worker.index}",
        )
        worker.proc.start()
        ready_w.close()  # the worker holds the only writer: its death reads as EOF
        worker.ready, worker.started_at = ready, time.monotonic()
        log.info("%s starting", worker)

    def _step(self) -> None:
        now = time.monotonic()
        dead = [w for w in self.workers if w.proc is None]
        timeout = max(0.0, min(w.due for w in dead) - now) if dead else None
        waited: list[Any] = [self._wake_r]
        waited += [w.proc.sentinel for w in self.workers if w.proc is not None]
        waited += [w.ready for w in self.workers if w.ready is not None]
        wait(waited, timeout)
        try:
            while self._wake_r.recv(64):
                pass
        except BlockingIOError:
            pass
        for worker in self.workers:
            self._look_at(worker)
        if self.stopping:
            return
        now = time.monotonic()
        for worker in self.workers:
            if worker.proc is None and worker.due <= now:
                self._start(worker)

    def _look_at(self, worker: _Worker) -> None:
        if worker.ready is not None and worker.ready.poll():
            try:
                worker.ready.recv()
                worker.served = True
                log.info("%s serving", worker)
            except EOFError:
                pass
            worker.ready.close()
            worker.ready = None
        proc = worker.proc
        if proc is None or proc.is_alive() or self.stopping:
            return
        proc.join()
        code = proc.exitcode
        worker.proc = None
        if not any(w.served for w in self.workers):
            log.error("%s exited with code %s before serving: stopping", _named(worker, proc), code)
            self.failed = code if code and code > 0 else 1
            self.stopping = True
            return
        if time.monotonic() - worker.started_at >= STEADY_S:
            worker.backoff_s = BACKOFF_MIN_S
        pause, worker.backoff_s = worker.backoff_s, min(worker.backoff_s * 2, BACKOFF_MAX_S)
        worker.due = time.monotonic() + pause
        log.warning(
            "%s exited with code %s; starting it again in %.1f s", _named(worker, proc), code, pause
        )

    def _stop_all(self) -> int:
        if self.signalled:
            log.info("%s: stopping the %d workers", self.signalled, len(self.workers))
        alive = [w for w in self.workers if w.proc is not None]
        for worker in alive:
            assert worker.proc is not None and worker.proc.pid is not None
            if worker.proc.exitcode is None:
                os.kill(worker.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        clean = True
        for worker in alive:
            proc = worker.proc
            assert proc is not None
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                log.error("%s did not stop within %.0f s: killed", worker, STOP_WAIT_S)
                proc.kill()
                proc.join()
                clean = False
            elif proc.exitcode not in CLEAN_EXITS:
                log.error("%s stopped with code %s", worker, proc.exitcode)
                clean = False
            if worker.ready is not None:
                worker.ready.close()
        if self.failed is not None:
            return self.failed
        log.info("all %d workers stopped%s", len(self.workers), "" if clean else " (not cleanly)")
        return 0 if clean else 1


def _named(worker: _Worker, proc: BaseProcess) -> str:
    return f"worker {worker.index} (pid {proc.pid})"


def listening_socket(host: str, port: int) -> socket.socket:
    """The port, bound for the workers to listen on together.

    Made as TCP by name (``IPPROTO_TCP``), not as uvicorn's `Config.bind_socket` makes
    it (protocol 0): asyncio sets TCP_NODELAY only on connections accepted from a socket
    whose ``proto`` says TCP, and without it each answer waited about 40 ms for the
    client's delayed ACK (Nagle), a page as much as `/healthz`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve_workers(settings: ControllerSettings, factory: str = APP_FACTORY) -> int:
    """`xaso controller` with `[http] workers` > 1, each worker serving the app that
    ``factory`` ("module:function", called with its settings) makes; the exit code."""
    uvicorn.Config(factory, **uvicorn_options(settings))  # uvicorn's logging (not its app)
    host, port = settings.http.host, settings.http.port
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        log.error("cannot listen on %s port %d: %s", host, port, exc.strerror)
        return STARTUP_FAILURE  # as uvicorn's one process
    where = f"[{host}]" if ":" in host else host
    log.info("listening on http://%s:%d with %d workers", where, port, settings.http.workers)
    try:
        return Supervisor(settings, factory, sock, settings.http.workers).run()
    finally:
        sock.close()


class _Server(uvicorn.Server):
    """uvicorn's server, which says on ``ready`` when it listens."""

    def __init__(self, config: uvicorn.Config, ready: Connection) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.send(True)
            self.ready.close()


def _log_config(index: int) -> dict[str, Any]:
    """uvicorn's log lines, each with the worker's index."""
    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = formatter["fmt"].replace(
            "%(levelprefix)s ", f"%(levelprefix)s [worker {index}] ", 1
        )
    return config


def run_worker(
    factory: str,
    settings: ControllerSettings,
    index: int,
    *,
    sock: socket.socket,
    ready: Connection,
    log_level: int,
) -> None:
    """One worker's life, in its own process: the app, served on the parent's socket."""
    logging.basicConfig(
        level=log_level,
        format=f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s",
    )
    from uvicorn.importer import import_from_string

    from controller.db.engine import MigrationError
    from controller.settings import SettingsError

    try:
        app = import_from_string(factory)(settings)
    except (SettingsError, MigrationError) as exc:
        print(f"xaso: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(0)  # a Ctrl-C at the terminal reached the whole group; the parent stops too
    config = uvicorn.Config(app, **uvicorn_options(settings), log_config=_log_config(index))
    server = _Server(config, ready)

    def stop(_sig: int, _frame: FrameType | None) -> None:
        server.should_exit = True

    # Until uvicorn takes the signals, and after: it raises the one that stopped it again
    # once it has shut down, and the worker then ends with code 0.
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    server.run(sockets=[sock])
