"""An embedded MQTT broker (amqtt) for `xaso demo` on a machine without Mosquitto.

It runs as its own process, ``python -m cli.brokers.embedded``, as the
mosquitto binary would: a broker that an agent test kills or restarts is a
process, a crash in it cannot take the demo down, and amqtt's event loop and
logging never share the caller's. It honours the same site files as
Mosquitto (``broker/passwd``, ``broker/acl``); see docs/architecture.md,
"Embedded broker", for what it does not do.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from cli.brokers.mosquitto import free_port
from cli.brokers.process import BrokerError, BrokerProcess

LOG_NAME = "embedded-broker.log"
READY = "embedded broker ready"
BROKER_CHOICES = ("auto", "mosquitto", "embedded")


def choose_broker(preference: str, mosquitto_binary: str | None) -> str:
    """``--broker``: ``auto`` is Mosquitto when its binary was found, else the embedded one."""
    if preference not in BROKER_CHOICES:
        raise ValueError(f"--broker must be one of {', '.join(BROKER_CHOICES)}, not {preference!r}")
    if preference == "mosquitto" and mosquitto_binary is None:
        raise ValueError("--broker mosquitto: mosquitto not found (apt-get install mosquitto)")
    if preference == "auto":
        return "mosquitto" if mosquitto_binary else "embedded"
    return preference


class EmbeddedBrokerError(BrokerError):
    """The embedded broker could not start; a BrokerError, as Mosquitto's errors are."""


class EmbeddedBroker(BrokerProcess):
    """One amqtt broker process on ``host:port``, with the site's password file and ACL.

    The same surface as cli.brokers.mosquitto.Mosquitto. State lives in memory:
    a restart loses retained messages and persistent sessions.
    """

    name = "the embedded broker"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        password_file: Path,
        acl_file: Path,
        host: str = "127.0.0.1",
        controller_users: Sequence[str] = (),
    ) -> None:
        workdir = Path(workdir).resolve()
        port = port if port is not None else free_port(host)
        super().__init__(workdir, host, port, workdir / LOG_NAME)
        self.password_file = Path(password_file).resolve()
        self.acl_file = Path(acl_file).resolve()
        # One listener for all: these users keep the client ids they ask for, every
        # other user's client id is its user name (Mosquitto's use_username_as_clientid).
        self.controller_users = tuple(controller_users)
        self.controller_port = port

    def start(self, timeout_s: float = 20) -> None:
        if self.running:
            raise EmbeddedBrokerError(f"the embedded broker is already running on port {self.port}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._check_readable(self.password_file, self.acl_file)
        argv = [sys.executable, "-m", "cli.brokers.embedded", "--host", self.host]
        argv += ["--port", str(self.port), "--log", str(self.log_path)]
        argv += ["--password-file", str(self.password_file), "--acl-file", str(self.acl_file)]
        for user in self.controller_users:
            argv += ["--controller-user", user]
        self._spawn(argv, self.log_path, lambda logged: READY in logged, timeout_s)

    def error(self, message: str) -> EmbeddedBrokerError:
        return EmbeddedBrokerError(message)


async def serve(
    host: str, port: int, password_file: Path, acl_file: Path, controller_users: Iterable[str] = ()
) -> None:
    """Run the broker until SIGTERM or SIGINT; amqtt is imported here, in the broker process."""
    from cli.brokers.embedded_plugins import SiteBroker, broker_config

    broker = SiteBroker(
        broker_config(host, port, password_file, acl_file), free_ids=frozenset(controller_users)
    )
    await broker.start()
    logging.getLogger("xaso.embedded_broker").info("%s on %s:%d", READY, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await broker.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli.brokers.embedded")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password-file", type=Path, required=True)
    parser.add_argument("--acl-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--controller-user", action="append", default=[])
    args = parser.parse_args(argv)
    logging.basicConfig(
        filename=args.log,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("amqtt", "transitions"):  # every connection and state change at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        asyncio.run(
            serve(args.host, args.port, args.password_file, args.acl_file, args.controller_user)
        )
    except Exception:
        logging.getLogger("xaso.embedded_broker").exception("the embedded broker failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
