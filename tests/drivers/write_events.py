"""Run a real agent and write events as fast as it takes them, logging each id
once its write has returned; the test kills this process with SIGKILL.

Optional third and fourth arguments: seconds between events, and how many to
write before only keeping the agent running (so it still sends and resends).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from edge.agent import Agent
from edge.config import load_config
from protocol.events import PlayMissed


def main(config: str, written: str, every_s: float = 0.0, count: int | None = None) -> None:
    agent = Agent(load_config(Path(config)))
    agent.start()
    fd = os.open(written, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = 0
    while count is None or n < count:
        event = agent.emit(PlayMissed(key=f"n{n}", reason="test"))
        os.write(fd, f"{event.id}\n".encode())  # after emit returned: durable by contract
        n += 1
        if every_s:
            time.sleep(every_s)
    os.write(fd, b"done\n")
    agent.wait()


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        args[0],
        args[1],
        float(args[2]) if len(args) > 2 else 0.0,
        int(args[3]) if len(args) > 3 else None,
    )
