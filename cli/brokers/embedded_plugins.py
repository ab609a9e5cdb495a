"""amqtt, taught the site's Mosquitto files: the only module that imports amqtt.

``SiteFilesPlugin`` authenticates against ``broker/passwd`` (Mosquitto ``$7$``
hashes) and authorizes against ``broker/acl`` (cli.brokers.mqtt_acl).
``SiteBroker`` closes four gaps of amqtt 0.12.1 that would break that ACL or
the agents' contract; each override says which. It also binds each client id
to its user, as Mosquitto's ``use_username_as_clientid`` does, except for the
controller's users (``free_ids``), whose replicas each keep their own id.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action, BaseContext
from amqtt.errors import AMQTTError, MQTTError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from amqtt.utils import gen_client_id

from cli.brokers.mqtt_acl import Access, Acl, parse_acl
from controller.site.broker_files import password_matches

log = logging.getLogger("xaso.embedded_broker")
_ACCESS = {Action.PUBLISH: Access.WRITE, Action.RECEIVE: Access.READ}


def read_passwd(path: Path) -> dict[str, str]:
    """``user:hash`` lines of a Mosquitto password file; blank lines and ``#`` comments skipped."""
    users = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        user, sep, hashed = line.strip().partition(":")
        if sep and user and not user.startswith("#"):
            users[user] = hashed
    return users


class SiteFilesPlugin(BaseAuthPlugin, BaseTopicPlugin):  # type: ignore[misc]
    """Mosquitto's ``password_file`` and ``acl_file`` semantics, from the same two files."""

    @dataclass
    class Config:
        password_file: str
        acl_file: str

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.passwords = read_passwd(Path(self.config.password_file))
        self.acl: Acl = parse_acl(Path(self.config.acl_file).read_text(encoding="utf-8"))

    async def authenticate(self, *, session: Session) -> bool:
        """A known user with the right password; a Will only on a topic the user may write.

        Mosquitto checks the Will against the ACL too; amqtt would publish any
        Will unchecked, so a device could forge another's retained ``offline``.
        """
        user, password = session.username, session.password
        hashed = self.passwords.get(user) if user else None
        if hashed is None or password is None or not password_matches(hashed, password):
            log.info("refused %s: unknown user or wrong password", _who(session))
            return False
        if session.will_flag and not self.allows(session, session.will_topic, Access.WRITE):
            log.info(
                "refused %s: may not write its Will topic %s", _who(session), session.will_topic
            )
            return False
        return True

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Any = None
    ) -> bool:
        """SUBSCRIBE is granted, as Mosquitto 2 does; each message is then checked to read."""
        if action == Action.SUBSCRIBE:
            return True
        allowed = session is not None and self.allows(session, topic, _ACCESS[action])
        if not allowed:
            log.info("denied %s %s on %s", _who(session), action, topic)
        return allowed

    def allows(self, session: Session, topic: str | None, access: Access) -> bool:
        if topic is None or session.client_id is None:
            return False
        return self.acl.allows(session.username, session.client_id, topic, access)


class SiteBroker(Broker):  # type: ignore[misc]
    """amqtt's Broker with its delivery paths put under the ACL and the MQTT spec."""

    def __init__(self, *args: Any, free_ids: frozenset[str] = frozenset(), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connecting: set[str] = set()
        self._free_ids = free_ids

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Session]:
        """Read CONNECT and authenticate it before any session is touched.

        amqtt discards a clean session's namesake and registers the client
        before authenticating it: one refused login with a device's client id
        would wipe that device's session and leave it unusable.
        """
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except MQTTError:
            await writer.close()
            raise
        session.client_id = session.client_id or gen_client_id()
        if session.username and session.username not in self._free_ids:
            # before anything looks the id up: nobody can take another's session
            session.client_id = session.username
        if not await self._authenticate(session, None):
            session.parent = 0
            handler.attach(session, reader, writer)
            await handler.mqtt_connack_authorize(False)
            await writer.close()
            raise AMQTTError(f"{remote_address}:{remote_port} refused")
        if session.clean_session:
            await self._delete_session(session.client_id)
            session.parent = 0
        elif session.client_id in self._sessions:
            # A persistent session resumes with this connection's Will and credentials.
            existing, _ = self._sessions[session.client_id]
            for name in ("will_flag", "will_message", "will_topic", "will_qos", "will_retain"):
                setattr(existing, name, getattr(session, name))
            existing.keep_alive, existing.username = session.keep_alive, session.username
            existing.password = session.password
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _publish_session_retained_messages(self, session: Session) -> None:
        """Messages queued for a persistent session while it was away.

        amqtt sends them unchecked and flagged retained. They were checked when
        queued, but a client id can be taken over by another user: check again,
        and send them as what they are, live messages.
        """
        self._connecting.add(session.client_id)
        handler = self._get_handler(session)
        sends = []
        while handler is not None and not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            if await self._topic_filtering(session, queued.topic, Action.RECEIVE):
                send = handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False)
                sends.append(asyncio.ensure_future(send))
        if sends:
            await asyncio.wait(sends)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """Retained messages for a new subscription, each checked against the ACL.

        amqtt also calls this on every CONNECT for every client's filters, which
        would hand a newcomer the retained messages others subscribed to: those
        calls (between the queue flush above and the message loop) are skipped,
        as the spec sends retained messages on SUBSCRIBE only.
        """
        if session.client_id in self._connecting:
            return
        topic_filter, qos = subscription
        handler = self._get_handler(session)
        sends = []
        for topic, retained in list(self._retained_messages.items()):
            if handler is None or not self._matches(topic, topic_filter):
                continue
            if await self._topic_filtering(session, topic, Action.RECEIVE):
                send = handler.mqtt_publish(
                    topic, retained.data, min(qos, retained.qos or qos), retain=True
                )
                sends.append(asyncio.ensure_future(send))
        if sends:
            await asyncio.wait(sends)

    async def _client_message_loop(self, client_session: Session, handler: Any) -> None:
        self._connecting.discard(client_session.client_id)
        await super()._client_message_loop(client_session, handler)


def broker_config(host: str, port: int, password_file: Path, acl_file: Path) -> dict[str, Any]:
    """amqtt's configuration: one TCP listener and the site plugin, nothing anonymous."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            f"{__name__}.SiteFilesPlugin": {
                "password_file": str(password_file),
                "acl_file": str(acl_file),
            }
        },
    }


def _who(session: Session | None) -> str:
    if session is None:
        return "a client"
    return f"client {session.client_id!r} (user {session.username!r})"
