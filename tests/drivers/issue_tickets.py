"""Issue tickets as fast as the store takes them, logging each number once
``issue`` has returned (when the kiosk would print it); the test kills this
process with SIGKILL and starts it again.

Arguments: the ticket file, the log, the moment to issue at (epoch ms) and the
number of tickets to reach. "ready" on stdout once the store is open.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kiosk.numbering import Service, local_day
from kiosk.ticket_store import TicketStore

SERVICE = Service(
    code="ho-tich",
    name_vi="Hộ tịch",
    name_en="Civil status",
    prefix="A",
    daily_limit=9999,
    digits=4,
)


def main(db: str, log: str, now_ms: int, target: int) -> None:
    store = TicketStore(Path(db))
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    done = len(store.tickets(local_day(now_ms), SERVICE.code))
    print("ready", flush=True)
    while done < target:
        ticket = store.issue(SERVICE, now_ms, priority=done % 7 == 0)
        os.write(fd, f"{ticket.number}\n".encode())  # after issue returned: durable by contract
        done = ticket.n


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
