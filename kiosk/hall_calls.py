"""The hall speaker of kiosks on other devices: their calls, said by this speaker.

A kiosk cannot sign commands (only the controller can, and a stolen kiosk
must not command loudspeakers), so it does not ask this speaker to play
anything. It publishes each ``ticket.called`` event on its own ``calls``
topic; the broker's ACL lets this speaker read that topic of the kiosks in
``[speaker] calls_from`` and nothing else of them. The speaker synthesises
"Xin mời số A015 đến quầy số 2" itself from the number and the counter
(kiosk.voice), so the worst a forged message could do is call a wrong number.

A call is said late rather than never (the kiosk's outbox delivers late
after a network drop; the call may wait behind other audio here), until it
is ``call_max_age_s`` old by the event's own time (kiosk.caller, the rule in
broadcast.audio.lateness.call_fate); one older, or from a kiosk clock that far
ahead, is not said and is reported as ``play.missed`` (``expired``,
``clock``), and a recall of the ticket supersedes a call of it still
waiting. Each event id is said once (QoS 1 redelivers). What is not said is
counted in telemetry too (``hall_calls``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from broadcast.audio.lateness import CALL_EXPIRED
from broadcast.audio.player import Player
from broadcast.audio.tts import EspeakEngine, SpeechEngine
from kiosk.caller import Call, Caller
from kiosk.voice import call_text
from protocol.errors import ProtocolError
from protocol.events import TicketCalled, read_body
from protocol.uplink import Event, read_uplink

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
            on_event=host.emit,
            max_age_ms=self._max_age_ms,
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
            event = read_uplink(payload, Event)
            call = read_body(event.type, event.body)
            if not isinstance(call, TicketCalled):
                raise ValueError(f"a {event.type!r} event on a calls topic")
            number, counter = call.number, call.counter
            call_text(number, counter)  # a ticket number and a counter, nothing else
        except (msgspec.DecodeError, ProtocolError, ValueError) as exc:
            self.counts["bad"] += 1
            log.warning("ignored a message on a kiosk's calls topic: %s", exc)
            return
        # kept with the command ids (the same table, pruned the same way): a redelivery
        # after this agent restarts is still caught, and one not said is reported once
        keep_until = max(event.ts, self._now()) + 2 * self._max_age_ms
        if not self._host.remember_once(f"call:{event.id}", keep_until):
            self.counts["duplicate"] += 1
            return
        why = self.caller.call(Call(number, counter, call.ticket_id, event.ts))
        if why is not None:  # "clock": the kiosk's clock is ahead
            log.warning("call of %s to counter %d not said: %s", number, counter, why)
        self.counts["queued" if why is None else "stale" if why == CALL_EXPIRED else why] += 1
