"""A real Mosquitto broker in a work directory: the only module that runs the binary.

Tests, the demo and an operator's trial run use it. Production runs the
distribution's mosquitto service with config/mosquitto.conf.example instead.

With a ``controller_port`` it is configured as that example is: devices on
``port``, where each client id is bound to its user name, and the controller's
users alone on a second listener where each replica keeps the id it asks for
(docs/broker-security.md).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from cli.brokers.process import BrokerError, BrokerProcess

LOG_NAME = "mosquitto.log"
# A short snapshot interval: a killed broker loses at most about a second.
AUTOSAVE_INTERVAL_S = 1
MAX_QUEUED = 500_000
MAX_INFLIGHT = 2000
_RUNNING = re.compile(r"mosquitto version \S+ running")


class MosquittoError(BrokerError):
    """Mosquitto could not start, stop or reload; the message holds its last log lines."""


def mosquitto_binary() -> str | None:
    """The broker's binary: on PATH, or in the sbin directory that a user's PATH may lack."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (another process may still take it first)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Mosquitto(BrokerProcess):
    """One mosquitto process, configured from scratch in ``workdir`` on each start."""

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        persistence: bool = True,
        host: str = "127.0.0.1",
        binary: str | None = None,
        tls: tuple[Path, Path] | None = None,
        controller_port: int | None = None,
        controller_users: Sequence[str] = (),
    ) -> None:
        found = binary or mosquitto_binary()
        if found is None:
            raise MosquittoError("mosquitto not found: install it (apt-get install mosquitto)")
        self.binary = found
        workdir = Path(workdir).resolve()
        port = port if port is not None else free_port(host)
        super().__init__(workdir, host, port, workdir / LOG_NAME)
        self.password_file = Path(password_file).resolve() if password_file else None
        self.acl_file = Path(acl_file).resolve() if acl_file else None
        self.persistence = persistence
        self.tls = tuple(Path(p).resolve() for p in tls) if tls else None  # certfile, keyfile
        if controller_port is not None and (self.password_file is None or not controller_users):
            raise MosquittoError("a controller listener needs a password file and its users")
        self.controller_port = controller_port
        self.controller_users = frozenset(controller_users)
        # The controller listener's own password file: the controller's lines alone.
        self.controller_passwd = self.workdir / "controller.passwd"
        self.conf_path = self.workdir / "mosquitto.conf"
        # What mosquitto prints before its log file is open (or when it cannot open it).
        self.output_path = self.workdir / "mosquitto.out"
        for path in (self.workdir, self.password_file, self.acl_file):
            if path is not None and any(c.isspace() for c in str(path)):
                raise MosquittoError(f"{path}: mosquitto.conf cannot name a path with spaces")

    def config_text(self) -> str:
        lines = [
            "# Written by cli.brokers.mosquitto on every start; edits are lost.",
            *(["per_listener_settings true"] if self.controller_port is not None else []),
            f"listener {self.port} {self.host}",
            *([f"certfile {self.tls[0]}", f"keyfile {self.tls[1]}"] if self.tls else []),
            *self._auth_lines(self.password_file),
        ]
        if self.controller_port is not None:
            # a device's client id is its user name, whatever id it asks for
            lines += ["use_username_as_clientid true"]
            lines += [f"listener {self.controller_port} {self.host}"]
            lines += self._auth_lines(self.controller_passwd)
        lines += [
            "set_tcp_nodelay true",
            # ingest's persistent session: its queue while it is away, and its acks
            # that come only after each commit (config/mosquitto.conf.example)
            f"max_queued_messages {MAX_QUEUED}",
            f"max_inflight_messages {MAX_INFLIGHT}",
        ]
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.workdir}/",
                f"autosave_interval {AUTOSAVE_INTERVAL_S}",
            ]
        else:
            lines.append("persistence false")
        lines += [
            f"log_dest file {self.log_path}",
            "log_type all",  # denied publishes are logged at the debug level only
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # As root, 2.x drops to the "mosquitto" user, which cannot reach a private
            # work directory (its log, database, password and ACL files) and exits.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def _auth_lines(self, password_file: Path | None) -> list[str]:
        """One listener's security (all global without per_listener_settings)."""
        lines = [f"allow_anonymous {'false' if password_file else 'true'}"]
        if password_file:
            lines.append(f"password_file {password_file}")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        return lines

    def _write_controller_passwd(self) -> None:
        """The controller listener's password file: the site's, cut to the controller's users."""
        if self.controller_port is None or self.password_file is None:
            return
        kept = [
            line
            for line in self.password_file.read_text(encoding="utf-8").splitlines()
            if line.partition(":")[0] in self.controller_users
        ]
        tmp = self.controller_passwd.with_suffix(".tmp")
        tmp.write_text("\n".join(kept) + "\n", encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(self.controller_passwd)

    def start(self, timeout_s: float = 10) -> None:
        if self.running:
            raise MosquittoError(f"mosquitto is already running on port {self.port}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._check_readable(self.password_file, self.acl_file)
        self._write_controller_passwd()
        self.conf_path.write_text(self.config_text(), encoding="utf-8")
        self._spawn(
            [self.binary, "-c", str(self.conf_path)],
            self.output_path,
            lambda logged: bool(_RUNNING.search(logged)) and self._accepts(),
            timeout_s,
            cwd=self.workdir,
        )

    def reload(self, timeout_s: float = 10) -> None:
        """SIGHUP: re-read the password and ACL files, and fail loudly if that went wrong.

        A reload that cannot read the password file leaves the broker running but
        refusing every client (mosquitto #588), so an error here is worth a raise.
        """
        if self.proc is None or not self.running:
            raise MosquittoError("mosquitto is not running")
        self._check_readable(self.password_file, self.acl_file)
        self._write_controller_passwd()
        offset = self._log_size()
        self.proc.send_signal(signal.SIGHUP)
        self._wait_log(offset, "Reloading config.", timeout_s)
        # The broker reloads in its only thread: a connection made after the line
        # above is accepted after the reload is done, so every reload error is
        # logged before that connection is.
        with socket.create_connection((self._connect_host(), self.port), timeout_s) as sock:
            mark = f":{sock.getsockname()[1]} on port {self.port}"
            text = self._wait_log(offset, mark, timeout_s)
        errors = [line for line in text.splitlines() if "Error" in line]
        if errors:
            raise MosquittoError("mosquitto could not reload:\n" + "\n".join(errors))

    def _connect_host(self) -> str:
        """Where to connect: a wildcard listen address is reached on loopback."""
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 (connected to, not bound)
        return wildcard.get(self.host, self.host)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self._connect_host(), self.port), 1):
                return True
        except OSError:
            return False

    def _wait_log(self, offset: int, needle: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            text = self._log_since(offset)
            if needle in text:
                return text
            if not self.running:
                raise self._failure("exited", offset)
            if time.monotonic() > deadline:
                raise self._failure(f"logged no {needle!r} within {timeout_s} s", offset)
            time.sleep(0.02)

    def error(self, message: str) -> MosquittoError:
        return MosquittoError(message)

    def _failure(self, what: str, offset: int) -> MosquittoError:
        log = self._log_since(offset).splitlines()[-20:]
        out = []
        if self.output_path.exists():
            out = self.output_path.read_text(encoding="utf-8", errors="replace").splitlines()[-10:]
        tail = "\n".join(["--- " + str(self.log_path), *log, "--- " + str(self.output_path), *out])
        where = f"port {self.port}, config {self.conf_path}"
        return MosquittoError(f"mosquitto {what} ({where})\n{tail}")
