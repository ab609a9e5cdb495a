"""A site mount read here, page by page, so that each sample's wall-clock instant is known.

The site's own mounts (``device_auth``) carry the instant every speaker plays
their first sample (``protocol.ogg.EPOCH_TAG`` in OpusTags). The pages are
fetched here, not by ffmpeg, and fed to an ffmpeg that only decodes, so the
granule position of the first page it decodes is known: ffmpeg trims the
pre-skip from the first packet it decodes wherever it joins, so its first
sample is stream sample ``granule`` of the page before, pre-skip and all
(``first_sample``; tests/test_stream_in_step.py checks it against a whole
decode). Icecast starts a late listener after the headers at any page; the page before it is
known only when the sequence numbers follow on, so the first audio page
after a jump is skipped.

A stream without the tag plays from where it is joined (``instant_ms`` None).
A second stream chained on the connection ends the feed: the relay connects
again and reads its headers afresh.
"""

from __future__ import annotations

import contextlib
import threading
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from broadcast.audio.decode import FRAME_BYTES, PCM_ARGS, STALL_TIMEOUT_S, FfmpegPipe, volume_arg
from protocol.ogg import OggError, Page, PageReader, epoch_of, opus_pre_skip, sample_instant_ms

READ_BYTES = 4096


class OggFeed(FfmpegPipe):
    """A mount fetched with the device's credentials, decoded to PCM; each byte's instant."""

    def __init__(self, ffmpeg: str, url: str, *, authorization: str | None, gain_db: float) -> None:
        args = ["-f", "ogg", "-i", "pipe:0", "-af", f"volume={volume_arg(gain_db)}", *PCM_ARGS]
        super().__init__(ffmpeg, args, feed=True)
        self.url = url
        self._headers = {"Authorization": authorization} if authorization else {}
        self.epoch_ms: int | None = None
        self.first_sample: int | None = None  # the stream sample of the first PCM byte out
        self.error = ""
        self.clock_checked = False  # the relay has compared the timeline with its sink's
        self.off_clock = False  # ... and found it too far off to be right: played as joined
        self._taken = 0  # PCM bytes taken so far
        self._closing = False
        self._thread = threading.Thread(target=self._fetch, name="ogg-feed", daemon=True)
        self._thread.start()

    def instant_ms(self) -> float | None:
        """When the next PCM byte ``take`` gives is to be heard; None: no timeline (yet)."""
        if self.epoch_ms is None or self.first_sample is None:
            return None
        return sample_instant_ms(self.epoch_ms, self.first_sample + self._taken // FRAME_BYTES)

    def take(self, nbytes: int) -> bytes:
        out = super().take(nbytes)
        self._taken += len(out)
        return out

    def failure(self) -> str | None:
        return self.error or super().failure()

    def _fetch(self) -> None:
        try:
            if not self.url.startswith(("http://", "https://")):
                raise OggError("a site's mount is http(s)")
            request = Request(self.url, headers=self._headers)  # noqa: S310 - http(s), above
            with urlopen(request, timeout=STALL_TIMEOUT_S) as resp:  # noqa: S310
                reader = PageReader()
                last: Page | None = None
                while (data := resp.read1(READ_BYTES)) and not self._closing:
                    for page in reader.feed(data):
                        if page.bos and last is not None:
                            return  # a new stream: its headers on a fresh connection
                        if page.bos:
                            opus_pre_skip((page.packets() or [b""])[0])  # Opus, or OggError
                        elif last is not None and last.bos:  # OpusTags
                            self.epoch_ms = epoch_of((page.packets() or [b""])[0])
                        elif self.first_sample is None:
                            if last is None or page.sequence != last.sequence + 1:
                                last = page  # what came before it is unknown: skipped
                                continue
                            self.first_sample = last.granule
                        last = page
                        self.stdin.write(page.to_bytes())
                        self.stdin.flush()
        except HTTPError as exc:
            self.error = f"{self.url}: HTTP {exc.code} {exc.reason}"
        except (OSError, OggError) as exc:
            if not self._closing:
                self.error = f"{self.url}: {exc}"
        finally:
            with contextlib.suppress(OSError):
                self.stdin.close()

    def close(self) -> None:
        self._closing = True
        super().close()
