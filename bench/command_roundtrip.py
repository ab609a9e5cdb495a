"""A signed command to an agent until its ack arrives, beside the broker's raw round trip.

The raw path is a bare paho process that republishes topic A to topic B: the
floor any MQTT round trip pays on this broker. Both run QoS 1, one outstanding
at a time, interleaved (raw, agent, raw, ...) so drift hits both alike; the
agent/raw ratio is what carries over to a Pi. Envelopes are signed before the
clock starts; signing and the agent's own steps are timed apart.

On loopback, Nagle's algorithm against delayed ACKs adds ~40 ms stalls that hide
the software's own cost, so each path is measured with Nagle on and off.

    .venv/bin/python -m bench.command_roundtrip --count 1000
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import uuid
from collections.abc import Callable

from bench._fleet import BenchSite, Controller
from edge.store import LocalStore
from protocol.envelope import open_envelope, seal
from protocol.signing import Keyring, SigningKey

DEVICE = "bench-1"
WARMUP = 50
MICRO_CALLS = 1000
ECHO_BODY = """
src, dst = args
c.on_connect = lambda cl, *_: cl.subscribe(src, qos=1)
c.on_subscribe = lambda *_: print("ready", flush=True)
c.on_message = lambda cl, _u, m: cl.publish(dst, m.payload, qos=1)
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ping(key: SigningKey, cmd_id: str, to: str = f"xaso/dev/{DEVICE}/cmd") -> bytes:
    return seal("device.ping", {}, key, now_ms(), to=to, cmd_id=cmd_id)


def pct(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in ms."""
    return sorted_ns[max(0, math.ceil(q * len(sorted_ns)) - 1)] / 1e6


class Paths:
    """The two round trips, each returning nanoseconds from publish to reply."""

    def __init__(self, ctl: Controller, key: SigningKey, root: str) -> None:
        self.ctl, self.key, self.run = ctl, key, uuid.uuid4().hex[:8]
        self.cmd, self.ack = f"{root}/dev/{DEVICE}/cmd", f"{root}/dev/{DEVICE}/ack"
        self.echo_a, self.echo_b = f"{root}/bench/echo/a", f"{root}/bench/echo/b"

    def raw(self, i: int) -> int:
        payload = ping(self.key, f"raw-{self.run}-{i}")  # same size as the agent's command
        t0 = time.perf_counter_ns()
        self.ctl.publish(self.echo_a, payload)
        self.ctl.wait_for(lambda m: m.topic == self.echo_b and m.payload == payload)
        return time.perf_counter_ns() - t0

    def agent(self, i: int) -> int:
        cmd_id = f"bench-{self.run}-{i}"  # fresh every time: the agent refuses replays
        payload = ping(self.key, cmd_id, self.cmd)
        t0 = time.perf_counter_ns()
        self.ctl.publish(self.cmd, payload)
        msg = self.ctl.wait_for(
            lambda m: m.topic == self.ack and json.loads(m.payload).get("cmd") == cmd_id
        )
        elapsed = time.perf_counter_ns() - t0
        ack = json.loads(msg.payload)
        if not ack["ok"]:
            raise RuntimeError(f"the agent refused {cmd_id}: {ack}")
        return elapsed


def per_call_us(fn: Callable[[int], object], n: int = MICRO_CALLS) -> tuple[float, float]:
    """p50 and mean microseconds per call of ``fn(i)``."""
    times = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1e3, statistics.fmean(times) / 1e3


def micro(bench: BenchSite, key: SigningKey) -> None:
    """Where the agent's extra time goes, step by step, in this process."""
    keyring = Keyring.from_mapping(bench.site.trusted_keys())
    sealed = [ping(key, f"micro-{i}") for i in range(MICRO_CALLS)]
    store = LocalStore(bench.dir / "micro" / "store.sqlite3")  # same disk as the agent's
    exp = now_ms() + 60_000
    public = keyring.get(key.kid)
    assert public is not None
    message = sealed[0]
    signature = key.sign(message)
    rows = {
        "seal() (controller signs)": lambda i: ping(key, f"seal-{i}"),
        "  of which Ed25519 sign": lambda i: key.sign(message),
        "open_envelope() (agent verifies)": lambda i: open_envelope(sealed[i], keyring, now_ms()),
        "  of which Ed25519 verify": lambda i: public.verify(signature, message),
        "remember_command() (replay guard)": lambda i: store.remember_command(f"m-{i}", exp),
    }
    print(f"\nwhere the time goes: in-process, {MICRO_CALLS} calls each")
    print(f"{'step':<36}{'p50 us':>9}{'mean us':>10}")
    for label, fn in rows.items():
        p50, mean = per_call_us(fn)
        print(f"{label:<36}{p50:>9.1f}{mean:>10.1f}")
    store.close()


def measure(count: int) -> dict[str, list[int]]:
    """Round trips per path (ns) on a fresh site, broker and agent (TCP_NODELAY everywhere,
    as shipped: without it each hop waits ~40 ms for Nagle and the peer's delayed ACK)."""
    with BenchSite([DEVICE]) as bench:
        root = bench.site.root
        ctl = bench.controller(
            [f"{root}/dev/{DEVICE}/status", f"{root}/dev/{DEVICE}/ack", f"{root}/bench/echo/b"]
        )
        bench.spawn_paho(ECHO_BODY, f"{root}/bench/echo/a", f"{root}/bench/echo/b")
        bench.spawn_agent(DEVICE)
        bench.wait_online(ctl, DEVICE)
        paths = Paths(ctl, bench.site.signing_key(), root)
        results: dict[str, list[int]] = {"raw": [], "agent": []}
        for i in range(WARMUP + count):
            raw, agent = paths.raw(i), paths.agent(i)
            if i >= WARMUP:
                results["raw"].append(raw)
                results["agent"].append(agent)
    return results


def report(results: dict[str, list[int]]) -> None:
    print(f"{'path':<30}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'mean ms':>9}")
    labels = {"raw": "raw broker (paho echo)", "agent": "agent device.ping -> ack"}
    stats = {}
    for name, unsorted in results.items():
        ns = sorted(unsorted)
        stats[name] = (pct(ns, 0.50), pct(ns, 0.99), ns[-1] / 1e6, statistics.fmean(ns) / 1e6)
        print(f"{labels[name]:<30}" + "".join(f"{v:>8.3f}" for v in stats[name][:3]), end="")
        print(f"{stats[name][3]:>9.3f}")
    a, r = stats["agent"], stats["raw"]
    print(f"agent/raw: p50 x{a[0] / r[0]:.1f}, p99 x{a[1] / r[1]:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="timed round trips per path")
    args = parser.parse_args()

    with BenchSite([DEVICE]) as bench:
        micro(bench, bench.site.signing_key())
    print(
        f"\nround trip: {args.count} sequential QoS 1 round trips per path, interleaved, "
        f"after {WARMUP} untimed each"
    )
    report(measure(args.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
