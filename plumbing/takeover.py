"""Being thrown off the broker again and again: another client holds our identity.

The broker closes a session when a client with the same client id connects
(with use_username_as_clientid, the same user name): two agents started from
one cloned SD card take the session from each other at every reconnect.
Over MQTT 3.1.1 the thrown-off client sees only a closed connection, which
a flaky link gives too. So two signs are needed: a connection lost soon
after it was made, more than once in a row, and ``evidence``: the device's
own retained status written lately by another run of this identity (the
agent reads it on each reconnect). Then the agent waits, longer each time,
so the pair stops fighting; one connection that lasts ends it, and so does a
failed attempt (a broker that restarts refuses a moment; a clone's broker
never does). Pure: the time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

GROWTH = 4  # each hold this many times the last: two clones settle within a few rounds


@dataclass
class TakeoverGuard:
    stable_s: float  # a connection lost sooner than this counts as thrown off
    hold_s: float  # the first wait, once thrown off twice in a row
    hold_max_s: float
    thrown_off: int = 0  # connections lost soon after being made, in a row
    _since_s: float | None = None
    _evidence_s: float | None = None

    def __post_init__(self) -> None:
        if self.stable_s <= 0 or self.hold_s <= 0 or self.hold_max_s < self.hold_s:
            raise ValueError("need stable_s > 0 and 0 < hold_s <= hold_max_s")

    @property
    def suspected(self) -> int:
        """How often in a row we were thrown off, once it is more than a lost link (else 0)."""
        return self.thrown_off if self.thrown_off >= 2 and self._evidence_s is not None else 0

    def evidence(self, now_s: float) -> None:
        """Another run of this identity wrote the device's status since this one connected."""
        self._evidence_s = now_s

    def connected(self, now_s: float) -> None:
        self._since_s = now_s

    def unreachable(self) -> None:
        """A connection attempt failed: the broker was away, which explains what was lost."""
        self.thrown_off = 0
        self._evidence_s = None

    def lost(self, now_s: float) -> float | None:
        """A connection was lost: the hold before reconnecting, or None for the usual backoff."""
        if self._since_s is None:
            return None
        lasted = now_s - self._since_s
        self._since_s = None
        self.thrown_off = self.thrown_off + 1 if lasted < self.stable_s else 1
        if self._evidence_s is not None and now_s - self._evidence_s >= self.stable_s:
            self._evidence_s = None  # old news
        if self.suspected == 0:
            return None
        return min(self.hold_max_s, self.hold_s * float(GROWTH ** (self.thrown_off - 2)))
