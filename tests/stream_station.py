"""A radio station on loopback for the relay's tests: an endless MP3 stream in real time.

Like an Icecast mount: each listener gets a short burst, then the stream at
its own pace, with no length. A test takes the station off air (every
connection is cut and new ones get 404, as while the studio reconnects),
brings it back, makes it silent (dead air: connected, but nothing on it),
plays pink noise (``noise``: two speakers' recordings of it line up at one lag
only), or shuts it down (nothing listens on the port). Audio is CBR MP3 made by ffmpeg,
64 kb/s at 48 kHz, whose frames are 192 bytes each, so the tone and the
silence can be swapped between frames mid-stream.
"""

from __future__ import annotations

import http.server
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

FRAME_BYTES = 192  # 1152 samples at 48 kHz, 64 kb/s, no padding
BYTES_PER_S = 8000
SLICE = FRAME_BYTES * 4  # 96 ms
BURST_S = 2.0


def mp3(path: Path, source: str) -> bytes:
    """Ten seconds of ``source`` (an ffmpeg lavfi graph) as bare CBR MP3 frames."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"{source}:d=10",
         "-ac", "1", "-ar", "48000", "-c:a", "libmp3lame", "-b:a", "64k",
         "-write_xing", "0", "-id3v2_version", "0", str(path)],
        check=True, stdin=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    data = path.read_bytes()
    return data[: len(data) - len(data) % SLICE]  # loops without splitting a frame


class Station:
    def __init__(self, tmp: Path, *, noise: bool = False) -> None:
        # -12 dBFS RMS, as the player's tone clips
        self._audio = {
            "tone": mp3(tmp / "tone.mp3", "aevalsrc=0.355*sin(2*PI*440*t):s=48000"),
            "silent": mp3(tmp / "silent.mp3", "anullsrc=r=48000:cl=mono"),
        }
        if noise:  # no period: two recordings of it line up at one lag only
            self._audio["noise"] = mp3(tmp / "noise.mp3", "anoisesrc=c=pink:r=48000:a=0.3")
        self.mode = "tone"  # tone | silent | off
        self.requests = 0
        self.refused = 0
        self.listening = 0  # connections being served now
        self.most_listening = 0  # the most at once since ``reset_most``
        self.with_credentials = 0  # requests that carried an Authorization header
        self._cond = threading.Condition()
        station = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                station._serve(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/vov1.mp3"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def set(self, mode: str) -> None:
        with self._cond:
            self.mode = mode
            self._cond.notify_all()

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        with self._cond:
            self.requests += 1
            if handler.headers.get("Authorization"):
                self.with_credentials += 1
            if self.mode == "off":
                self.refused += 1
                handler.send_error(404, "no source on this mount")
                return
        with self._cond:
            self.listening += 1
            self.most_listening = max(self.most_listening, self.listening)
        try:
            self._stream(handler)
        finally:
            with self._cond:
                self.listening -= 1

    def reset_most(self) -> None:
        with self._cond:
            self.most_listening = self.listening

    def _stream(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "audio/mpeg")
        handler.end_headers()
        t0, sent, pos = time.monotonic(), 0, 0
        while True:
            with self._cond:
                mode = self.mode
            if mode == "off":
                return  # the connection is cut
            due = BURST_S * BYTES_PER_S + (time.monotonic() - t0) * BYTES_PER_S
            if sent >= due:
                time.sleep(SLICE / BYTES_PER_S / 2)
                continue
            data = self._audio[mode]
            pos %= len(data)
            piece = data[pos : pos + SLICE]
            pos += SLICE
            try:
                handler.wfile.write(piece)
            except OSError:
                return  # the listener went
            sent += len(piece)

    def close(self) -> None:
        self.set("off")
        self._server.shutdown()
        self._server.server_close()
