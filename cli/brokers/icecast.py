"""A real Icecast stream server in a work directory: the only module that runs the binary.

Tests, the demo and an operator's trial run use it, as they use
cli/brokers/mosquitto.py. Every mount asks the controller whether a listener
may pull it (Icecast's URL listener authentication, on its default mount), so
a device pulls with its own credentials and nobody else can; the source
password is generated here and given to the controller alone.

Icecast refuses to run as root: as root it drops to Debian's ``icecast2``
user, which cannot reach a private work directory after it has dropped, so it
logs to its standard error (captured in the work directory by us) and reads
only its config, which it reads before dropping.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import socket
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from cli.brokers.mosquitto import free_port
from cli.brokers.process import BrokerError, BrokerProcess

LOG_NAME = "icecast.log"
DROP_TO_USER = "icecast2"  # Debian's icecast2 package creates it
WEBROOT = Path("/usr/share/icecast2/web")
ADMINROOT = Path("/usr/share/icecast2/admin")
# What a listener gets at once on connecting: a little, so that a speaker joining a
# live mount starts near its present, not seconds behind it (the default is 64 kB).
BURST_BYTES = 4096
SOURCE_TIMEOUT_S = 5  # a source silent this long is cut, and its mount ends
_STARTED = "server started"


class IcecastError(BrokerError):
    """Icecast could not start or stop; the message holds its last log lines."""


def icecast_binary() -> str | None:
    """The server's binary: Debian names it icecast2, other builds icecast."""
    for name in ("icecast2", "icecast"):
        found = shutil.which(name)
        if found:
            return found
    for candidate in ("/usr/bin/icecast2", "/usr/local/bin/icecast"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


class Icecast(BrokerProcess):
    """One icecast process, configured from scratch in ``workdir`` on each start.

    ``listener_auth_url`` is the controller's ``/api/streams/listener-auth``:
    Icecast posts each listener's user name and password there and admits it
    only when the answer says so.
    """

    name = "icecast"

    def __init__(
        self,
        workdir: Path,
        listener_auth_url: str,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        source_password: str | None = None,
        max_listeners: int = 2000,
        binary: str | None = None,
    ) -> None:
        found = binary or icecast_binary()
        if found is None:
            raise IcecastError("icecast2 not found: install it (apt-get install icecast2)")
        if not listener_auth_url.startswith(("http://", "https://")):
            raise IcecastError(
                f"listener_auth_url {listener_auth_url!r}: give the controller's "
                "http(s)://host:port/api/streams/listener-auth"
            )
        self.binary = found
        workdir = Path(workdir).resolve()
        port = port if port is not None else free_port(host)
        super().__init__(workdir, host, port, workdir / LOG_NAME)
        self.listener_auth_url = listener_auth_url
        self.source_password = source_password or secrets.token_urlsafe(24)
        self.admin_password = secrets.token_urlsafe(24)
        self.max_listeners = max_listeners
        self.conf_path = self.workdir / "icecast.xml"

    @property
    def url(self) -> str:
        """Where listeners and sources connect: the controller's ``[stream] url``."""
        return f"http://{self._connect_host()}:{self.port}"

    def config_text(self) -> str:
        def opt(name: str, value: str) -> str:
            return f"<option name={quoteattr(name)} value={quoteattr(value)}/>"

        paths = [f"<pidfile>{escape(str(self.workdir / 'icecast.pid'))}</pidfile>"]
        if WEBROOT.is_dir():
            paths += [f"<webroot>{WEBROOT}</webroot>", f"<adminroot>{ADMINROOT}</adminroot>"]
        security = ["<chroot>0</chroot>"]
        if os.geteuid() == 0:
            user = pwd.getpwnam(DROP_TO_USER)
            security.append(
                f"<changeowner><user>{user.pw_name}</user>"
                f"<group>{grp.getgrgid(user.pw_gid).gr_name}</group></changeowner>"
            )
        lines = [
            "<!-- Written by cli.brokers.icecast on every start; edits are lost. -->",
            "<icecast>",
            "<location>Xaso</location><admin>xaso</admin>",
            f"<hostname>{escape(self._connect_host())}</hostname>",
            "<limits>",
            f"<clients>{self.max_listeners + 10}</clients><sources>64</sources>",
            f"<burst-on-connect>1</burst-on-connect><burst-size>{BURST_BYTES}</burst-size>",
            f"<source-timeout>{SOURCE_TIMEOUT_S}</source-timeout>",
            "</limits>",
            "<authentication>",
            f"<source-password>{escape(self.source_password)}</source-password>",
            "<admin-user>admin</admin-user>",
            f"<admin-password>{escape(self.admin_password)}</admin-password>",
            "</authentication>",
            f"<listen-socket><port>{self.port}</port>"
            f"<bind-address>{escape(self.host)}</bind-address></listen-socket>",
            # Every mount, whatever its name: a listener is admitted only by the controller.
            '<mount type="default"><authentication type="url">',
            opt("listener_add", self.listener_auth_url),
            opt("auth_header", "icecast-auth-user: 1"),
            # A speaker reconnecting after a 4G drop comes back before Icecast has
            # noticed its old connection is dead: it must not be refused as a duplicate.
            opt("allow_duplicate_users", "1"),
            "</authentication></mount>",
            f"<paths>{''.join(paths)}</paths>",
            "<logging><accesslog>-</accesslog><errorlog>-</errorlog>"
            "<loglevel>3</loglevel></logging>",
            f"<security>{''.join(security)}</security>",
            "</icecast>",
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 10) -> None:
        if self.running:
            raise IcecastError(f"icecast is already running on port {self.port}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config_text(), encoding="utf-8")
        self.conf_path.chmod(0o600)  # it holds the source password
        self._spawn(
            [self.binary, "-c", str(self.conf_path)],
            self.log_path,
            lambda logged: _STARTED in logged and self._accepts(),
            timeout_s,
            cwd=self.workdir,
        )

    def _connect_host(self) -> str:
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 (connected to, not bound)
        return wildcard.get(self.host, self.host)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self._connect_host(), self.port), 1):
                return True
        except OSError:
            return False

    def error(self, message: str) -> IcecastError:
        return IcecastError(message)
