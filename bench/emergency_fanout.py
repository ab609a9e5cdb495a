"""Emergency fan-out: from the API call until 1,000 agents' acks reach the controller.

A site with N speakers in one group (each provisioned with
`add_device`: real passwords in Mosquitto's file, the real ACL),
a private Mosquitto, the controller's app (`create_app`, uvicorn in a thread,
its station's Bus subscribed as in production) and N simulated agents in a
few worker processes (bench/_swarm.py: one MQTT connection per device, the
agent's Dispatcher and store). Each round is one
`POST /api/broadcasts/emergency` to the group with an API token, timed from
just before the request until each device's ack is handed to the
controller's Bus by paho (its callback wrapped, before the Bus's queue), then
is recorded in the broadcast's table (the commit of the ingest batch whose
`Broadcasting.record_acks_in`, wrapped, stored it).

The baseline, in the same run and interleaved with it: a bare paho client
publishes (QoS 1) a payload of the same size on the same group topic to the
same N connections, each answers a small raw echo on its ack topic at once,
and the echo is timed at the same moment (handed to the Bus). The ratio is
what the API, the signature, the agent's checks and the ack cost over the
broker's fan-out.

The site, its taps and one round of each path are bench/_fanout_site.py;
this module runs the rounds and reports them.

    .venv/bin/python -m bench.emergency_fanout [--devices 1000] [--rounds 20] [--workers 4]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._fanout_site import GROUP, Bench, Round
from bench._swarm import raise_nofile

WARMUP = 2  # untimed rounds of each path: the first ones pay for cold caches


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile of unsorted values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="xaso-bench-fanout-") as tmp:
        bench: Bench | None = None
        try:
            bench = Bench(args.devices, args.workers, Path(tmp))
            print(f"site: {args.devices} speakers in group {GROUP!r}, provisioned one by one "
                  f"(add_device) in {bench.provision_s:.1f} s")  # fmt: skip
            print(f"simulated agents: {args.devices} MQTT connections in {args.workers} worker "
                  f"processes, all subscribed in {bench.swarm_s:.1f} s")  # fmt: skip
            raw: list[Round] = []
            emg: list[Round] = []
            size = 0
            for i in range(WARMUP + args.rounds):
                # The first emergency gives the envelope's size; raw goes second each round.
                e, size = bench.emergency()
                time.sleep(args.gap)
                r = bench.raw_round(size)
                time.sleep(args.gap)
                if i >= WARMUP:
                    emg.append(e)
                    raw.append(r)
            report(args, raw, emg, size)
        finally:
            stats = bench.close() if bench is not None else {}
        if stats:
            where(stats, args)


def _row(label: str, rounds: list[Round], key: Callable[[Round], dict[str, float]]) -> list[float]:
    pooled = [v for r in rounds for v in key(r).values()]
    lasts = [max(key(r).values()) for r in rounds]
    p50, p99, top = pct(pooled, 0.50), pct(pooled, 0.99), max(pooled)
    print(f"{label:<44}{p50:>9.1f}{p99:>9.1f}{top:>9.1f}"
          f"{statistics.median(lasts):>10.1f}{max(lasts):>9.1f}")  # fmt: skip
    return [p50, p99]


def report(args: argparse.Namespace, raw: list[Round], emg: list[Round], size: int) -> None:
    n = args.devices
    print(f"payload: signed emergency envelope {size} bytes; raw payload {size} bytes")
    print(f"\nper round, ms from just before the call, over the {n} devices: "
          "p50/p99/max at the Bus; p50/max once recorded")  # fmt: skip
    print(f"{'round':>5}  {'raw publish -> echo':>24}  {'emergency API -> ack':>24}"
          f"  {'-> recorded':>16}")  # fmt: skip
    for i, (r, e) in enumerate(zip(raw, emg, strict=True), 1):
        rv, ev, rec = (list(d.values()) for d in (r.bus_ms, e.bus_ms, e.recorded_ms))
        print(f"{i:>5}  {pct(rv, .5):>8.1f}{pct(rv, .99):>8.1f}{max(rv):>8.1f}  "
              f"{pct(ev, .5):>8.1f}{pct(ev, .99):>8.1f}{max(ev):>8.1f}  "
              f"{pct(rec, .5):>8.1f}{max(rec):>8.1f}")  # fmt: skip
    print(f"\nall {args.rounds} rounds pooled ({args.rounds * n} answers per path), "
          f"after {WARMUP} untimed rounds each, ms")  # fmt: skip
    print(f"{'path':<44}{'p50':>9}{'p99':>9}{'max':>9}{'last:med':>10}{'worst':>9}")
    r50, r99 = _row("raw QoS 1 publish -> echo at the Bus", raw, lambda r: r.bus_ms)
    e50, e99 = _row("emergency API -> ack at the Bus", emg, lambda r: r.bus_ms)
    d50, d99 = _row("emergency API -> ack recorded in the DB", emg, lambda r: r.recorded_ms)
    calls = [r.call_ms for r in emg]
    print(f"POST /api/broadcasts/emergency returned: p50 {statistics.median(calls):.1f} ms, "
          f"max {max(calls):.1f} ms; raw publish PUBACK: p50 "
          f"{statistics.median(r.call_ms for r in raw):.1f} ms")  # fmt: skip
    print(f"emergency/raw, both at the Bus:     p50 x{e50 / r50:.1f}, p99 x{e99 / r99:.1f}")
    print(f"emergency recorded / raw at the Bus: p50 x{d50 / r50:.1f}, p99 x{d99 / r99:.1f}")
    share(emg, raw)
    waited = [e.recorded_ms[d] - e.bus_ms[d] for e in emg for d in e.bus_ms]
    batches = [b for e in emg for b in e.batches]
    per_round = statistics.fmean(len(e.batches) for e in emg)
    print(f"\nwhere the time goes: mean per message (and x{n}: the serial work of one round)")
    label = "controller: ack from the Bus to its batch's commit"
    print(f"  {label:<52}{statistics.fmean(waited):>9.1f} ms (a wait)")
    mean_ms = statistics.fmean(ns for _acks, ns in batches) / 1e6
    label = f"controller: record_acks_in per batch, {per_round:.1f} a round"
    print(f"  {label:<52}{mean_ms:>9.1f} ms {mean_ms * per_round:>9.1f} ms")
    print(f"  {'':<52}{statistics.fmean(a for a, _ns in batches):>9.1f} acks a batch on average")


def share(emg: list[Round], raw: list[Round]) -> None:
    """The controller's own part, apart from the broker's and the agents': what the 2x goal
    is about, measurable on a 2-core machine that also runs the 1,000 agents."""
    api = [e.publish_ms for e in emg]
    last = [max(e.after_publish(e.bus_ms)) for e in emg]
    mid = [statistics.median(e.after_publish(e.bus_ms)) for e in emg]
    raw_last = [max(r.bus_ms.values()) for r in raw]
    raw_mid = [statistics.median(r.bus_ms.values()) for r in raw]
    rec = [max(e.recorded_ms.values()) - max(e.bus_ms.values()) for e in emg]
    print("\nthe controller's share, ms (median round / worst round)")
    print(f"  controller: API call -> command handed to publish    "
          f"{statistics.median(api):8.1f} {max(api):8.1f}")  # fmt: skip
    print(f"  publish -> median ack at the Bus (raw: echo)         "
          f"{statistics.median(mid):8.1f} {max(mid):8.1f}   raw "
          f"{statistics.median(raw_mid):.1f} {max(raw_mid):.1f}")  # fmt: skip
    print(f"  publish -> last ack at the Bus (raw: echo)           "
          f"{statistics.median(last):8.1f} {max(last):8.1f}   raw "
          f"{statistics.median(raw_last):.1f} {max(raw_last):.1f}")  # fmt: skip
    print(f"  controller: last ack at the Bus -> recorded          "
          f"{statistics.median(rec):8.1f} {max(rec):8.1f}")  # fmt: skip
    whole = [a + b for a, b in zip(api, last, strict=True)]
    print(
        f"  API call -> last ack, over raw publish -> last echo: "
        f"x{statistics.median(whole) / statistics.median(raw_last):.2f} (median rounds)"
    )


def where(stats: dict[str, Any], args: argparse.Namespace) -> None:
    """Mean cost per message of each step, and that cost times N: the serial work of a round."""
    count, ns = stats["count"], stats["ns"]
    rows = {
        "agent: Dispatcher.handle (verify, replay, handler)": "ack.handle",
        "agent: ack publish (paho, QoS 1)": "ack.publish",
        "echo: build the reply": "echo.handle",
        "echo: publish (paho, QoS 1)": "echo.publish",
    }
    for label, key in rows.items():
        if count.get(key):
            mean_us = ns[key] / count[key] / 1e3
            print(f"  {label:<52}{mean_us:>9.1f} us {mean_us * args.devices / 1e3:>9.1f} ms")
    if count.get("ack.handle"):
        # the agents' checks run 1,000 at a time here, on these cores; on a fleet, one per Pi
        per_core = ns["ack.handle"] / count["ack.handle"] * args.devices / (os.cpu_count() or 1)
        print(f"  {'agents: their checks of one round, per core here':<52}"
              f"{'':>12} {per_core / 1e6:>9.1f} ms")  # fmt: skip
    refused = {k: v for k, v in count.items() if k.startswith("refused") and k.endswith("handle")}
    if refused or stats["lost"]:
        print(f"  refusals: {refused}; connections lost: {stats['lost']}")
    print(f"  (workers: {args.workers} processes on {os.cpu_count()} cores; "
          f"load average now {' '.join(f'{v:.2f}' for v in os.getloadavg())})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds of each path")
    parser.add_argument("--workers", type=int, default=4, help="processes holding the agents")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds of quiet between rounds")
    args = parser.parse_args()
    print(f"RLIMIT_NOFILE raised to {raise_nofile()} (this process, the broker, the workers)")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
