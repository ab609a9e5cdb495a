"""An idle, connected agent's resident memory and CPU, beside a bare paho client.

A Pi 3/4 runs the agent next to the audio player all day, so its idle cost is
what counts. The bare client (same broker, same keepalive, sampled at the same
times) is the floor any MQTT agent in Python pays; the ratio carries over to
other machines where the absolute figures do not.

    .venv/bin/python -m bench.agent_footprint --seconds 60
    .venv/bin/python -m bench.agent_footprint --seconds 30 --play

With ``--play`` the agent is measured while it plays and after: a clip
prepared as the controller prepares it (MP3, the shipped codec) is served over
HTTP and sent as a signed ``broadcast.play`` lasting the window and more; the
agent and its decoder are sampled together while it plays, and again once it
has told ``play.finished``, when what playing loaded stays loaded and a spare
decoder, if it keeps one, is waiting (for the shipped 120 s). Then the same
again with ``native_decoders = false`` (ffmpeg for every clip, with its spare:
the speaker before mpg123 and opusdec), in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from bench._fleet import ROOT, BenchSite, Controller
from broadcast.audio.clip_preparation import prepare
from broadcast.audio.clips import ClipSettings, PreparedClip
from protocol.envelope import seal

MIB = 1024 * 1024
TARGET_RSS_MB = 50.0  # the figure, read strictly as 50 000 000 bytes (47.7 MiB)
TARGET_CPU_PCT = 1.0
TARGET_PLAYED_BYTES = 60e6  # the "60 MB RSS with the decoder ready", agent + decoder
SETTLE_S = 3.0
DEVICE = "bench-1"
IDLE_BODY = 'c.on_connect = lambda *a: print("ready", flush=True)'
# What each piece costs on its own: a fresh interpreter's RSS after one import line.
IMPORTS = {
    "bare python": "pass",
    "ssl (paho imports it)": "import ssl",
    "paho-mqtt client": "import paho.mqtt.client",
    "pydantic (BaseModel, the edge's before issue 16)": "from pydantic import BaseModel",
    "msgspec (the contract and configs)": "import msgspec",
    "cryptography (Ed25519, before 2026-12-02)": (
        "from cryptography.hazmat.primitives.asymmetric import ed25519"
    ),
    "PyNaCl (Ed25519)": "from nacl.signing import VerifyKey",
    "psutil": "import psutil",
    "gpiozero (only with a relay pin)": "import gpiozero",
    "edge.agent (the agent itself)": "import edge.agent",
    "edge.main (agent entry, no CLI)": "import edge.main",
    "fastapi + uvicorn": "import fastapi, uvicorn",
    "xaso agent parser (`-m cli.main agent`)": "import cli.main; cli.main.build_parser(['agent'])",
    "xaso parser, every program (`--help`)": "import cli.main; cli.main.build_parser()",
}
_RSS_AFTER = (
    "\nimport os, sys; pages = int(open('/proc/self/statm').read().split()[1])"
    "\nprint(pages * os.sysconf('SC_PAGE_SIZE'), len(sys.modules))"
)


@dataclass
class Series:
    """One process sampled once a second: memory samples and CPU seconds over the window."""

    name: str
    proc: psutil.Process
    children: bool = False  # the sum of the process's children (its decoders), not itself
    rss: list[int] = field(default_factory=list)
    uss: list[int] = field(default_factory=list)
    pss: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    children_cpu_s: float = 0.0
    wall_s: float = 0.0

    def cpu_times(self) -> tuple[float, float]:
        if self.children:
            return 0.0, 0.0  # counted in the parent's children CPU
        t = self.proc.cpu_times()
        return t.user + t.system, t.children_user + t.children_system

    def sample_memory(self) -> None:
        procs = self.proc.children(recursive=True) if self.children else [self.proc]
        infos = []
        for proc in procs:
            try:
                infos.append(proc.memory_full_info())
            except psutil.NoSuchProcess:  # a decoder that ended between the two calls
                continue
        self.rss.append(sum(i.rss for i in infos))
        self.uss.append(sum(getattr(i, "uss", 0) for i in infos))
        self.pss.append(sum(getattr(i, "pss", 0) for i in infos))

    @property
    def cpu_pct(self) -> float:
        """Percent of one core: own user+system CPU seconds per wall second."""
        return self.cpu_s / self.wall_s * 100


def sample(series: list[Series], seconds: int) -> None:
    """Every second, all processes at the same moment; CPU as a delta over the whole window."""
    start = [s.cpu_times() for s in series]
    t0 = time.perf_counter()
    for tick in range(seconds + 1):
        for s in series:
            s.sample_memory()
        if tick < seconds:
            time.sleep(max(0.0, t0 + tick + 1 - time.perf_counter()))
    wall = time.perf_counter() - t0
    for s, (cpu0, child0) in zip(series, start, strict=True):
        cpu1, child1 = s.cpu_times()
        s.cpu_s, s.children_cpu_s, s.wall_s = cpu1 - cpu0, child1 - child0, wall


def mib(values: list[int], how: str) -> float:
    if not values or not any(values):
        return float("nan")
    return (max(values) if how == "max" else statistics.fmean(values)) / MIB


def import_costs() -> list[tuple[str, float, int]]:
    """RSS (MiB) and module count of a fresh interpreter after each import line."""
    rows = []
    for label, stmt in IMPORTS.items():
        out = subprocess.run(
            [sys.executable, "-c", stmt + _RSS_AFTER],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        rows.append((label, int(out[0]) / MIB, int(out[1])))
    return rows


def children_memory(proc: psutil.Process) -> str:
    """The agent's child processes: the speaker keeps one ffmpeg started so that an
    emergency need not wait for a process start. Counted apart, not hidden."""
    kids = proc.children(recursive=True)
    if not kids:
        return ""
    infos = [k.memory_full_info() for k in kids]
    names = ", ".join(sorted({k.name() for k in kids}))
    return (
        f"the agent's child processes ({len(kids)}: {names}, the spare decoder):"
        f" RSS {sum(i.rss for i in infos) / MIB:.1f} MiB, USS {sum(i.uss for i in infos) / MIB:.1f}"
        f" MiB, PSS {sum(i.pss for i in infos) / MIB:.1f} MiB"
    )


def report(agent: Series, base: Series, seconds: int) -> None:
    n = len(agent.rss)
    print(f"\nidle footprint over {agent.wall_s:.1f} s, sampled every 1 s ({n} samples)")
    head = f"{'process':<16}{'RSS max':>9}{'RSS mean':>10}{'USS mean':>10}{'PSS mean':>10}"
    print(head + f"{'CPU s':>8}{'CPU %core':>11}{'children CPU s':>16}")
    for s in (agent, base):
        print(
            f"{s.name:<16}{mib(s.rss, 'max'):>9.1f}{mib(s.rss, 'mean'):>10.1f}"
            f"{mib(s.uss, 'mean'):>10.1f}{mib(s.pss, 'mean'):>10.1f}"
            f"{s.cpu_s:>8.3f}{s.cpu_pct:>11.3f}{s.children_cpu_s:>16.3f}"
        )
    rss_ratio = mib(agent.rss, "max") / mib(base.rss, "max")
    uss_ratio = mib(agent.uss, "mean") / mib(base.uss, "mean")
    cpu_ratio = f"x{agent.cpu_pct / base.cpu_pct:.1f}" if base.cpu_s > 0 else "n/a (baseline 0)"
    print(f"agent/baseline: RSS max x{rss_ratio:.2f}, USS x{uss_ratio:.2f}, CPU {cpu_ratio}")
    print("(memory in MiB; CPU %core = own user+system CPU s / wall s * 100, resolution 0.01 s)")

    rss = mib(agent.rss, "max")
    print(f"\ntargets for the agent ({seconds} s idle, default 30 s telemetry):")
    rss_mb = rss * MIB / 1e6
    ok = verdict(rss_mb <= TARGET_RSS_MB)
    print(f"  RSS max <= {TARGET_RSS_MB:.0f} MB:    {rss_mb:6.2f}  {ok}  ({rss:.2f} MiB)")
    cpu = agent.cpu_pct
    print(f"  CPU <= {TARGET_CPU_PCT:.0f}% of a core: {cpu:6.3f}  {verdict(cpu <= TARGET_CPU_PCT)}")


def set_speaker(config: Path, **settings: object) -> None:
    """The device's configuration with these ``[speaker]`` settings."""
    doc = tomllib.loads(config.read_text(encoding="utf-8"))
    doc.setdefault("speaker", {}).update(settings)
    config.write_text(tomli_w.dumps(doc), encoding="utf-8")


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def serve_clip(path: Path) -> tuple[dict[str, Any], ThreadingHTTPServer]:
    """The clip over HTTP, as the controller serves it (the agent checks its hash)."""
    body = path.read_bytes()
    sha = hashlib.sha256(body).hexdigest()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/api/clips/{sha}"
    clip = {"sha256": sha, "url": url, "bytes": len(body), "duration_ms": 0}
    return clip, server


def prepared_clip(directory: Path, seconds: float) -> PreparedClip:
    """A tone with noise, prepared as every clip is (loudness, MP3 at 64 kb/s)."""
    src = directory / "src.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency=440:sample_rate=48000:duration={seconds}", "-f", "lavfi", "-i",
         f"anoisesrc=a=0.05:d={seconds}:r=48000", "-filter_complex", "amix=inputs=2",
         "-ac", "1", str(src)],
        check=True, timeout=120,
    )  # fmt: skip
    return prepare(src, directory, ClipSettings())


def play(controller: Controller, bench: BenchSite, root: str, clip: dict[str, Any]) -> None:
    """A signed play-now of ``clip``; back once it has started."""
    to = f"{root}/dev/{DEVICE}/cmd"
    now = time.time_ns() // 1_000_000
    cmd = seal(
        "broadcast.play", {"clip": clip, "priority": 5}, bench.site.signing_key(), now, to=to
    )
    controller.publish(to, cmd)
    wait_event(controller, "play.started")


def wait_event(controller: Controller, kind: str, timeout_s: float = 120) -> None:
    def seen(msg: Any) -> bool:  # a paho message
        return bool(msg.topic.endswith("/event") and json.loads(msg.payload)["type"] == kind)

    controller.wait_for(seen, timeout_s=timeout_s)


def play_report(agent: Series, decoders: Series, after: tuple[int, int], label: str) -> None:
    """While playing: the agent, its decoders and the two together, tick by tick."""
    together = [a + d for a, d in zip(agent.rss, decoders.rss, strict=True)]
    print(f"\n{label}: while playing, over {agent.wall_s:.1f} s ({len(together)} samples)")
    print(f"{'process':<22}{'RSS max':>9}{'USS mean':>10}{'PSS mean':>10}")
    for s in (agent, decoders):
        print(f"{s.name:<22}{mib(s.rss, 'max'):>9.1f}{mib(s.uss, 'mean'):>10.1f}"
              f"{mib(s.pss, 'mean'):>10.1f}")  # fmt: skip
    print(f"{'agent + decoders':<22}{max(together) / MIB:>9.1f}")
    names = ", ".join(sorted({k.name() for k in agent.proc.children(recursive=True)})) or "none"
    ok = verdict(max(together) <= TARGET_PLAYED_BYTES)
    print(f"  agent + decoder RSS <= {TARGET_PLAYED_BYTES / 1e6:.0f} MB while playing: "
          f"{max(together) / 1e6:6.2f} MB  {ok}")  # fmt: skip
    a_rss, d_rss = after
    ok = verdict(a_rss + d_rss <= TARGET_PLAYED_BYTES)
    print(f"  after play.finished: agent {a_rss / MIB:.1f} MiB + children {d_rss / MIB:.1f} MiB "
          f"({names}) = {(a_rss + d_rss) / 1e6:.2f} MB  {ok}")  # fmt: skip


def played_phase(
    bench: BenchSite, controller: Controller, clip: dict[str, Any], seconds: int, native: bool
) -> None:
    """One agent: a play-now lasting the window, sampled while it plays and after."""
    set_speaker(bench.site.device_config_path(DEVICE), sink="wav", native_decoders=native)
    agent = bench.spawn_agent(DEVICE)
    bench.wait_online(controller, DEVICE)
    play(controller, bench, bench.site.root, clip)
    time.sleep(SETTLE_S)
    a = Series("agent", psutil.Process(agent.pid))
    d = Series("its decoders", psutil.Process(agent.pid), children=True)
    sample([a, d], seconds)
    wait_event(controller, "play.finished", timeout_s=clip["duration_ms"] / 1000 + 60)
    time.sleep(SETTLE_S)
    after_a, after_d = Series("agent", a.proc), Series("children", a.proc, children=True)
    after_a.sample_memory()
    after_d.sample_memory()
    label = "mpg123 and opusdec (as shipped)" if native else "ffmpeg for every clip (before)"
    play_report(a, d, (after_a.rss[0], after_d.rss[0]), label)
    agent.terminate()
    agent.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="sampling window (default 60)")
    parser.add_argument(
        "--spare-keep-s",
        type=float,
        default=None,
        help="[speaker] spare_decoder_keep_s for the agent (default: the shipped 120 s)",
    )
    parser.add_argument(
        "--play", action="store_true", help="measure while a clip plays and after, both decoders"
    )
    args = parser.parse_args()

    with BenchSite([DEVICE]) as bench:
        root = bench.site.root
        controller = bench.controller([f"{root}/dev/{DEVICE}/status", f"{root}/dev/{DEVICE}/event"])
        if args.spare_keep_s is not None:
            set_speaker(
                bench.site.device_config_path(DEVICE), spare_decoder_keep_s=args.spare_keep_s
            )
        if args.play:  # no sound card here: the lowest layer is a WAV file, as in the tests
            prepared = prepared_clip(bench.dir, args.seconds + SETTLE_S + 15)
            clip, server = serve_clip(prepared.path)
            clip["duration_ms"] = prepared.duration_ms
            print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
            try:
                for native in (True, False):
                    played_phase(bench, controller, clip, args.seconds, native)
            finally:
                server.shutdown()
            print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
            return 0
        baseline = bench.spawn_paho(IDLE_BODY)
        agent = bench.spawn_agent(DEVICE)
        bench.wait_online(controller, DEVICE)
        time.sleep(SETTLE_S)
        a = Series("agent", psutil.Process(agent.pid))
        b = Series("paho baseline", psutil.Process(baseline.pid))
        print(f"sampling agent pid {agent.pid} and baseline pid {baseline.pid} ...", flush=True)
        sample([a, b], args.seconds)
        alive = agent.poll() is None
        kids = children_memory(a.proc)
    report(a, b, args.seconds)
    print(kids or "the agent's child processes: none at the end (no spare decoder waiting)")
    if not alive:
        print("WARNING: the agent exited during the measurement")

    print("\nwhere the memory goes: a fresh interpreter's RSS after one import line")
    rows = import_costs()
    bare = rows[0][1]
    print(f"{'import':<44}{'RSS MiB':>9}{'over bare':>11}{'modules':>9}")
    for label, rss, modules in rows:
        print(f"{label:<44}{rss:>9.1f}{rss - bare:>+11.1f}{modules:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
