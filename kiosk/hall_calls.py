"""The hall speaker of kiosks on other devices: their calls, said by this speaker.

A kiosk cannot sign commands (only the controller can, and a stolen kiosk
must not command loudspeakers), so it does not ask this speaker to play
anything. It publishes each ``ticket.called`` event on its own ``calls``
topic; the broker's ACL lets this speaker read that topic of the kiosks in
``[speaker] calls_from`` and nothing else of them. The speaker synthesises
"Xin mời số A015 đến quầy số 2" itself from the number and the counter
(kiosk.voice), so the worst a forged message could do is call a wrong number.

A call is only worth saying at once: the kiosk's outbox delivers late after
a network drop, so a call older than ``call_max_age_s`` by the event's own
time is dropped, never said late. Each event id is said once (QoS 1
redelivers). What is dropped is counted in telemetry (``hall_calls``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from broadcast.audio.player import Player
from broadcast.audio.tts import EspeakEngine, SpeechEngine
from kiosk.caller import Caller
from kiosk.voice import call_text
from protocol.errors import ProtocolError
from protocol.events import TicketCalled, read_body
from protocol.uplink import Event

if TYPE_CHECKING:
    from protocol.host import RoleHost

log = logging.getLogger(__name__)


class HallCalls:
    def __init__(
        self,
        host: RoleHost,
        player: Player,
        kiosks: Sequence[str],
        *,
        max_age_s: float,
        engine: SpeechEngine | None = None,
    ) -> None:
        """Play the calls of ``kiosks`` (the speaker's ``calls_from``) through ``player``."""
        self._now = host.now_ms
        self._host = host
        self._max_age_ms = int(max_age_s * 1000)
        self.counts: Counter[str] = Counter()
        self.caller = Caller(
            player,
            engine or EspeakEngine(),
            host.state_dir / "call-clips",
            now_ms=host.now_ms,
        )
        for kiosk in kiosks:
            host.listen(host.topics.calls(kiosk), self.received)
        host.add_telemetry(lambda: {"hall_calls": dict(self.counts)})
        host.add_health(lambda: self.caller.alive)
        host.on_start(self.caller.start)
        host.on_close(self.caller.close)

    def received(self, payload: bytes) -> None:
        """One message on a kiosk's ``calls`` topic (the agent's inbound worker)."""
        try:
            event = Event.model_validate_json(payload)
            call = read_body(event.type, event.body)
            if not isinstance(call, TicketCalled):
                raise ValueError(f"a {event.type!r} event on a calls topic")
            number, counter = call.number, call.counter
            call_text(number, counter)  # a ticket number and a counter, nothing else
        except (ValidationError, ProtocolError, ValueError) as exc:
            self.counts["bad"] += 1
            log.warning("ignored a message on a kiosk's calls topic: %s", exc)
            return
        age_ms = self._now() - event.ts
        if age_ms > self._max_age_ms or age_ms < -self._max_age_ms:
            reason = "stale" if age_ms > 0 else "clock"  # "clock": the kiosk's clock is ahead
            self.counts[reason] += 1
            log.warning(
                "call of %s to counter %d not said: %s (%d ms)", number, counter, reason, age_ms
            )
            return
        # kept with the command ids (the same table, pruned the same way): a redelivery
        # after this agent restarts is still caught; past the max age the age check is enough
        if not self._host.remember_once(f"call:{event.id}", event.ts + 2 * self._max_age_ms):
            self.counts["duplicate"] += 1
            return
        self.counts["queued"] += 1
        self.caller.call(number, counter)
