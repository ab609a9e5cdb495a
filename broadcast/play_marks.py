"""The durable "now playing" mark: a play cut off with the agent is told at its next start.

The player tells each play's start and end as they happen; an agent that
dies mid-play (a power cut, a crash, kill -9) tells neither its end nor how
much aired. So the speaker keeps, in the agent's state file, a mark of the
plays under way: written when one starts, brought up to date every
``CHECKPOINT_MS`` while it plays, cleared when it ends. A mark found at start
is a play that never ended; it is reported as ``play.interrupted`` with what
had aired by its last checkpoint, and why: ``power_loss`` if the device
booted since (its boot id changed), ``crash`` if only the agent died,
``agent_down`` where the boot cannot be told.

A play preempted to resume later keeps its mark, as waiting at where it was
cut, so a power cut during the emergency still tells the bulletin's end.

The mark is one setting (JSON, by play key), written before ``play.started``
is recorded and cleared only after the end is: a power cut between two writes
can tell an end twice (or one with no start), never lose one.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from protocol.events import (
    Body,
    PlayFinished,
    PlayInterrupted,
    PlayMissed,
    PlayRecord,
    PlayStarted,
)

log = logging.getLogger(__name__)

SETTING = "plays_under_way"
CHECKPOINT_MS = 1_000  # one small write a second while something plays
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
RECORD_FIELDS = PlayRecord.__struct_fields__


class Settings(Protocol):
    """The part of the role's host the mark needs (protocol.host.RoleHost)."""

    def setting(self, name: str) -> str | None: ...

    def set_setting(self, name: str, value: str) -> None: ...


def boot_id(path: Path = BOOT_ID) -> str | None:
    """This boot of the device (Linux); None where it cannot be read."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def interrupted(marks: dict[str, dict[str, Any]], boot: str | None) -> list[PlayInterrupted]:
    """What the marks left by the last run say: one ``play.interrupted`` per play."""
    found = []
    for mark in marks.values():
        try:
            reason = _why(mark.get("boot"), boot)
            record = {k: mark[k] for k in RECORD_FIELDS if k in mark}
            found.append(
                PlayInterrupted(
                    **record,
                    actual_ms=mark["actual_ms"],
                    played_ms=mark["played_ms"],
                    checkpoint_ms=mark["checkpoint_ms"],
                    reason=reason,
                )
            )
        except (KeyError, TypeError, ValueError) as exc:  # written by us; never mind a bad one
            log.warning("a play mark could not be read (%s): %r", exc, mark)
    return found


def _why(then: str | None, now: str | None) -> str:
    if then is None or now is None:
        return "agent_down"
    return "crash" if then == now else "power_loss"


class PlayMarks:
    """The marks of the plays under way, kept in step with the play records."""

    def __init__(self, settings: Settings, boot: str | None = None) -> None:
        self._settings = settings
        self._boot = boot
        self._lock = threading.Lock()
        self._marks: dict[str, dict[str, Any]] = {}
        self._written_ms: dict[str, float] = {}

    def recover(self, tell: Callable[[PlayInterrupted], None]) -> list[PlayInterrupted]:
        """At start: ``tell`` each play the last run left under way, then clear the mark."""
        raw = self._settings.setting(SETTING)
        try:
            left = json.loads(raw) if raw else {}
        except ValueError:
            log.warning("the play mark is not JSON; dropped: %r", raw[:200] if raw else raw)
            left = {}
        found = interrupted(left if isinstance(left, dict) else {}, self._boot)
        for body in found:
            tell(body)
        with self._lock:
            self._marks = {}
            self._write()
        return found

    def started(self, body: PlayStarted, now_ms: float) -> None:
        """Before ``play.started`` is recorded: under way from its first sample."""
        with self._lock:
            self._marks[body.key] = {
                **body.wire(),
                "played_ms": 0,
                "checkpoint_ms": round(now_ms),
                "boot": self._boot,
            }
            self._written_ms[body.key] = now_ms
            self._write()

    def ended(self, body: Body, now_ms: float) -> None:
        """After the end is recorded: the mark goes, or waits for the rest of a cut play."""
        if not isinstance(body, PlayFinished | PlayMissed):
            return
        with self._lock:
            if body.key not in self._marks:
                return
            if isinstance(body, PlayFinished) and body.resumes:
                waiting = {k: v for k, v in body.wire().items() if k in RECORD_FIELDS}
                waiting["resumed_from_ms"] = body.resumed_from_ms + body.played_ms
                self._marks[body.key] = {
                    **waiting,
                    "actual_ms": None,
                    "played_ms": 0,
                    "checkpoint_ms": round(now_ms),
                    "boot": self._boot,
                }
            else:
                del self._marks[body.key]
                self._written_ms.pop(body.key, None)
            self._write()

    def checkpoint(self, playing: dict[str, Any] | None, now_ms: float) -> None:
        """How far the play under way has got (``Player.now_playing()``), at most once
        every ``CHECKPOINT_MS``; a play whose start is not yet marked is left alone."""
        if playing is None:
            return
        key = playing["key"]
        with self._lock:
            mark = self._marks.get(key)
            if mark is None or mark.get("actual_ms") != playing["actual_ms"]:
                return  # not marked yet, or a part that has ended meanwhile
            if now_ms - self._written_ms.get(key, 0) < CHECKPOINT_MS:
                return
            mark["played_ms"] = max(0, playing["played_ms"] - mark.get("resumed_from_ms", 0))
            mark["checkpoint_ms"] = round(now_ms)
            self._written_ms[key] = now_ms
            self._write()

    def _write(self) -> None:
        self._settings.set_setting(SETTING, json.dumps(self._marks, ensure_ascii=False))
