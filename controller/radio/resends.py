"""Self-healing documents: the current signed document, resent to devices behind on it.

Every ``[documents] check_every_s``, on every replica, one pass reads what the
registered devices last reported holding, the last signed documents and the
resender's memory (``behind_devices``), and asks
controller.fleet.behind_rules who is due. Each due device is claimed with a
conditional UPDATE on its memory row, so two replicas never both resend to
one device in one turn; each topic is published once however many devices
are behind on it (retained, byte for byte, or signed again with ``to`` by
``to_resend``); and each device resent to gets a log line and an audit entry
(``document.resend``, by ``controller``). Nothing is sent while the bus is
down or before the site exists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from controller.auth.audit import audit
from controller.db.broadcast_tables import PublishedDocumentRow
from controller.db.fleet_tables import BehindDevice, Device, DeviceGroup, DeviceState
from controller.db.fleet_tables import dialect_insert as insert_into
from controller.fleet.behind_rules import (
    Behind,
    DeviceDocuments,
    Memory,
    Plan,
    ResendPolicy,
    expected_topics,
    held_documents,
    resend_plan,
)
from controller.radio.clip_library import NotFound
from controller.settings import ControllerSettings
from controller.site.directory import ProvisioningError, Site
from controller.site.documents import Publisher, Signed, mark_delivered, to_resend
from plumbing.repeating import repeating
from protocol.topics import Topics

log = logging.getLogger(__name__)

ACTOR = "controller"


def _fact(b: Behind) -> dict[str, object]:
    return {"topic": b.topic, "held": b.held, "current": b.current}


def policy(settings: ControllerSettings) -> ResendPolicy:
    docs = settings.documents
    return ResendPolicy(
        after_ms=int(docs.resend_after_s * 1000),
        backoff_max_ms=int(docs.backoff_max_s * 1000),
        offline_after_ms=int(settings.alerts.offline_after_min * 60_000),
    )


class Resends:
    """Finds the devices behind on their documents and sends them the current ones."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        site: Site,
        publisher: Publisher,
        policy: ResendPolicy,
        *,
        clock: Callable[[], int],
        connected: Callable[[], bool] = lambda: True,
    ) -> None:
        self.sessions = sessions
        self.site = site
        self.publisher = publisher
        self.policy = policy
        self.clock = clock
        self.connected = connected

    def run(self, now_ms: int) -> dict[str, list[Behind]]:
        """One pass; what was resent, by device (what the audit log says too)."""
        plan, memory = self.survey(now_ms)
        return self.send(self.claim(plan, memory, now_ms), now_ms)

    def survey(self, now_ms: int) -> tuple[Plan, dict[str, Memory]]:
        """Read, plan, and write down who is seen behind first and who caught up."""
        with self.sessions.begin() as session:
            devices, published, memory = self._read(session, Topics(self.site.root))
        plan = resend_plan(devices, published, memory, self.policy, now_ms)
        self._remember(plan, now_ms)
        return plan, memory

    def claim(self, plan: Plan, memory: dict[str, Memory], now_ms: int) -> dict[str, list[Behind]]:
        """The due devices whose memory still says what this replica read: another
        replica that claimed one first has counted a resend, so this UPDATE finds no row."""
        claimed = {}
        with self.sessions.begin() as session:
            for device in sorted(plan.due):  # one lock order for every replica
                won = session.execute(
                    update(BehindDevice)
                    .where(
                        BehindDevice.device_id == device,
                        BehindDevice.resends == memory[device].resends,
                    )
                    .values(resent_ms=now_ms, resends=BehindDevice.resends + 1)
                )
                if won.rowcount == 1:  # type: ignore[attr-defined]
                    claimed[device] = plan.due[device]
        return claimed

    def send(self, claimed: dict[str, list[Behind]], now_ms: int) -> dict[str, list[Behind]]:
        """Each claimed topic once, then a log line and an audit entry per device served."""
        sent = self._publish(sorted({b.topic for docs in claimed.values() for b in docs}))
        done = {d: [b for b in docs if b.topic in sent] for d, docs in claimed.items()}
        done = {d: docs for d, docs in done.items() if docs}
        if done:
            with self.sessions.begin() as session:
                for device, docs in done.items():
                    audit(
                        session,
                        None,
                        "document.resend",
                        f"device:{device}",
                        {"documents": [_fact(b) for b in docs]},
                        at_ms=now_ms,
                        actor_name=ACTOR,
                    )
        for device, docs in done.items():
            log.info(
                "resent to %s, which reported older documents: %s",
                device,
                ", ".join(f"{b.topic} (held {b.held}, current {b.current})" for b in docs),
            )
        return done

    def resend(self, topic: str) -> Signed:
        """Publish the stored document of ``topic`` again, retained: byte for byte, or
        signed again first at the next version when it was signed before ``to``."""
        with self.sessions.begin() as session:
            signed = to_resend(session, topic, key=self.site.signing_key(), now_ms=self.clock())
        if signed is None:
            raise NotFound(
                "no_document",
                f"Chưa gửi tài liệu nào tới {topic}",
                f"No document was ever sent on {topic}",
            )
        self.publisher.publish(topic, signed.payload, qos=1, retain=True)
        with self.sessions.begin() as session:
            mark_delivered(session, signed, self.clock())
        return signed

    def _read(
        self, session: Session, topics: Topics
    ) -> tuple[list[DeviceDocuments], dict[str, int], dict[str, Memory]]:
        groups: dict[str, list[str]] = {}
        for device_id, group_id in session.execute(
            select(DeviceGroup.device_id, DeviceGroup.group_id)
        ):
            groups.setdefault(device_id, []).append(group_id)
        rows = session.execute(
            select(
                Device.id,
                Device.last_seen_ms,
                DeviceState.state,
                DeviceState.documents,
                DeviceState.status_ts_ms,
                DeviceState.telemetry["documents"],  # not the whole sample
                DeviceState.telemetry_ms,
            )
            .join(DeviceState, DeviceState.device_id == Device.id)
            .where(Device.registered.is_(True))
        )
        devices = [
            DeviceDocuments(
                device_id=r[0],
                expected=expected_topics(topics, r[0], groups.get(r[0], ())),
                held=held_documents(r[3], r[4], r[5], r[6]),
                state=r[2],
                last_seen_ms=r[1],
            )
            for r in rows
        ]
        docs = PublishedDocumentRow
        published = {t: v for t, v in session.execute(select(docs.topic, docs.version))}
        memory = {
            m.device_id: Memory(m.since_ms, m.resent_ms, m.resends)
            for m in session.scalars(select(BehindDevice))
        }
        return devices, published, memory

    def _remember(self, plan: Plan, now_ms: int) -> None:
        if not plan.first_seen and not plan.forget:
            return
        with self.sessions.begin() as session:
            if plan.forget:
                session.execute(
                    delete(BehindDevice).where(BehindDevice.device_id.in_(sorted(plan.forget)))
                )
            if plan.first_seen:  # another replica may have written it first: either is right
                session.execute(
                    insert_into(session, BehindDevice)
                    .values(resends=0)
                    .on_conflict_do_nothing(index_elements=["device_id"]),
                    [{"device_id": d, "since_ms": now_ms} for d in sorted(plan.first_seen)],
                )

    def _publish(self, topics: list[str]) -> set[str]:
        """Each topic once; a broker that fails stops the pass (retried at its next turn)."""
        sent = set()
        for topic in topics:
            try:
                self.resend(topic)
            except Exception as exc:  # the bus's or the station's refusal: the broker is away
                log.warning("resending %s failed (%s); the next turn tries again", topic, exc)
                break
            sent.add(topic)
        return sent

    def tick(self) -> None:
        """A pass when the bus is up and the site exists; a failure is logged, not raised."""
        if not self.connected():
            return
        try:
            self.run(self.clock())
        except ProvisioningError:
            return  # no site yet: nothing was ever signed
        except Exception:
            log.exception("document resends failed; will retry")

    def running(self, every_s: float) -> AbstractContextManager[None]:
        return repeating("document-resends", self.tick, every_s)
