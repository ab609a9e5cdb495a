"""The controller's receipts: which of a device's events are stored (docs/delivery.md).

Sent on ``{root}/dev/{id}/receipt`` (QoS 1, not retained) after each ingest
commit, one message per device per batch, listing event ids: order does not
matter, a duplicate receipt is harmless, and an id the edge no longer holds
is ignored. Only the controller may write the topic (the broker's ACL), so
it is not signed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Annotated

import msgspec
from msgspec import Meta

from protocol.commands import EpochMs
from protocol.uplink import EventId

# 1,000 ids of at most 64 characters stay far below the payload limit (256 KiB)
RECEIPT_MAX_IDS = 1000


class Receipt(msgspec.Struct):
    """Unknown fields allowed: a newer controller may say more."""

    ids: Annotated[list[EventId], Meta(min_length=1, max_length=RECEIPT_MAX_IDS)]
    ts: EpochMs


def receipts_for(ids: Iterable[str], now_ms: int) -> Iterator[bytes]:
    """The receipts of one device's stored events, in as few messages as fit."""
    unique = list(dict.fromkeys(ids))  # ids ingest validated already: no model on this path
    for start in range(0, len(unique), RECEIPT_MAX_IDS):
        chunk = unique[start : start + RECEIPT_MAX_IDS]
        yield json.dumps({"ids": chunk, "ts": now_ms}, separators=(",", ":")).encode()
