"""Fan-out: one live session to 1,000 listeners through Icecast, against a bare Icecast alone.

Xaso: WebM/Opus made with espeak-ng (Vietnamese speech, looped), what a
browser's MediaRecorder sends at the live page's 64 kb/s, is fed in real
time in 100 ms pieces to the controller's own LiveEncoder (one ffmpeg, the
Pacer, IcecastSource's PUT) on one mount of a real Icecast started as Xaso
starts it (cli/brokers/icecast.py), whose every listener is admitted by the
controller's listener-auth route (controller/radio/streams.py) against the
site's registry (site_authenticator), served by uvicorn in this process.
Each listener pulls with its own device's credentials. The registry is
written in one go, each device with its own password and ``$7$`` hash, as
``add_device`` leaves it: 1,000 ``add_device`` calls take 14 to 215 s here
(they rewrite the registry and the broker's files each time;
docs/benchmarks.md), and the auth reads the same file either way.

Bare: the same speech, encoded once with the same Opus settings, sent by a
plain ``ffmpeg -re -c copy`` to an Icecast with the same limits and no
listener authentication; the same listeners with no credentials.

The listeners (bench/_listeners.py) are raw HTTP GETs in a few worker
processes, all connecting at once as a fleet told together does; each reads
until ``--seconds`` after the last one got its answer. CPU (user + system,
psutil) is read for the connecting window (first connect to last answer:
Icecast's listener auth, one POST to the controller each) and the steady
window (``--seconds``, everyone listening): this process (the controller:
LiveEncoder's pump, the Pacer, the auth route, and the feed that stands for
the browser's WebSocket), its encoder ffmpeg, Icecast, the listeners.

``--devices`` makes the registry larger than the listeners (a province's
20,000 speakers, 1,000 of them told): the auth reads the whole registry.

    .venv/bin/python -m bench.stream_fanout --listeners 1000 --seconds 60
    .venv/bin/python -m bench.stream_fanout --listeners 1000 --devices 20000 --phases xaso
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
from fastapi import FastAPI

from bench._listeners import CONNECT_TIMEOUT_S, STALL_MS
from bench._swarm import ROOT, raise_nofile
from cli.brokers.icecast import Icecast
from controller.radio.clip_server import site_authenticator
from controller.radio.live_voice import LiveEncoder
from controller.radio.streams import (
    LISTENER_AUTH_PATH,
    StreamServer,
    listener_auth_router,
    opus_ogg_args,
)
from controller.site.broker_files import mosquitto_hash
from controller.site.directory import DeviceEntry, write_json
from controller.site.keys import init_site
from tests.http_helpers import serve

SPEECH = (
    "Thông báo của Ủy ban nhân dân xã. Chiều nay lúc hai giờ, họp dân tại nhà văn hóa thôn. "
    "Đề nghị bà con đến đúng giờ. Xin cảm ơn."
)
FFMPEG = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
MARGIN_S = 30  # audio made beyond the longest a phase can last


class CountedAuth:
    """The controller's authenticator, counting its calls and the CPU they took: it runs
    synchronously on the event loop's thread, so that thread's CPU is the call's."""

    def __init__(self, inner: Callable[[str, str], bool]) -> None:
        self.inner = inner
        self.calls = self.admitted = 0
        self.cpu_s = self.wall_s = 0.0

    def __call__(self, user: str, password: str) -> bool:
        t0, c0 = time.perf_counter(), time.thread_time()
        ok = self.inner(user, password)
        self.cpu_s += time.thread_time() - c0
        self.wall_s += time.perf_counter() - t0
        self.calls += 1
        self.admitted += ok
        return ok


class BareIcecast(Icecast):
    """Icecast as Xaso configures it, less the listener authentication: the baseline."""

    def config_text(self) -> str:
        text = super().config_text()
        start, end = text.index('<mount type="default">'), text.index("</mount>")
        return text[:start] + text[end + len("</mount>") :]


def provision(site_dir: Path, n: int) -> list[str]:
    """``n`` speakers, each its own password; their ``Authorization`` headers."""
    init_site(site_dir)
    entries, headers = [], []
    for i in range(n):
        device, password = f"loa-{i:04d}", secrets.token_urlsafe(24)
        hashed = mosquitto_hash(password)
        entries.append(
            DeviceEntry(
                id=device,
                roles=("speaker",),
                groups=("bench-all",),
                password_hash=hashed,
                created_ms=1,
            )
        )
        headers.append("Basic " + base64.b64encode(f"{device}:{password}".encode()).decode())
    write_json(site_dir / "devices.json", {"version": 1, "devices": [asdict(e) for e in entries]})
    return headers


def make_audio(work: Path, seconds: float) -> tuple[Path, Path]:
    """Speech as the browser sends it (WebM/Opus, 64 kb/s), and the same speech in Ogg with
    every mount's Opus settings, for the bare source. The WebM is at a constant bit rate,
    so that feeding it by bytes is feeding it in real time."""
    wav, webm, ogg = work / "speech.wav", work / "voice.webm", work / "voice.ogg"
    subprocess.run(["espeak-ng", "-v", "vi", "-w", str(wav), SPEECH], check=True, timeout=60)
    looped = ["-stream_loop", "-1", "-i", str(wav), "-t", f"{seconds:.0f}", "-ar", "48000"]
    subprocess.run(
        [
            *FFMPEG,
            *looped,
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            "-vbr",
            "off",
            "-f",
            "webm",
            str(webm),
        ],
        check=True,
        timeout=600,
    )
    subprocess.run(
        [*FFMPEG, "-i", str(webm), *opus_ogg_args(), "-f", "ogg", str(ogg)], check=True, timeout=600
    )
    return webm, ogg


@contextmanager
def talking(encoder: LiveEncoder, data: bytes, seconds: float) -> Iterator[None]:
    """The browser: ``data`` fed in ~100 ms pieces as the clock says they were recorded."""
    stop = threading.Event()

    def talk() -> None:
        t0, pos, per_s = time.monotonic(), 0, len(data) / seconds
        while pos < len(data) and not stop.wait(0.1):
            due = min(len(data), int((time.monotonic() - t0 + 0.1) * per_s))
            encoder.feed(data[pos:due])
            pos = due

    talker = threading.Thread(target=talk, name="browser", daemon=True)
    talker.start()
    try:
        yield
    finally:
        stop.set()
        talker.join(5)


class Listeners:
    """The worker processes, each a share of the listeners of one mount."""

    def __init__(self, work: Path, url: str, authorization: Sequence[str | None], workers: int):
        parts = urlsplit(url)
        self.procs: list[subprocess.Popen[str]] = []
        for i in range(workers):
            spec = work / f"listeners-{i}.json"
            mine = list(authorization[i::workers])
            where = {"host": parts.hostname, "port": parts.port, "path": parts.path}
            spec.write_text(json.dumps({**where, "authorization": mine}))
            argv = [sys.executable, "-m", "bench._listeners", str(spec)]
            self.procs.append(
                subprocess.Popen(
                    argv, cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
                )
            )

    def _read(self, proc: subprocess.Popen[str], timeout_s: float) -> Any:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else ""
        if not line:
            raise TimeoutError(f"listener worker {proc.pid}: no answer in {timeout_s} s")
        return json.loads(line)

    def wait_connected(self) -> int:
        return sum(self._read(p, CONNECT_TIMEOUT_S + 30)["connected"] for p in self.procs)

    def stop(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        for proc in self.procs:
            out += self._read(proc, 60)
            proc.wait(30)
        return out


@dataclass
class Phase:
    name: str
    windows: dict[str, tuple[float, dict[str, float]]]  # window: (seconds, CPU s by part)
    listeners: list[dict[str, Any]]
    auth: CountedAuth | None = None


@dataclass(frozen=True)
class Run:
    """What both phases share: the site's devices, the audio, the options."""

    site_dir: Path
    authorization: list[str]  # each device's own
    webm: Path
    ogg: Path
    length_s: float  # of the audio
    seconds: float
    workers: int


def cpu_s(parts: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """User + system CPU seconds of each part so far."""
    return {name: sum(sum(p.cpu_times()[:2]) for p in procs) for name, procs in parts.items()}


def listen(
    run: Run,
    work: Path,
    url: str,
    auth: Sequence[str | None],
    parts: dict[str, list[psutil.Process]],
) -> tuple[dict[str, tuple[float, dict[str, float]]], list[dict[str, Any]]]:
    """The listeners on ``url``: connecting, then ``run.seconds`` of everyone listening."""
    t0, c0 = time.monotonic(), cpu_s(parts)
    listeners = Listeners(work, url, auth, run.workers)
    parts = {**parts, "listeners": [psutil.Process(p.pid) for p in listeners.procs]}
    c0["listeners"] = 0.0
    connected = listeners.wait_connected()
    t1, c1 = time.monotonic(), cpu_s(parts)
    print(f"{work.name}: {connected} of {len(auth)} listening after {t1 - t0:.1f} s", flush=True)
    time.sleep(run.seconds)
    t2, c2 = time.monotonic(), cpu_s(parts)
    summaries = listeners.stop()
    windows = {
        "connecting": (t1 - t0, {k: c1[k] - c0[k] for k in c1}),
        "steady": (t2 - t1, {k: c2[k] - c1[k] for k in c2}),
    }
    return windows, summaries


def xaso(run: Run, work: Path) -> Phase:
    """The controller's live session and listener auth, Icecast as Xaso runs it."""
    counted = CountedAuth(site_authenticator(run.site_dir))
    app = FastAPI()
    app.include_router(listener_auth_router(counted))
    with serve(app) as base:
        icecast = Icecast(work / "icecast", base + LISTENER_AUTH_PATH)
        icecast.start()
        assert icecast.proc is not None
        streams = StreamServer(icecast.url, icecast.source_password)
        mount = streams.new_mount()
        encoder = LiveEncoder(streams, mount, work / "live.ogg")
        try:
            with talking(encoder, run.webm.read_bytes(), run.length_s):
                deadline = time.monotonic() + 30
                while not encoder.pacer.pages_out:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the live mount never went on air")
                    time.sleep(0.1)
                me = psutil.Process()
                parts = {
                    "controller": [me],
                    "encoder": [c for c in me.children() if c.name() == "ffmpeg"],
                    "icecast": [psutil.Process(icecast.proc.pid)],
                }
                url = streams.listener_url(mount)
                windows, summaries = listen(run, work, url, run.authorization, parts)
        finally:
            encoder.close()
            icecast.stop()
    return Phase("xaso live", windows, summaries, counted)


def bare(run: Run, work: Path) -> Phase:
    """The same speech by a plain ffmpeg source to an Icecast that admits anyone."""
    icecast = BareIcecast(work / "icecast", "http://127.0.0.1:9/unused")
    icecast.start()
    assert icecast.proc is not None
    streams = StreamServer(icecast.url, icecast.source_password)
    mount = streams.new_mount()
    argv = [*FFMPEG, "-re", "-i", str(run.ogg), "-c", "copy", "-page_duration", "100000"]
    argv += ["-flush_packets", "1", "-content_type", "audio/ogg", "-f", "ogg"]
    source = subprocess.Popen([*argv, streams.source_url(mount)], stdin=subprocess.DEVNULL)
    try:
        url = streams.listener_url(mount)
        deadline = time.monotonic() + 30
        while not _served(url):
            if time.monotonic() > deadline:
                raise TimeoutError("the bare mount never went on air")
            time.sleep(0.1)
        parts = {
            "source": [psutil.Process(source.pid)],
            "icecast": [psutil.Process(icecast.proc.pid)],
        }
        windows, summaries = listen(run, work, url, [None] * len(run.authorization), parts)
    finally:
        source.kill()
        source.wait(30)
        icecast.stop()
    return Phase("bare icecast", windows, summaries)


def _served(url: str) -> bool:
    with httpx.stream("GET", url, timeout=5) as resp:
        return resp.status_code == 200


def _spread(values: Sequence[float]) -> str:
    """p50/p99/max, or "-" for none."""
    if not values:
        return "-"
    p50, p99 = np.percentile(values, [50, 99])
    return f"{p50:.0f}/{p99:.0f}/{max(values):.0f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


CPU_PARTS = ("controller", "encoder", "source", "icecast", "listeners")


def report(phases: Sequence[Phase]) -> None:
    print("\nCPU, % of one core (user + system) over each window")
    rows: list[list[str]] = []
    for phase in phases:
        for window, (secs, used) in phase.windows.items():
            pct = [f"{100 * used[k] / secs:.1f}" if k in used else "-" for k in CPU_PARTS]
            rows.append([phase.name, window, f"{secs:.1f}", *pct])
    _table(["", "window", "s", *CPU_PARTS], rows)
    print("\nListeners (ms: p50/p99/max over the listeners; stalls: listeners with one)")
    lines: list[dict[str, str]] = []
    notes = []
    for phase in phases:
        ok = [s for s in phase.listeners if s["status"] == 200]  # admitted
        margins = [s["min_margin_ms"] for s in ok if s["min_margin_ms"] is not None]
        cells = {
            "": phase.name,
            "admitted": f"{len(ok)}/{len(phase.listeners)}",
            "cut": str(sum(bool(s["error"]) for s in ok)),
            "connect": _spread([s["connect_ms"] for s in ok]),
            "largest stall": _spread([s["largest_stall_ms"] for s in ok]),
            **{
                f">{limit:.0f} ms": str(sum(s["stalls"][i] > 0 for s in ok))
                for i, limit in enumerate(STALL_MS)
            },
            "least audio s": f"{min(s['audio_ms'] for s in ok) / 1000:.1f}" if ok else "-",
            "kB each": f"{np.median([s['bytes'] / 1000 for s in ok]):.0f}" if ok else "-",
            "epoch": str(sum(s["head"] and s["epoch_ms"] is not None for s in ok)),
            "late pages": str(sum(s["late"] for s in ok)),
            "least margin": f"{min(margins):.0f}" if margins else "-",
        }
        lines.append(cells)
        errors = Counter(s["error"] for s in phase.listeners if s["error"])
        if errors:
            notes.append(
                f"{phase.name}: {'; '.join(f'{n} x {e}' for e, n in errors.most_common(5))}"
            )
        a = phase.auth
        if a is not None and a.calls:
            ctrl = phase.windows["connecting"][1]["controller"]
            notes.append(
                f"{phase.name}: listener auth {a.calls} calls, {a.admitted} admitted; in the "
                f"authenticator {1000 * a.cpu_s / a.calls:.2f} ms CPU, "
                f"{1000 * a.wall_s / a.calls:.2f} ms wall a call; the controller's CPU while "
                f"connecting {1000 * ctrl / a.calls:.2f} ms a listener"
            )
    _table(list(lines[0]), [list(cells.values()) for cells in lines])
    for note in notes:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listeners", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--devices", type=int, default=0, help="speakers in the registry (default: --listeners)"
    )
    parser.add_argument("--workers", type=int, default=4, help="listener processes")
    parser.add_argument("--phases", nargs="+", choices=["xaso", "bare"], default=["xaso", "bare"])
    args = parser.parse_args()
    raise_nofile()  # Icecast inherits it: a socket per listener
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        devices = max(args.devices, args.listeners)
        every = provision(work / "site", devices)
        auth = [every[i * devices // args.listeners] for i in range(args.listeners)]  # spread
        took = time.monotonic() - t0
        print(f"site: {devices} speakers, each its own password, in {took:.1f} s", flush=True)
        length_s = args.seconds + CONNECT_TIMEOUT_S + MARGIN_S
        webm, ogg = make_audio(work, length_s)
        run = Run(work / "site", auth, webm, ogg, length_s, args.seconds, args.workers)
        phases = []
        for name in args.phases:
            (work / name).mkdir()
            phases.append((xaso if name == "xaso" else bare)(run, work / name))
        report(phases)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
