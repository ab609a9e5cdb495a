"""Counter officers: PIN hashes, the lockout after wrong PINs, and the sessions of signed-in pages.

The kiosk's pages listen on the office network and the ticket's QR code sends
citizens' phones to them, so nothing an officer can do may be open: a counter
page (``staff``) and a counter's rating device (``rate``) each hold a session
made from an officer's PIN. A PIN is short, so it is stored as a scrypt hash
(standard library: the kiosk carries no argon2) and guessing is slowed by a
lockout per counter that doubles with each round of wrong PINs.

Sessions live in memory: a restart of the kiosk signs everyone out, which is
also what a stolen cookie should come to. The cookie holds a random token;
only its hash is kept. Time is passed in (``now_ms``), so the rules are tested
without waiting.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import re
import secrets
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from kiosk.office import KioskError

PIN = re.compile(r"^[0-9]{4,12}$")
PIN_HASH = r"^scrypt\$[0-9]+\$[0-9]+\$[0-9]+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # about 16 MB and 50-100 ms on a Pi 4
LOCKOUT_MAX_S = 15 * 60
Kind = Literal["staff", "rate"]


class OfficerEntry(Protocol):
    """An officer as the ``[[kiosk.officers]]`` configuration gives one."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def pin_hash(self) -> str: ...

    @property
    def counters(self) -> list[int]: ...


def hash_pin(pin: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` for the configuration (``python -m kiosk.officers``)."""
    if not PIN.match(pin):
        raise ValueError("a PIN is 4 to 12 digits")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_pin_hash(encoded: str) -> None:
    """Raises ValueError, naming the fix, for a hash this module cannot verify."""
    if not re.match(PIN_HASH, encoded):
        raise ValueError("pin_hash must be made by `python -m kiosk.officers` (scrypt$...)")
    _, n, r, p, _salt, _digest = encoded.split("$")
    if int(n) < 2**10 or int(n) & (int(n) - 1) or int(n) > 2**20 or not 1 <= int(r) <= 32:
        raise ValueError("pin_hash has unusable scrypt parameters: make it again")
    if not 1 <= int(p) <= 16:
        raise ValueError("pin_hash has unusable scrypt parameters: make it again")


def verify_pin(pin: str, encoded: str) -> bool:
    _, n, r, p, salt, digest = encoded.split("$")
    expected = base64.b64decode(digest)
    got = hashlib.scrypt(
        pin.encode(),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        maxmem=2**27,
        dklen=len(expected),
    )
    return hmac.compare_digest(got, expected)


class PinGuard:
    """Wrong PINs per counter: after ``attempts`` in a row, a lockout that doubles each round."""

    def __init__(self, attempts: int, lockout_s: float) -> None:
        self.attempts, self.lockout_s = attempts, lockout_s
        self._failures: dict[int, int] = {}
        self._rounds: dict[int, int] = {}
        self._until: dict[int, int] = {}

    def wait_s(self, counter: int, now_ms: int) -> int:
        """Seconds before the next try is heard at ``counter`` (0: now)."""
        left = self._until.get(counter, 0) - now_ms
        return -(-left // 1000) if left > 0 else 0

    def failed(self, counter: int, now_ms: int) -> None:
        self._failures[counter] = self._failures.get(counter, 0) + 1
        if self._failures[counter] >= self.attempts:
            rounds = self._rounds.get(counter, 0)
            seconds = min(self.lockout_s * 2**rounds, LOCKOUT_MAX_S)
            self._until[counter] = now_ms + int(seconds * 1000)
            self._rounds[counter], self._failures[counter] = rounds + 1, 0

    def succeeded(self, counter: int) -> None:
        for table in (self._failures, self._rounds, self._until):
            table.pop(counter, None)


@dataclass(frozen=True)
class Session:
    kind: Kind
    counter: int
    officer: str
    officer_name: str
    csrf: str  # sent back in the X-CSRF-Token header of every change
    expires_ms: int


@dataclass(frozen=True)
class SignedIn:
    token: str  # the cookie's value; only its hash is kept
    session: Session


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Officers:
    """Who may sign in where, and the sessions signed in. Thread-safe (pages run in a pool)."""

    def __init__(
        self,
        officers: Sequence[OfficerEntry],
        counters: int,
        *,
        session_s: float,
        attempts: int,
        lockout_s: float,
    ) -> None:
        self._officers = {o.id: o for o in officers}
        self.counters = counters
        self.session_ms = int(session_s * 1000)
        self.guard = PinGuard(attempts, lockout_s)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()  # the sessions
        # one sign-in at a time: a PIN check is slow on purpose, and guesses sent together
        # must each count before the next is heard; counter pages are not held up meanwhile
        self._signing = threading.Lock()

    def names(self, counter: int) -> list[tuple[str, str]]:
        """(id, name) of the officers who may sign in at ``counter``, for the sign-in page."""
        return [(o.id, o.name) for o in self._officers.values() if self._may(o, counter)]

    @staticmethod
    def _may(officer: OfficerEntry, counter: int) -> bool:
        return not officer.counters or counter in officer.counters

    def sign_in(self, kind: Kind, counter: int, officer_id: str, pin: str, now_ms: int) -> SignedIn:
        if not self._officers:
            raise KioskError(
                "no_officers",
                "Chưa có cán bộ nào được cấu hình trên máy này: kỹ thuật viên cần thêm"
                " [[kiosk.officers]] vào tệp cấu hình",
                "No officer is configured on this kiosk: a technician must add"
                " [[kiosk.officers]] to its configuration",
                503,
            )
        with self._signing:
            wait = self.guard.wait_s(counter, now_ms)
            if wait:
                raise KioskError(
                    "locked",
                    f"Nhập sai mã PIN quá nhiều lần: xin thử lại sau {wait} giây",
                    f"Too many wrong PINs: try again in {wait} seconds",
                    429,
                )
            officer = self._officers.get(officer_id)
            good = (
                officer is not None and bool(PIN.match(pin)) and verify_pin(pin, officer.pin_hash)
            )
            if officer is None or not good:
                self.guard.failed(counter, now_ms)
                raise KioskError(
                    "wrong_pin",
                    "Sai cán bộ hoặc mã PIN: xin nhập lại",
                    "Wrong officer or PIN: please try again",
                    401,
                )
            if not self._may(officer, counter):
                raise KioskError(
                    "not_this_counter",
                    f"Cán bộ {officer.name} không làm việc ở quầy {counter}",
                    f"{officer.name} does not work at counter {counter}",
                    403,
                )
            self.guard.succeeded(counter)
            token = secrets.token_urlsafe(32)
            session = Session(
                kind,
                counter,
                officer.id,
                officer.name,
                secrets.token_urlsafe(24),
                now_ms + self.session_ms,
            )
        with self._lock:
            self._sessions = {
                k: s for k, s in self._sessions.items() if s.expires_ms > now_ms
            }  # forget the expired ones
            self._sessions[_digest(token)] = session
        return SignedIn(token, session)

    def session(self, token: str | None, kind: Kind, counter: int, now_ms: int) -> Session | None:
        """The live session of this cookie, if it is for ``kind`` at ``counter``."""
        if not token or len(token) > 100:
            return None
        with self._lock:
            found = self._sessions.get(_digest(token))
        if found is None or found.expires_ms <= now_ms:
            return None
        if found.kind != kind or found.counter != counter:
            return None
        return found

    def sign_out(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)


def main() -> None:
    """Print the pin_hash of a PIN typed twice, for ``[[kiosk.officers]]``."""
    pin = getpass.getpass("PIN (4-12 chữ số / digits): ")
    if pin != getpass.getpass("PIN một lần nữa / again: "):
        sys.exit("Hai lần nhập không khớp / The two PINs differ")
    try:
        print(hash_pin(pin))
    except ValueError as exc:
        sys.exit(f"Mã PIN gồm 4 đến 12 chữ số / {exc}")


if __name__ == "__main__":
    main()
