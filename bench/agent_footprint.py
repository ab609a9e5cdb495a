"""An idle, connected agent's resident memory and CPU, beside a bare paho client.

A Pi 3/4 runs the agent next to the audio player all day, so its idle cost is
what counts. The bare client (same broker, same keepalive, sampled at the same
times) is the floor any MQTT agent in Python pays; the ratio carries over to
other machines where the absolute figures do not.

    .venv/bin/python -m bench.agent_footprint --seconds 60
    .venv/bin/python -m bench.agent_footprint --seconds 30 --play

With ``--play`` the agent is measured after it has played: a signed
``device.test_tone`` (the command a technician sends), sampled once the
speaker has told its ``play.finished``, so its spare decoder is waiting
(for the shipped 120 s) and what playing loaded stays loaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from bench._fleet import ROOT, BenchSite, Controller
from protocol.envelope import seal

MIB = 1024 * 1024
TARGET_RSS_MB = 50.0  # the figure, read strictly as 50 000 000 bytes (47.7 MiB)
TARGET_CPU_PCT = 1.0
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
    rss: list[int] = field(default_factory=list)
    uss: list[int] = field(default_factory=list)
    pss: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    children_cpu_s: float = 0.0
    wall_s: float = 0.0

    def cpu_times(self) -> tuple[float, float]:
        t = self.proc.cpu_times()
        return t.user + t.system, t.children_user + t.children_system

    def sample_memory(self) -> None:
        info = self.proc.memory_full_info()
        self.rss.append(info.rss)
        self.uss.append(getattr(info, "uss", 0))
        self.pss.append(getattr(info, "pss", 0))

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


def play_tone(controller: Controller, bench: BenchSite, root: str) -> None:
    """A 1 s test tone, signed as the controller signs it; back once it has played."""
    to = f"{root}/dev/{DEVICE}/cmd"
    body = {"frequency_hz": 1000, "duration_s": 1.0}
    now = time.time_ns() // 1_000_000
    controller.publish(to, seal("device.test_tone", body, bench.site.signing_key(), now, to=to))

    def finished(msg: Any) -> bool:  # a paho message
        if not msg.topic.endswith("/event"):
            return False
        return bool(json.loads(msg.payload)["type"] == "play.finished")

    controller.wait_for(finished, timeout_s=60)
    print("the agent has played a 1 s test tone", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="sampling window (default 60)")
    parser.add_argument(
        "--spare-keep-s",
        type=float,
        default=None,
        help="[speaker] spare_decoder_keep_s for the agent (default: the shipped 120 s)",
    )
    parser.add_argument("--play", action="store_true", help="measure after a test tone has played")
    args = parser.parse_args()

    with BenchSite([DEVICE]) as bench:
        root = bench.site.root
        controller = bench.controller([f"{root}/dev/{DEVICE}/status", f"{root}/dev/{DEVICE}/event"])
        baseline = bench.spawn_paho(IDLE_BODY)
        if args.spare_keep_s is not None:
            set_speaker(
                bench.site.device_config_path(DEVICE), spare_decoder_keep_s=args.spare_keep_s
            )
        if args.play:  # no sound card here: the lowest layer is a WAV file, as in the tests
            set_speaker(bench.site.device_config_path(DEVICE), sink="wav")
        agent = bench.spawn_agent(DEVICE)
        bench.wait_online(controller, DEVICE)
        if args.play:
            play_tone(controller, bench, root)
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
