"""An MQTT broker as a child process: start until it says it is ready, stop, kill, restart.

Mosquitto (the binary) and the embedded amqtt broker (a Python process) are
run the same way, so tests and the demo can kill or restart either as they
would a broker on a real server. Each subclass names its command line, its
log and what "ready" looks like there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self


class BrokerError(RuntimeError):
    """The broker could not start, stop or reload; the message holds its last log lines."""


class BrokerProcess(ABC):
    """One broker process on ``host:port`` writing ``log_path`` in ``workdir``."""

    name = "the broker"

    def __init__(self, workdir: Path, host: str, port: int, log_path: Path) -> None:
        self.workdir = Path(workdir).resolve()
        self.host = host
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(
        self,
        argv: list[str],
        output: Path,
        ready: Callable[[str], bool],
        timeout_s: float,
        cwd: Path | None = None,
    ) -> None:
        """Start ``argv`` and wait until ``ready`` holds for what it logged since.

        Reading the log (not only connecting) proves that this process, not
        another one, holds the port. The broker gets a session of its own: a
        Ctrl-C in the terminal reaches the agents, which say goodbye through
        it, and its owner stops it afterwards.
        """
        offset = self._log_size()
        with output.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while not ready(self._log_since(offset)):
            if self.proc.poll() is not None:
                raise self._failure(f"exited with code {self.proc.returncode}", offset)
            if time.monotonic() > deadline:
                self.kill()
                raise self._failure(f"did not start within {timeout_s} s", offset)
            time.sleep(0.02)

    def _check_readable(self, *paths: Path | None) -> None:
        # The broker runs as this process's user (or stays root): os.access answers for it.
        for path in paths:
            if path is not None and not os.access(path, os.R_OK):
                raise self.error(
                    f"{path}: missing or not readable by the user the broker runs as "
                    f"(uid {os.geteuid()}); {self.name} would refuse every client"
                )

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM: the broker closes its connections (no Wills: it is the one leaving)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no goodbye, no last snapshot, as in a power cut."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @abstractmethod
    def start(self, timeout_s: float = 10) -> None:
        """Start the broker and return once it is ready (the subclass knows how)."""

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def error(self, message: str) -> BrokerError:
        return BrokerError(message)

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _failure(self, what: str, offset: int) -> BrokerError:
        tail = "\n".join(self._log_since(offset).splitlines()[-20:])
        return self.error(f"{self.name} {what} (port {self.port})\n--- {self.log_path}\n{tail}")
