"""`xaso agent --config FILE`: run the agent under systemd (or by hand).

Readiness is signalled once the stored documents are applied, not when the
broker answers: a device with no network is still ready to do its work.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from edge.agent import Agent
from edge.config import AgentConfig, ConfigError, load_config
from edge.memory import release_free_memory
from edge.systemd import SystemdNotifier
from plumbing.sqlite import StoreError

log = logging.getLogger(__name__)
EXIT_CONFIG = 2
EXIT_RESTART = 75  # asked to restart by device.restart_agent: systemd's Restart=always obliges
DEFAULT_WATCHDOG_PING_S = 10.0
# Start-up garbage is freed by the time the session is up; later trims catch what
# a burst of work (a schedule expanded, a clip fetched) left behind.
FIRST_TRIM_S = 2.0
TRIM_EVERY_S = 300.0


def build_agent(config: AgentConfig) -> Agent:
    """The one place that wires an edge: the agent and the roles it carries."""
    agent = Agent(config)
    player = None
    if "speaker" in config.device.roles:
        from broadcast.speaker import Speaker

        player = Speaker(agent, config.speaker).player
        if config.speaker.calls_from:
            from kiosk.hall_calls import HallCalls  # speech (pydub) only where it is needed

            HallCalls(
                agent, player, config.speaker.calls_from, max_age_s=config.speaker.call_max_age_s
            )
    if "kiosk" in config.device.roles:
        from kiosk.role import attach

        # a kiosk that is also the hall speaker calls through the speaker's player:
        # one owner of the sound device (PITFALLS: a second opener gets EBUSY)
        attach(agent, config.kiosk, player=player)
    return agent


def run_agent(config_path: Path) -> int:
    try:
        config = load_config(config_path)
        agent = build_agent(config)
    except (ConfigError, StoreError) as exc:
        print(f"xaso agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    notifier = SystemdNotifier()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    agent.start()
    notifier.ready()
    ping_s = notifier.watchdog_interval_s() or DEFAULT_WATCHDOG_PING_S
    next_ping = next_trim = time.monotonic() + FIRST_TRIM_S
    while not agent.wait(max(0.0, min(next_ping, next_trim) - time.monotonic())):
        now = time.monotonic()
        if now >= next_trim:
            release_free_memory()
            next_trim = now + TRIM_EVERY_S
        if now < next_ping:
            continue
        next_ping = now + ping_s
        if agent.healthy:
            notifier.watchdog()
        else:
            log.error("a worker thread died; withholding the watchdog ping so systemd restarts us")
    notifier.stopping()
    agent.close()
    return EXIT_RESTART if agent.restart_requested.is_set() else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser("agent", help="run the edge agent on a device")
    agent.add_argument("--config", required=True, help="the agent's TOML configuration file")
    agent.set_defaults(func=lambda args: run_agent(Path(args.config)))
