"""What an agent offers the roles it carries (typing only).

The radio and the queue are written against this, not against the agent, so
a feature knows no host: the agent (edge/agent.py) implements it on a Pi, and
a test can implement it in a few lines. Everything a role does to the
outside world goes through here: durable records, handlers for the signed
commands and documents the agent has verified, its settings, its share of
the telemetry and its health for the watchdog.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from protocol.commands import ConfigSet, Strict
from protocol.envelope import Opened
from protocol.events import Body
from protocol.topics import Topics
from protocol.uplink import Event

# a verified command's handler: its return value is the ack's result
CommandHandler = Callable[[Opened], dict[str, Any] | None]
# a verified document's handler: (its topic, its body), stored before it runs
DocumentHandler = Callable[[str, Strict], None]


@dataclass(frozen=True)
class BrokerLogin:
    """Where and as whom the agent reaches its broker."""

    host: str
    port: int
    tls: bool
    ca_file: Path | None
    username: str
    password: str | None


class RoleHost(Protocol):
    """The agent, as one of its roles sees it."""

    now_ms: Callable[[], int]  # the clock every role of this agent reads

    @property
    def device_id(self) -> str: ...

    @property
    def topics(self) -> Topics: ...

    @property
    def state_dir(self) -> Path:
        """Where a role keeps its files (clip cache, tickets), beside the agent's state."""
        ...

    @property
    def volume_pct(self) -> int: ...

    def http_credentials(self) -> tuple[str, str | None]:
        """The device's login, for fetching clips from the controller."""
        ...

    def broker_login(self) -> BrokerLogin:
        """The agent's broker and login, for a role's own link (a kiosk's office queue)."""
        ...

    # records, durable before the call returns

    def emit(self, body: Body) -> Event:
        """Record ``body`` as an event of its type (``body.TYPE``)."""
        ...

    def send(self, topic: str, payload: bytes) -> None:
        """Publish on another of this device's topics through the durable outbox."""
        ...

    # the role's small state, kept in the agent's state file

    def setting(self, name: str) -> str | None: ...

    def set_setting(self, name: str, value: str) -> None: ...

    def remember_once(self, key: str, until_ms: int) -> bool:
        """True the first time ``key`` is seen (kept until ``until_ms``), then False."""
        ...

    # what the role handles

    def on_command(self, msg_type: str, handler: CommandHandler) -> None: ...

    def on_document(self, msg_type: str, handler: DocumentHandler) -> None: ...

    def on_config(self, listener: Callable[[ConfigSet], None]) -> None: ...

    def on_volume(self, listener: Callable[[int], None]) -> None: ...

    def listen(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Read an unsigned topic the broker lets this device read (a kiosk's calls)."""
        ...

    # its life in the agent

    def add_telemetry(self, part: Callable[[], dict[str, Any]]) -> None: ...

    def add_health(self, check: Callable[[], bool]) -> None: ...

    def on_start(self, starter: Callable[[], None]) -> None: ...

    def on_close(self, closer: Callable[[], None]) -> None: ...
