"""Run a real agent and write events as fast as it takes them, logging each id
once its write has returned; the test kills this process with SIGKILL."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edge.agent import Agent
from edge.config import load_config
from protocol.events import PlayMissed


def main(config: str, written: str) -> None:
    agent = Agent(load_config(Path(config)))
    agent.start()
    fd = os.open(written, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    n = 0
    while True:
        event = agent.emit(PlayMissed(key=f"n{n}", reason="test"))
        os.write(fd, f"{event.id}\n".encode())  # after emit returned: durable by contract
        n += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
