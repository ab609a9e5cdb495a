"""Upgrade a database as a replica does at start, all at once with the others: wait for
the go file, upgrade, and print the revisions this process applied as JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from controller.db.engine import upgrade


def main(url: str, ready: str, go: str) -> None:
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.005)
    print(json.dumps(upgrade(url)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
