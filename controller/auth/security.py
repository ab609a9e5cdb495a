"""Secrets and limits, pure: random tokens, their digests, login CSRF, lockout policy.

Session ids and API tokens carry 256 random bits, so a plain SHA-256 of them
is enough to store (no slow hash needed: there is nothing to guess). The
sign-in form has no session yet, so its CSRF token is the HMAC of a random
cookie under the controller's secret (a signed double submit).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

API_TOKEN_PREFIX = "xaso_"  # noqa: S105 (a marker, not a secret)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two strings (empty never matches)."""
    return bool(a) and hmac.compare_digest(a.encode(), b.encode())


def login_csrf(secret: bytes, nonce: str) -> str:
    """The sign-in form's CSRF token for the nonce in its cookie."""
    return hmac.new(secret, b"login:" + nonce.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class LoginPolicy:
    """How many failures lock a username or an address out, and for how long.

    `known_ms`: how long a success makes its address known for that username
    (a known address is not held back by failures from other addresses).
    """

    max_failures: int = 5
    ip_max_failures: int = 30
    window_ms: int = 15 * 60_000
    lockout_ms: int = 15 * 60_000
    known_ms: int = 90 * 86_400_000

    def locked_until(self, failures_ms: Sequence[int], limit: int) -> int | None:
        """When a lockout ends, given recent failure times, or None if there is none.

        Locked when `limit` failures fall within one window ending at the last
        failure; the lockout runs from that failure. Attempts refused during a
        lockout are not failures (no password was checked), so it does end.
        """
        if not failures_ms:
            return None
        last = max(failures_ms)
        in_window = sum(1 for at in failures_ms if at > last - self.window_ms)
        return last + self.lockout_ms if in_window >= limit else None

    def since(self, now_ms: int) -> int:
        """Failures older than this cannot matter to `locked_until` at `now_ms`."""
        return now_ms - self.window_ms - self.lockout_ms
