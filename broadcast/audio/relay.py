"""A live stream relayed for as long as it is scheduled, and an honest account of it.

A stream that ends (the server restarted, the 4G link went) makes ffmpeg
exit, and the relay starts it again, with jittered backoff, for as long as the
relay's time lasts: there is no attempt limit, so a drop of any length ends
with the stream back on air. A stream that connects but carries silence (dead
air: the studio's feed is down) is treated like a drop, after ``dead_air_s``.
Each stretch that did not air the stream is a gap, filled with silence or
with the fallback clip, and recorded (offset from the first sample, length,
why) with the time the stream really aired, for the proof of play.

The player asks ``prefetch`` until audio has come (so that an unreachable
stream switches no amplifier on and reports no start), and only then plays.

A stream from the site's own mount carries its timeline (protocol/ogg.py): it
is read by broadcast/audio/timed_stream.py, and each chunk is the audio due at
the instant the player says it will be heard (``align``), so every speaker
plays the same sample at the same moment, a late one included: what is past
is dropped, and silence leads up to what is not yet due.

A relayed station comes through the site's own mount of it (the controller
pulls each station once, controller/radio/station_pulls.py) with the station's
own URL as ``direct_url``: after ``DIRECT_AFTER`` failed attempts in a row on
the mount (the controller or its pull is down), the relay asks the station
itself, without the device's credentials, and goes back to the mount when that
connection fails or ends. So a relay airs while the controller is away, and a
province's speakers return to the one pull as soon as it is back.

ffmpeg's ``-reconnect_streamed`` is left off on purpose: it hides drops from
the proof of play, and it restarts its own backoff on every read, so a server
that accepts and soon closes is asked again at once, forever (seen here: 15
requests in 0.24 s for one short response). A thousand loudspeakers must not
do that to a province's radio server.
"""

from __future__ import annotations

import logging
import math
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broadcast.audio.decode import (
    PCM_ARGS,
    STALL_TIMEOUT_S,
    DecodeError,
    DecoderPool,
    FfmpegPipe,
    bytes_to_ms,
    ms_to_bytes,
    volume_arg,
)
from broadcast.audio.sources import ClipSource
from broadcast.audio.timed_stream import OggFeed
from plumbing.backoff import Backoff
from protocol.events import MAX_GAPS, RelayGap

log = logging.getLogger(__name__)

DROPPED = "dropped"
DEAD_AIR = "dead_air"
UNREACHABLE = "unreachable"  # no audio came for dead_air_s from the start: the fallback airs
FALLBACK_PASSES = 1000  # the fallback clip loops for as long as a gap lasts
DIRECT_AFTER = 2  # failed attempts in a row on the site's mount before the station's own URL
STEP_TOLERANCE_MS = 2.0  # further than this from the stream's timeline: dropped or padded
# a timeline this far from the sink's at first sight is wrong (the controller's clock or
# this speaker's): the stream plays as joined, and an ``audio.fault`` ``clock`` says why
STEP_TRUST_MS = 15_000.0


class DeadAir(DecodeError):
    """The stream stayed silent and there is no fallback clip: the relay stops."""


@dataclass(frozen=True)
class RelayPolicy:
    """How a relay rides out drops and dead air (the speaker's ``[speaker]`` settings)."""

    retry_base_s: float = 0.5
    retry_cap_s: float = 10.0  # a fleet's reconnects to one radio server stay spread
    dead_air_s: float = 15.0  # this long below ``dead_air_dbfs``: the stream is dead air
    dead_air_dbfs: float = -50.0  # RMS level of a chunk
    fallback_clip: Path | None = None  # plays in a dead-air gap; none: the relay stops


def rms_dbfs(pcm: bytes) -> float:
    """The RMS level of s16le PCM, in dBFS (-inf for digital silence)."""
    samples = array("h", pcm)
    if not samples:
        return -math.inf
    power = sum(x * x for x in samples) / len(samples)
    return 10 * math.log10(power / 32768**2) if power else -math.inf


class StreamRelay:
    """A live stream relayed for ``duration_ms`` of wall clock, gaps filled and recorded."""

    def __init__(
        self,
        url: str,
        duration_ms: float,
        *,
        gain_db: float = 0.0,
        authorization: str | None = None,
        direct_url: str | None = None,
        on_fault: Callable[[str, str], None] = lambda reason, detail: None,
        ffmpeg: str = "ffmpeg",
        chunk_ms: float = 20,
        jitter_ms: float = 1000,
        policy: RelayPolicy | None = None,
        pool: DecoderPool | None = None,
    ) -> None:
        self.url = url
        self.duration_ms = duration_ms
        self.gain_db = gain_db
        self.authorization = authorization
        self.direct_url = direct_url
        self.on_direct = False  # pulling ``direct_url`` now, not ``url``
        self._failed_in_a_row = 0  # attempts on ``url`` that gave no audio
        self.policy = policy or RelayPolicy()
        self._on_fault = on_fault
        self._ffmpeg = ffmpeg
        self._pool = pool
        self._chunk = ms_to_bytes(chunk_ms)
        self._jitter = ms_to_bytes(jitter_ms)
        self._dead_air = ms_to_bytes(self.policy.dead_air_s * 1000)
        self._backoff = Backoff(self.policy.retry_base_s, self.policy.retry_cap_s)
        self._ff: FfmpegPipe | None = None
        self._fallback: ClipSource | None = None
        self._fallback_ok = self.policy.fallback_clip is not None and pool is not None
        self._base = 0  # where in its play this relay began (carry_on)
        self._delivered = 0  # on air so far: the stream, silence or the fallback
        self._relayed = 0  # of which the stream itself
        self._silent = 0  # the stream's latest bytes below the dead-air level, in a row
        self._gap: tuple[int, str] | None = None  # the open gap: where it began, why
        self.gaps: list[RelayGap] = []
        self._got_audio = False  # from the current connection
        self.last_error = ""
        self._retry_at = 0.0
        self._buffering = True
        self._heard_at: float | None = None  # when the next sample read will be heard

    @property
    def remaining_bytes(self) -> int:
        return max(0, ms_to_bytes(self.duration_ms) - self._delivered)

    @property
    def relayed_ms(self) -> float:
        return bytes_to_ms(self._relayed)

    @property
    def has_fallback(self) -> bool:
        return self._fallback_ok

    def open_unreachable(self) -> None:
        """Go on air in a gap: no audio came for ``dead_air_s``, and there is a fallback
        clip to air meanwhile; the stream is still asked for, as its backoff says."""
        self._buffering = True
        self._gap = (self._delivered, UNREACHABLE)
        why = self.last_error or "no audio came from the stream"
        self._on_fault(UNREACHABLE, why)

    def carry_on(self, before: StreamRelay) -> None:
        """Go on with ``before``'s account: the same play, restarted at a new gain."""
        before._close_gap()
        self._base = before._base + before._delivered
        self._relayed += before._relayed
        self.gaps = before.gaps

    def shorten(self, ms: float) -> None:
        """Relay ``ms`` less: its start waited for the stream, and its end stays put."""
        self.duration_ms = max(0.0, self.duration_ms - ms)

    @property
    def current_url(self) -> str:
        return self.direct_url if self.on_direct and self.direct_url else self.url

    def _args(self) -> list[str]:
        net = ["-rw_timeout", str(int(STALL_TIMEOUT_S * 1e6))]
        url = self.current_url
        if url.startswith(("http://", "https://")):  # resumes a cut response with a length
            net += ["-reconnect", "1", "-reconnect_delay_max", "5"]
            if self.authorization and not self.on_direct:  # never to the station's server
                net += ["-headers", f"Authorization: {self.authorization}\r\n"]
        # a little over what is left: the relay itself stops at the exact sample
        seconds = f"{bytes_to_ms(self.remaining_bytes) / 1000 + 0.5:.3f}"
        volume = f"volume={volume_arg(self.gain_db)}"
        return [*net, "-i", url, "-t", seconds, "-af", volume, *PCM_ARGS]

    def align(self, heard_at_ms: float) -> None:
        """The next sample ``read`` gives is heard at ``heard_at_ms`` (the sink's timeline):
        a stream with a timeline gives the sample due then."""
        self._heard_at = heard_at_ms

    def start(self) -> None:
        if self._ff is None and time.monotonic() >= self._retry_at and self.remaining_bytes:
            if self.authorization is not None and not self.on_direct:  # the site's own mount
                self._ff = OggFeed(
                    self._ffmpeg, self.url, authorization=self.authorization, gain_db=self.gain_db
                )
            else:
                self._ff = FfmpegPipe(self._ffmpeg, self._args())
            self._got_audio = False
            self._buffering = True

    def prefetch(self, ahead_ms: float, timeout_s: float) -> bool:
        """Connect (again, after backoff) and fill the jitter buffer; True once audio is in."""
        self.start()
        ff = self._ff
        if ff is None:
            time.sleep(min(timeout_s, max(0.0, self._retry_at - time.monotonic())))
            return False
        want = min(max(ms_to_bytes(ahead_ms), self._jitter), self.remaining_bytes)
        ff.fill(want, timeout_s)
        if ff.buffered >= want or (ff.eof and ff.buffered):
            self._buffering = False
            return True
        if ff.eof:
            self._dropped()
        return False

    def read(self, timeout_s: float) -> bytes | None:
        want = min(self._chunk, self.remaining_bytes)
        if want == 0:
            return None
        self.start()
        data = self._from_stream(want, timeout_s)
        if data is not None:
            self._close_gap()
            self._relayed += len(data)
            self._delivered += len(data)
            return data
        if self._gap is None:
            self._gap = (self._delivered, DROPPED)
        out = self._filler(want)
        self._delivered += len(out)
        return out

    def _from_stream(self, want: int, timeout_s: float) -> bytes | None:
        """The stream's next audio to air, or None: connecting, buffering, gone or dead air."""
        ff = self._ff
        if ff is None:
            return None
        if self._keeps_step(ff):
            assert isinstance(ff, OggFeed)
            return self._in_step(ff, want, timeout_s)
        ff.fill(self._jitter if self._buffering else want, 0 if self._buffering else timeout_s)
        if self._buffering and (ff.buffered >= min(self._jitter, self.remaining_bytes) or ff.eof):
            self._buffering = False
        if not self._buffering and ff.buffered:
            return self._aired(ff.take(want))
        if ff.eof:
            self._dropped()
        elif not self._buffering:
            self._buffering = True  # ran dry: refill before playing on
        return None

    def _keeps_step(self, ff: FfmpegPipe) -> bool:
        """Whether ``ff`` plays on its timeline: it has one, and the clocks agree on it."""
        if not isinstance(ff, OggFeed) or self._heard_at is None or ff.off_clock:
            return False
        instant = ff.instant_ms()
        if instant is None:
            return False
        if not ff.clock_checked:
            ff.clock_checked = True
            off = self._heard_at - instant
            if abs(off) > STEP_TRUST_MS:
                ff.off_clock = True
                why = f"the stream's timeline is {off / 1000:+.1f} s from this speaker's clock"
                log.warning("stream %s: %s; played as joined", self.url, why)
                self._on_fault("clock", why)
                return False
        return True

    def _aired(self, data: bytes) -> bytes | None:
        """The stream's audio as it airs, or None once it has been silent for ``dead_air_s``."""
        self._got_audio = True
        if rms_dbfs(data) >= self.policy.dead_air_dbfs:
            self._silent = 0
            return data
        self._silent += len(data)
        if self._gap is not None and self._gap[1] == DEAD_AIR:
            return None  # still dead: the fallback (or silence) goes on
        if self._silent >= self._dead_air:
            self._went_dead(self._silent - len(data))
            return None
        return data  # a quiet moment, aired as it came

    def _in_step(self, ff: OggFeed, want: int, timeout_s: float) -> bytes | None:
        """The stream's audio due at ``_heard_at``: what is past is dropped, and silence
        leads up to what is not yet due (not the stream's, so not its dead air); None if
        the audio due has not come. Its buffer is the play-out delay before its instants."""
        assert self._heard_at is not None
        self._buffering = False
        deadline = time.monotonic() + timeout_s
        while (early := self._instant(ff) - self._heard_at) < -STEP_TOLERANCE_MS:
            behind = ms_to_bytes(-early)
            ff.fill(behind, max(0.0, deadline - time.monotonic()))
            if not ff.buffered:
                break
            ff.take(behind)
        else:
            if early > STEP_TOLERANCE_MS:
                return bytes(min(want, ms_to_bytes(early)))
            ff.fill(want, max(0.0, deadline - time.monotonic()))
            if ff.buffered:
                return self._aired(ff.take(want))
        if ff.eof:
            self._dropped()
        return None

    @staticmethod
    def _instant(ff: OggFeed) -> float:
        instant = ff.instant_ms()
        assert instant is not None  # _keeps_step saw it
        return instant

    def _went_dead(self, aired: int) -> None:
        """Silent for ``dead_air_s``: the gap began when the silence did (``aired`` bytes
        ago, which are not the stream's after all); connect again."""
        began = self._delivered - aired
        self._relayed -= aired
        self._close_gap()
        self._gap = (began, DEAD_AIR)
        why = f"the stream was silent (below {self.policy.dead_air_dbfs:g} dBFS)"
        why += f" for {self.policy.dead_air_s:g} s"
        self._reconnect_later(why)
        self._on_fault(DEAD_AIR, why)

    def _dropped(self) -> None:
        assert self._ff is not None
        why = self._ff.failure() or "the stream ended"
        if self._got_audio:
            self._backoff.reset()
        first = self._backoff.attempt == 0  # told once per outage, not at every attempt
        self._reconnect_later(why)
        if first:
            self._on_fault("stream_dropped", why)

    def _reconnect_later(self, why: str) -> None:
        assert self._ff is not None
        self._choose_url()
        self.last_error = why
        self._ff.close()
        self._ff = None
        self._silent = 0
        delay = self._backoff.next_delay()
        self._retry_at = time.monotonic() + delay
        log.warning("stream %s: %s; again in %.2f s", self.current_url, why, delay)

    def _choose_url(self) -> None:
        """After a failure: the station's own URL once the mount failed ``DIRECT_AFTER``
        times in a row, and the mount again after any failure or end of the direct pull."""
        if self.direct_url is None:
            return
        if self.on_direct:
            self.on_direct, self._failed_in_a_row = False, 0
            return
        self._failed_in_a_row = 0 if self._got_audio else self._failed_in_a_row + 1
        if self._failed_in_a_row >= DIRECT_AFTER:
            self.on_direct, self._failed_in_a_row = True, 0

    def _filler(self, want: int) -> bytes:
        """What airs in a gap: the fallback clip in dead air, if there is one, else silence."""
        assert self._gap is not None
        began, reason = self._gap
        if reason == DROPPED:
            return bytes(want)
        if not self._fallback_ok:
            if self._delivered - began >= 2 * self._dead_air:  # dead_air_s more to come back
                raise DeadAir(f"{self.url}: {self.last_error}, and no fallback clip is set")
            return bytes(want)
        clip, pool = self.policy.fallback_clip, self._pool
        assert clip is not None and pool is not None
        try:
            if self._fallback is None:
                chunk_ms = bytes_to_ms(self._chunk)
                self._fallback = ClipSource(clip, pool, repeat=FALLBACK_PASSES, chunk_ms=chunk_ms)
            data = (self._fallback.read(bytes_to_ms(want) / 1000) or b"")[:want]
        except DecodeError as exc:
            self._fallback_ok = False  # as if there were none: the relay stops in time
            self._on_fault("fallback_unreadable", str(exc))
            return bytes(want)
        return data + bytes(want - len(data))

    def _close_gap(self) -> None:
        if self._fallback is not None:
            self._fallback.close()
            self._fallback = None
        if self._gap is None:
            return
        began, reason = self._gap
        self._gap = None
        length = round(bytes_to_ms(self._delivered - began))
        if length and len(self.gaps) < MAX_GAPS:
            self.gaps.append(
                RelayGap(
                    offset_ms=round(bytes_to_ms(self._base + began)),
                    length_ms=length,
                    reason=reason,
                )
            )

    def proof(self) -> tuple[float, list[RelayGap]]:
        """What aired of the stream and its gaps, so far (an open gap ends now)."""
        self._close_gap()
        return self.relayed_ms, self.gaps

    def remainder(self, gain_db: float) -> StreamRelay:
        return StreamRelay(
            self.url,
            bytes_to_ms(self.remaining_bytes),
            gain_db=gain_db,
            authorization=self.authorization,
            direct_url=self.direct_url,
            on_fault=self._on_fault,
            ffmpeg=self._ffmpeg,
            chunk_ms=bytes_to_ms(self._chunk),
            jitter_ms=bytes_to_ms(self._jitter),
            policy=self.policy,
            pool=self._pool,
        )

    def close(self) -> None:
        if self._fallback is not None:
            self._fallback.close()
            self._fallback = None
        if self._ff is not None:
            self._ff.close()
            self._ff = None
