"""Envelopes for tests: what a controller would send, and ways to spoil one."""

from __future__ import annotations

import json
from typing import Any

from protocol.envelope import seal
from protocol.signing import SigningKey, b64url, canonical_json


def sealed(key: SigningKey, msg_type: str, body: dict[str, Any], now_ms: int, **kw: Any) -> bytes:
    return seal(msg_type, body, key, now_ms, **kw)


def resign(doc: dict[str, Any], key: SigningKey) -> bytes:
    """Sign a hand-made envelope (to get past the signature check to a later one)."""
    unsigned = {k: v for k, v in doc.items() if k != "sig"}
    unsigned["sig"] = b64url(key.sign(canonical_json(unsigned)))
    return canonical_json(unsigned)


def tamper(payload: bytes, **changes: Any) -> bytes:
    doc = json.loads(payload)
    doc.update(changes)
    return json.dumps(doc).encode()
