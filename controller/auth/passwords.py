"""Password hashing with argon2id: the only importer of argon2-cffi.

The cost parameters come from the settings; a hash made with older ones is
replaced at the next successful sign-in (`needs_rehash`), so raising the cost
needs no migration. Unknown usernames are checked against a dummy hash so
that a sign-in takes as long whether the user exists or not.
"""

from __future__ import annotations

from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
MAX_LENGTH = 256  # argon2 hashes anything, but a megabyte "password" is a cheap DoS


class Passwords:
    def __init__(self, time_cost: int = 3, memory_kib: int = 65536, parallelism: int = 4) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, hashed: str, password: str) -> bool:
        try:
            return self._hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, hashed: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(hashed)
        except InvalidHashError:
            return True

    @cached_property
    def _dummy(self) -> str:
        return self._hasher.hash("not a password of anyone")

    def burn(self, password: str) -> None:
        """Spend the time of one verification, for a username that does not exist."""
        self.verify(self._dummy, password)


def password_problem(password: str) -> str | None:
    """The i18n key of what is wrong with a new password, or None."""
    if len(password) < MIN_LENGTH:
        return "password.too_short"
    if len(password) > MAX_LENGTH:
        return "password.too_long"
    return None
