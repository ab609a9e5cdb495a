"""What the player plays: PCM chunks in real time from a clip (a live stream: relay.py).

A source reads from ffmpeg a chunk at a time (broadcast.audio.decode) and
knows what is left of it when it is cut, so that a preempted clip or stream
resumes where it stopped, at the gain of the moment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from broadcast.audio.decode import (
    STALL_TIMEOUT_S,
    DecodeError,
    DecoderPool,
    PipeDecoder,
    bytes_to_ms,
    ms_to_bytes,
)


class PcmSource(Protocol):
    """What the player plays: PCM chunks in real time, and what is left of it if cut."""

    def start(self) -> None: ...
    def prefetch(self, ahead_ms: float, timeout_s: float) -> bool: ...
    def read(self, timeout_s: float) -> bytes | None: ...
    def remainder(self, gain_db: float) -> PcmSource: ...
    def close(self) -> None: ...


class ClipSource:
    """A clip played ``repeat`` times back to back, from ``start_ms`` into its first pass."""

    def __init__(
        self,
        path: Path,
        pool: DecoderPool,
        *,
        gain_db: float = 0.0,
        repeat: int = 1,
        start_ms: float = 0,
        chunk_ms: float = 20,
    ) -> None:
        self.path = path
        self._pool = pool
        self.gain_db = gain_db
        self.repeat = repeat
        self.start_ms = start_ms
        self._chunk = ms_to_bytes(chunk_ms)
        self._pass = 0
        self._pass_bytes = 0  # delivered from the current pass
        self._cur: PipeDecoder | None = None
        self._next: PipeDecoder | None = None
        self._silent_since: float | None = None

    def _decoder(self, start_ms: float) -> PipeDecoder:
        return self._pool.open(self.path, gain_db=self.gain_db, start_ms=start_ms)

    def start(self) -> None:
        if self._cur is None and self._pass < self.repeat:
            self._cur = self._decoder(self.start_ms if self._pass == 0 else 0)

    def prefetch(self, ahead_ms: float, timeout_s: float) -> bool:
        """Decode ahead: True once ``ahead_ms`` are ready (or the clip is shorter)."""
        self.start()
        return self._cur is None or self._cur.fill(ms_to_bytes(ahead_ms), timeout_s)

    def read(self, timeout_s: float) -> bytes | None:
        while self._pass < self.repeat:
            self.start()
            assert self._cur is not None
            more = self._pass + 1 < self.repeat
            if more and self._next is None and self._cur.finished_decoding():
                self._next = self._decoder(0)  # the next pass starts before this one ends
            data = self._cur.read(self._chunk, timeout_s)
            if data is None:
                self._cur.close()
                self._cur, self._next = self._next, None
                self._pass += 1
                self._pass_bytes = 0
                continue
            self._check_stall(bool(data))
            self._pass_bytes += len(data)
            return data
        return None

    def _check_stall(self, got: bool) -> None:
        now = time.monotonic()
        if got:
            self._silent_since = None
        elif self._silent_since is None:
            self._silent_since = now
        elif now - self._silent_since > STALL_TIMEOUT_S:
            name = self.path.name
            raise DecodeError(f"{name}: the decoder produced nothing for {STALL_TIMEOUT_S} s")

    def remainder(self, gain_db: float) -> ClipSource:
        offset = (self.start_ms if self._pass == 0 else 0) + bytes_to_ms(self._pass_bytes)
        return ClipSource(
            self.path,
            self._pool,
            gain_db=gain_db,
            repeat=max(1, self.repeat - self._pass),
            start_ms=offset,
            chunk_ms=bytes_to_ms(self._chunk),
        )

    def close(self) -> None:
        for decoder in (self._cur, self._next):
            if decoder is not None:
                decoder.close()
        self._cur = self._next = None
