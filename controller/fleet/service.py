"""The fleet's background work: alert rules, retention, and the registry mirror.

Ingest itself runs on the station's MQTT client (controller/radio/station.py), one
client per process on the shared subscription, so this service needs no
broker at all and the app starts with none reachable. It only reads and
writes the database and the site directory:

- every `[alerts] check_every_s`, `AlertEngine.run` (the rules; each raise and
  clear queues its webhook), while a `WebhookSender` posts the queue on a
  thread of its own, so a slow receiver never delays the rules;
- every `[telemetry] maintain_every_min`, `rollups.maintain` (roll-ups,
  retention);
- whenever `devices.json` changes (the web UI or `xaso device add`), the
  registry is mirrored into the devices and groups tables.

Each step is idempotent and safe on several replicas at once (see
docs/controller-data.md), so every replica runs this service. Time comes from
the app's clock, so tests can move it; `tick()` runs one pass by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from controller.fleet.alert_rules import Thresholds
from controller.fleet.alerts import AlertEngine
from controller.fleet.ingest_writes import sync_devices_from_site
from controller.fleet.rollups import Retention, maintain, reclaim
from controller.fleet.upward import Upward
from controller.fleet.webhooks import WebhookSender
from controller.settings import ControllerSettings
from controller.site.directory import ProvisioningError, open_site
from plumbing.repeating import repeating

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often the loop looks at the registry file and the timers


def thresholds(settings: ControllerSettings) -> Thresholds:
    a = settings.alerts
    return Thresholds(
        offline_after_min=a.offline_after_min,
        temp_high_c=a.temp_high_c,
        disk_low_pct=a.disk_low_pct,
    )


class FleetService:
    def __init__(
        self,
        settings: ControllerSettings,
        sessions: sessionmaker[Session],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.clock = clock
        a = settings.alerts
        self.engine = AlertEngine(
            sessions,
            thresholds(settings),
            webhooks=bool(a.webhook_url),
            commune_webhooks=set(a.commune_webhooks),
        )
        self.webhooks = (
            WebhookSender(
                sessions,
                a.webhook_url,
                self.now_ms,
                commune_urls=a.commune_webhooks,
                timeout_s=a.webhook_timeout_s,
                max_attempts=a.webhook_max_attempts,
                retry_s=a.webhook_retry_s,
                retry_max_s=a.webhook_retry_max_s,
            )
            if a.webhook_url or a.commune_webhooks
            else None
        )
        self.upward = (
            Upward(sessions, settings.upward, self.now_ms) if settings.upward.url else None
        )
        self.retention = Retention(raw_days=settings.telemetry.retention_days)
        self._registry_mtime_ns: int | None = None
        self._alerts_due_ms = 0
        self._maintain_due_ms = 0

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def tick(self) -> None:
        """One pass: mirror the registry if it changed, then whatever timers are due."""
        now = self.now_ms()
        self._step("registry", self.sync_registry)
        if now >= self._maintain_due_ms:
            self._maintain_due_ms = now + int(self.settings.telemetry.maintain_every_min * 60_000)
            self._step("maintain", lambda: self._maintain(now))
        if now >= self._alerts_due_ms:
            self._alerts_due_ms = now + int(self.settings.alerts.check_every_s * 1000)
            self._step("alerts", lambda: self._alerts(now))

    def sync_registry(self, force: bool = False) -> bool:
        """Mirror `devices.json` into the database when it changed; True if it did."""
        try:
            site = open_site(self.settings.site_dir)
            mtime = (site.dir / "devices.json").stat().st_mtime_ns
        except (ProvisioningError, OSError):
            return False  # no site yet: nothing to mirror
        if not force and mtime == self._registry_mtime_ns:
            return False
        with self.sessions.begin() as session:
            sync_devices_from_site(site, session, self.now_ms())
        self._registry_mtime_ns = mtime
        return True

    def _alerts(self, now_ms: int) -> None:
        changes = self.engine.run(now_ms)
        if self.webhooks is not None and (changes.raised or changes.cleared):
            self.webhooks.wake()

    def _maintain(self, now_ms: int) -> None:
        with self.sessions.begin() as session:
            done = maintain(session, now_ms, self.retention)
            bind = session.get_bind()
        if isinstance(bind, Engine) and any(n for k, n in done.items() if k.endswith("_deleted")):
            done["pages_reclaimed"] = reclaim(bind)  # once the deletes are committed
        if self.upward is not None:
            done["upward_pruned"] = self.upward.prune(now_ms)
        log.info("fleet maintenance: %s", done)

    def _step(self, name: str, step: Callable[[], object]) -> None:
        """A failed step (database down) is logged and tried again on its next turn."""
        try:
            step()
        except Exception:
            log.exception("fleet service: %s failed; will retry", name)

    @contextmanager
    def running(self) -> Iterator[None]:
        pause_s = min(POLL_S, self.settings.alerts.check_every_s)
        with ExitStack() as stack:
            if self.webhooks is not None:
                stack.enter_context(self.webhooks.running())
            if self.upward is not None:  # its own thread: the province may be slow or away
                stack.enter_context(self.upward.running())
            stack.enter_context(repeating("fleet-service", self.tick, pause_s))
            yield
